"""The subscriber processes of a step, driven from the (synchronous) benchmark runner.

Several processes cover counts beyond one process's open-files limit; each
binds its own loopback source address (`FleetConfig.source_net`), so that
30,000 connections to one port do not run out of ephemeral ports. Each runs
`bench.loadgen.subscriber_process`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bench.loadgen import Arrivals, FleetConfig, subscriber_process
from bench.tally import FleetResult


class SubscriberFleet:
    """Subscriber processes driven from the (synchronous) benchmark runner.

    >>> fleet = SubscriberFleet(FleetConfig("127.0.0.1", 8080, ("a",) * 100, processes=2))
    """

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._links: list[multiprocessing.connection.Connection] = []

    def connect(self, timeout: float = 120.0) -> tuple[int, int, list[str]]:
        """Start the processes and open every connection: (connected, failed, some errors)."""
        n = max(1, min(self.config.processes, len(self.config.topics)))
        for i in range(n):
            share = self.config.topics[i::n]
            mine = dataclasses.replace(self.config, topics=share)
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(target=subscriber_process, args=(mine, i, child), daemon=True)
            proc.start()
            self._procs.append(proc)
            self._links.append(parent)
        connected = failed = 0
        errors: list[str] = []
        for link in self._links:
            message = self._recv(link, timeout)
            connected += message[1]
            failed += message[2]
            errors.extend(message[3])
        return connected, failed, errors

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def count(self) -> tuple[int, float]:
        """Events received so far over all processes, and when the latest arrived."""
        total, latest = 0, 0.0
        for link in self._links:
            link.send(("count", None))
        for link in self._links:
            received, at = self._recv(link, 10.0)
            total += received
            latest = max(latest, at)
        return total, latest

    def wait_for(self, expected: int, *, quiet: float, limit: float) -> int:
        """Wait until ``expected`` events arrived, none came for ``quiet`` s, or ``limit`` s."""
        return wait_for(self.count, expected, quiet=quiet, limit=limit)

    def finish(self, arrivals: Arrivals | None = None) -> FleetResult:
        """Close every connection, stop the processes, and merge what they saw; with
        ``arrivals`` (a bare stream consumer's), each delivery's lead over it too."""
        result = FleetResult()
        for link in self._links:
            try:
                link.send(("finish", arrivals))
            except OSError:
                continue
        for link in self._links:
            try:
                message = self._recv(link, 60.0)
            except (EOFError, OSError, TimeoutError) as exc:
                result.errors.append(f"a subscriber process failed: {exc!r}")
                continue
            result.merge(message[1])
        self.close()
        return result

    def close(self) -> None:
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._procs.clear()
        self._links.clear()

    @staticmethod
    def _recv(link: multiprocessing.connection.Connection, timeout: float) -> Any:
        if not link.poll(timeout):
            raise TimeoutError(f"a subscriber process did not answer within {timeout:.0f} s")
        return link.recv()


class Fleet(Protocol):
    """What a step drives: subscribers that connect, count what came, and finish."""

    config: FleetConfig

    def connect(self, timeout: float = 120.0) -> tuple[int, int, list[str]]: ...

    def pids(self) -> list[int]: ...

    def wait_for(self, expected: int, *, quiet: float, limit: float) -> int: ...

    def finish(self, arrivals: Arrivals | None = None) -> FleetResult: ...


def wait_for(
    count: Callable[[], tuple[int, float]], expected: int, *, quiet: float, limit: float
) -> int:
    """Poll ``count`` until ``expected`` events arrived, none came for ``quiet`` s, or
    ``limit`` s passed; the events received by then."""
    start = last_change = time.monotonic()
    seen = -1
    while True:
        received, _ = count()
        now = time.monotonic()
        if received >= expected or now - start > limit:
            return received
        if received != seen:
            seen, last_change = received, now
        elif now - last_change > quiet:
            return received
        time.sleep(0.1)


def spread(topics: Sequence[str], connections: int) -> tuple[str, ...]:
    """``connections`` subscriptions dealt round-robin over ``topics``."""
    return tuple(topics[i % len(topics)] for i in range(connections))
