"""Ports and raw sockets on the loopback interface."""

from __future__ import annotations

import random
import socket

PORTS_FROM = 10_000
"""Test gateways listen on ports from here up to the ephemeral range."""
_RANDOM = random.SystemRandom()  # not the one Hypothesis seeds


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range.

    A port the kernel handed out (bind to 0) is one it may hand out again, as
    the local end of any outgoing connection, in the moment between a gateway
    stopping and starting again on it; below the range, only a listener takes it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(1000):
        port = _RANDOM.randrange(PORTS_FROM, max(PORTS_FROM + 1000, ephemeral))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {PORTS_FROM} and {ephemeral}")


def bound_socket() -> socket.socket:
    """A listening socket on a port the kernel picks (for a server in this process)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` as it is, in one write; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received
