"""Work queue names: the topic rules, at most 200 bytes, a last word that is not ``dead``."""

from __future__ import annotations

import pytest

from hopcast._core.errors import InvalidTopic
from hopcast._queue.names import amqp_name, parse_queue_name


@pytest.mark.parametrize("name", ["mail", "mail.out", "a:b_c-d.e", "dead.letters", "x" * 64])
def test_good_names(name: str) -> None:
    assert parse_queue_name(name) == name
    assert amqp_name(name) == "hopcast.q." + name


@pytest.mark.parametrize(
    "name", ["", "a..b", "a.*", "a.#", "mail.dead", "dead", "a/b", "é", ".".join(["abcd"] * 41)]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_queue_name(name)
