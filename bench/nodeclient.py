"""The second, independent latency client (``bench/latency/client.js``), driven as a fleet.

A Node.js process with its own HTTP client and SSE parser (eventsource-parser)
and no code in common with `bench.loadgen`: it opens a step's connections,
times each event from its body's ``ts``, and computes its own quantiles. The
runner drives it over its standard input and output, one JSON line per answer,
as it drives `bench.fleet.SubscriberFleet` over pipes.
"""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
from typing import IO, Any

from bench.fleet import wait_for
from bench.loadgen import Arrivals, FleetConfig
from bench.tally import FleetResult, TopicTally
from bench.targets import BENCH_DIR, LOGS

NODE_CLIENT_DIR = BENCH_DIR / "latency"
NODE = "node"
"""The ``client`` of a step the Node client measured (`bench.scenarios.Step.client`)."""


def node_client_missing() -> str | None:
    """What the Node client lacks here, or None (``bench/setup`` installs it)."""
    if shutil.which("node") is None:
        return "node"
    if not (NODE_CLIENT_DIR / "node_modules" / "eventsource-parser").is_dir():
        return "its npm packages (npm ci in bench/latency)"
    return None


class NodeClient:
    """``bench/latency/client.js`` over one step's connections (`FleetConfig.topics`),
    dealt over as many Node processes as the load generator would use."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[str] | None = None
        self._log = LOGS / "node-client.log"

    def _argv(self) -> list[str]:
        config = self.config
        argv = [NODE, "client.js", "--driven", "--host", config.host, "--port", str(config.port)]
        argv += ["--path", config.path, "--topics", ",".join(config.topics)]
        argv += ["--connections", str(len(config.topics)), "--processes", str(config.processes)]
        argv += ["--local-address", f"127.{config.source_net}.1.2"]
        if config.ready_marker is not None:
            argv += ["--ready-marker", config.ready_marker.decode()]
        return argv

    def connect(self, timeout: float = 120.0) -> tuple[int, int, list[str]]:
        """Start the client and open every connection: (connected, failed, some errors)."""
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("a") as log:
            self._proc = subprocess.Popen(
                self._argv(),
                cwd=NODE_CLIENT_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        answer = self._answer(timeout)
        return answer["connected"], answer["failed"], answer["errors"]

    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None else []

    def count(self) -> tuple[int, float]:
        """Events received so far, and when the latest arrived (epoch s)."""
        answer = self._ask("count", 10.0)
        return answer["received"], answer["last_event_at"]

    def wait_for(self, expected: int, *, quiet: float, limit: float) -> int:
        """Wait until ``expected`` events arrived, none came for ``quiet`` s, or ``limit`` s."""
        return wait_for(self.count, expected, quiet=quiet, limit=limit)

    def finish(self, arrivals: Arrivals | None = None) -> FleetResult:
        """Close every connection and read what the client saw (``arrivals`` is not used:
        the gateway's own share is measured by the Python subscribers)."""
        try:
            answer = self._ask("finish", 60.0)
        except (OSError, TimeoutError, ValueError) as exc:
            return FleetResult(errors=[f"the Node client failed: {exc!r}"])
        finally:
            self._stop()
        return result_of(answer)

    def _ask(self, command: str, timeout: float) -> Any:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise OSError("the Node client is not running")
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return self._answer(timeout)

    def _answer(self, timeout: float) -> Any:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise OSError("the Node client is not running")
        line = _read_line(proc.stdout, timeout)
        if not line:
            raise OSError(f"the Node client exited ({proc.poll()}); see {self._log}")
        return json.loads(line)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from ``stream``, or TimeoutError after ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"the Node client did not answer within {timeout:.0f} s")
    return stream.readline()


def result_of(answer: dict[str, Any]) -> FleetResult:
    """The Node client's final JSON as a `FleetResult` (its quantiles kept as it gave them)."""
    result = FleetResult(
        connected=answer["connected"],
        failed=answer["failed"],
        disconnects=answer["disconnects"],
        received=answer["received"],
        first_event_at=answer["first_event_at"],
        last_event_at=answer["last_event_at"],
        errors=list(answer["errors"]),
        reported=dict(answer["latency_s"]),
    )
    for topic, counts in answer["per_topic"].items():
        result.topics[topic] = TopicTally(
            counts["connections"], counts["unique"], counts["duplicates"]
        )
    return result
