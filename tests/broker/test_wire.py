"""The AMQP 0-9-1 codec: the fields a stream consumer sends, encoded and read back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hopcast._broker import wire
from hopcast._core.errors import FrameError


def test_encoding_round_trips_the_fields_a_consumer_sends() -> None:
    encoded = wire.table({"x-stream-offset": 7, "n": "first", "on": True, "t": {"a": 1}})
    assert wire.find_long(encoded, 4, len(encoded), b"x-stream-offset") == 7
    assert wire.find_long(encoded, 4, len(encoded), b"missing") is None
    assert wire.encode_ack(1, 5)[-2:] == b"\x01\xce"
    stamped = wire.table({"x-stream-offset": datetime(2026, 1, 1, tzinfo=UTC)})
    assert stamped[4 + 1 + len("x-stream-offset")] == ord("T")
    with pytest.raises(FrameError):
        wire.table({"x": 1.5})
    with pytest.raises(FrameError):
        wire.shortstr("x" * 256)
