"""The servers under test: hopcast, the baselines and the reference, started and measured alike.

Each target is a process group started here and ended here. Its CPU time and
RSS are read from ``/proc`` (through psutil) for the process and all its
descendants, so workers and nginx's worker processes are summed in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from bench.broker import Broker
from hopcast import Settings

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "baselines" / "node"
NCHAN_TEMPLATE = BENCH_DIR / "baselines" / "nchan" / "nginx.conf.template"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
LOGS = BENCH_DIR / "results" / "logs"
"""Each server's output, one file per start, kept for failure reports."""
START_TIMEOUT = 120.0
MAX_FILES = 20_000

HOPCAST = "hopcast"
HOPCAST_W2 = "hopcast-w2"
HOPCAST_UVICORN = "hopcast-uvicorn"
HOPCAST_GRANIAN = "hopcast-granian"
ASGI_SERVERS = (HOPCAST_UVICORN, HOPCAST_GRANIAN)
"""The same gateway as a plain ASGI app, streams included, under another server."""
SEED_NODE = "seed-node"
SEED_PYTHON = "seed-python"
NCHAN = "nchan"
REFERENCE = "reference"
"""The physical reference: the least a Python fan-out server does (`bench.baselines.reference`)."""
REFERENCE_HELD = "reference-held"
"""The same with each connection's writes held hopcast's default ``--max-write-delay``."""
REFERENCE_HOLD_MS = float(Settings.model_fields["max_write_delay"].default) * 1000
BASELINES = (SEED_NODE, SEED_PYTHON, NCHAN, REFERENCE, REFERENCE_HELD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and resident memory of a process tree."""

    cpu: float
    rss: int
    processes: int


def tree_usage(pid: int) -> Usage:
    """Sum CPU time and RSS over ``pid`` and its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return Usage(0.0, 0, 0)
    cpu = 0.0
    rss = 0
    alive = 0
    for proc in procs:
        try:
            times = proc.cpu_times()
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        cpu += times.user + times.system
        alive += 1
    return Usage(cpu, rss, alive)


class Target:
    """A server under test: started in its own process group, stopped by that group."""

    publish_over_http = False
    ready_marker: bytes | None = None
    """Body bytes that say a subscription is live (None: the response headers)."""

    def __init__(self, name: str, broker: Broker, run_id: str) -> None:
        self.name = name
        self.broker = broker
        self.exchange = f"bench.{run_id}.{name}"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.log_path = LOGS / run_id / f"{name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def usage(self) -> Usage:
        return tree_usage(self.pid)

    def start(self) -> Target:
        """Start the server and wait until its ``/readyz`` answers 200."""
        self.start_process()
        self._wait_ready()
        return self

    def start_process(self) -> None:
        """Start the server without waiting for it."""
        argv, env, cwd = self.command()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready within {START_TIMEOUT:.0f} s")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Workers of the group that outlived their parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Target:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Hopcast(Target):
    ready_marker = b"id: "

    def __init__(
        self,
        name: str,
        broker: Broker,
        run_id: str,
        *,
        workers: int = 1,
        stream: str | None = None,
        exchange: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name, broker, run_id)
        self.workers = workers
        if exchange is not None:
            self.exchange = exchange
        self.stream = stream or self.exchange
        self.extra = extra
        broker.forget(self.exchange, self.stream)

    def env(self) -> dict[str, str]:
        # A load test comes from a few loopback addresses: lift the per-address cap, and
        # allow what the open-files limit allows (a caller's own HOPCAST_* values win).
        return {
            "HOPCAST_MAX_CONNECTIONS": os.environ.get("HOPCAST_MAX_CONNECTIONS", "19000"),
            "HOPCAST_MAX_CONNECTIONS_PER_ADDRESS": os.environ.get(
                "HOPCAST_MAX_CONNECTIONS_PER_ADDRESS", "20000"
            ),
        }

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        argv = [
            sys.executable,
            "-m",
            "hopcast",
            "serve",
            "--port",
            str(self.port),
            "--broker",
            self.broker.url,
            "--exchange",
            self.exchange,
            "--stream",
            self.stream,
            "--workers",
            str(self.workers),
            "--log-level",
            "info",
            *self.extra,
        ]
        return argv, self.env(), ROOT

    def metrics(self) -> dict[str, float]:
        """The gateway's Prometheus metrics, by name (one worker's view with several)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


class HopcastAsgi(Hopcast):
    """The gateway's ASGI app (`bench.asgi_app`) under uvicorn or granian, one process,
    uvloop, as when it is mounted in another application."""

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        env = {
            **self.env(),
            "HOPCAST_BROKER": self.broker.url,
            "HOPCAST_EXCHANGE": self.exchange,
            "HOPCAST_STREAM": self.stream,
        }
        if self.name == HOPCAST_GRANIAN:
            server = ["granian", "--interface", "asgi", "--http", "1", "--no-ws"]
            server += ["--backpressure", "20000"]  # concurrent requests; each stream is one
        else:
            server = ["uvicorn", "--http", "httptools", "--no-access-log"]
        server += ["--factory", "--loop", "uvloop", "--log-level", "warning", "--backlog", "2048"]
        server += ["--host", "127.0.0.1", "--port", str(self.port), "bench.asgi_app:app"]
        return [sys.executable, "-m", *server], env, ROOT


class SeedNode(Target):
    def __init__(self, broker: Broker, run_id: str) -> None:
        super().__init__(SEED_NODE, broker, run_id)
        broker.forget(self.exchange)

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        node = shutil.which("node") or "node"
        env = {"PORT": str(self.port), "AMQP_URL": self.broker.url, "EXCHANGE": self.exchange}
        return [node, "server.js"], env, NODE_DIR


class SeedPython(Target):
    def __init__(self, broker: Broker, run_id: str) -> None:
        super().__init__(SEED_PYTHON, broker, run_id)
        broker.forget(self.exchange)

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baselines.seed_python:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ]
        env = {"AMQP_URL": self.broker.url, "EXCHANGE": self.exchange}
        return argv, env, ROOT


class Nchan(Target):
    publish_over_http = True

    def __init__(self, broker: Broker, run_id: str, *, workers: int = 1) -> None:
        super().__init__(NCHAN if workers == 1 else f"{NCHAN}-w{workers}", broker, run_id)
        self.workers = workers

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        values = {
            "module": str(NCHAN_MODULE),
            "workers": str(self.workers),
            "max_files": str(MAX_FILES),
            "max_connections": str(MAX_FILES - 100),
            "dir": str(self._dir),
            "port": str(self.port),
        }
        text = NCHAN_TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        conf = self._dir / "nginx.conf"
        conf.write_text(text)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", str(self._dir), "-c", str(conf)], {}, self._dir


class Reference(Target):
    """The physical reference, fed by HTTP POST as nchan is."""

    publish_over_http = True

    def __init__(self, broker: Broker, run_id: str, *, hold_ms: float = 0.0) -> None:
        super().__init__(REFERENCE_HELD if hold_ms else REFERENCE, broker, run_id)
        self.hold_ms = hold_ms

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        argv = [sys.executable, "-m", "bench.baselines.reference", "--port", str(self.port)]
        return [*argv, "--hold-ms", str(self.hold_ms)], {}, ROOT


def make_target(name: str, broker: Broker, run_id: str) -> Target:
    """The target ``name`` stands for (``--target``), not started yet."""
    if name in ASGI_SERVERS:
        return HopcastAsgi(name, broker, run_id)
    makers: dict[str, Callable[[], Target]] = {
        HOPCAST: lambda: Hopcast(HOPCAST, broker, run_id),
        HOPCAST_W2: lambda: Hopcast(HOPCAST_W2, broker, run_id, workers=2),
        SEED_NODE: lambda: SeedNode(broker, run_id),
        SEED_PYTHON: lambda: SeedPython(broker, run_id),
        NCHAN: lambda: Nchan(broker, run_id),
        REFERENCE: lambda: Reference(broker, run_id),
        REFERENCE_HELD: lambda: Reference(broker, run_id, hold_ms=REFERENCE_HOLD_MS),
        f"{NCHAN}-w2": lambda: Nchan(broker, run_id, workers=2),
    }
    make = makers.get(name)
    if make is None:
        raise ValueError(f"no such target: {name}")
    return make()


def missing_baselines() -> dict[str, str]:
    """Baselines that cannot run here, with what is missing (``bench/setup`` installs it)."""
    missing = {}
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        missing[SEED_NODE] = "node and its packages (npm install in the node baseline)"
    nginx = shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
    if not nginx or not NCHAN_MODULE.exists():
        missing[NCHAN] = "nginx with the nchan module"
    try:
        import aio_pika  # noqa: F401
        import sse_starlette  # noqa: F401
    except ImportError:
        missing[SEED_PYTHON] = "aio-pika and sse-starlette"
    return missing
