"""Lease tokens: which delivery a worker holds, signed so that no one can make one up.

A token names this gateway's start (``instance``), the channel and delivery tag
that hold the task, and the lease's ``generation`` (a number no other lease of
this process had), and is signed with HMAC-SHA256 over the queue's name too:
one queue's lease does not verify on another. Only the latest lease of a task
is valid: a redelivered task has another channel or tag and a new generation,
so a late ack of the older lease finds nothing (409), never settles twice.

>>> signer = LeaseSigner(b"k" * 32)
>>> ref = LeaseRef(signer.instance, channel=3, tag=7, generation=1)
>>> signer.read("mail", signer.sign("mail", ref)) == ref
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass

from hopcast._core.errors import InvalidLease

_PAYLOAD = struct.Struct(">8sQQQ")
_SIGNATURE_BYTES = 16
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{22}")
TOKEN_CHARS = 66
"""The length of every lease token."""


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """What a lease token names."""

    instance: bytes
    channel: int
    tag: int
    generation: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LeaseSigner:
    """Signs and reads lease tokens with one key (``--lease-secret``, or random per start)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret if secret else os.urandom(32)
        self.instance = os.urandom(8)
        """This gateway's start: a token of an earlier start names a lease that is gone."""

    def _signature(self, queue: str, payload: bytes) -> bytes:
        mac = hmac.new(self._key, queue.encode() + b"\x00" + payload, hashlib.sha256)
        return mac.digest()[:_SIGNATURE_BYTES]

    def sign(self, queue: str, ref: LeaseRef) -> str:
        payload = _PAYLOAD.pack(ref.instance, ref.channel, ref.tag, ref.generation)
        return _b64(payload) + "." + _b64(self._signature(queue, payload))

    def read(self, queue: str, token: object) -> LeaseRef:
        """The lease ``token`` names; `InvalidLease` unless this gateway signed it for ``queue``."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise InvalidLease(f"not a lease token: {str(token)[:80]!r}")
        head, signature = token.split(".")
        try:
            payload, given = _unb64(head), _unb64(signature)
        except (binascii.Error, ValueError):
            raise InvalidLease(f"not a lease token: {token!r}") from None
        if (_b64(payload), _b64(given)) != (head, signature):  # one spelling per token
            raise InvalidLease(f"not a lease token: {token!r}")
        if len(payload) != _PAYLOAD.size or not hmac.compare_digest(
            given, self._signature(queue, payload)
        ):
            raise InvalidLease(f"not a lease of queue {queue!r}: {token!r}")
        instance, channel, tag, generation = _PAYLOAD.unpack(payload)
        return LeaseRef(instance, channel, tag, generation)
