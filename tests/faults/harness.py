"""The gateway as a child process, and the small tools the fault scenarios share.

Every scenario follows one script: subscribers (`tests.faults.subscribers`) on
several patterns, fresh and resuming, read through a gateway while a publisher
(`tests.faults.sequence`) sends a numbered sequence; a fault is injected; the
subscribers must then hold exactly what the stream holds for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support import AMQP_URL, free_port


class GatewayProcess:
    """``python -m hopcast serve`` in a child process, its log in a file for failure reports."""

    def __init__(
        self,
        env: Mapping[str, str],
        *args: str,
        log_dir: Path,
        label: str = "gateway",
        port: int | None = None,
    ) -> None:
        self.label = label
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{label}-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("HOPCAST_")}
        full_env = {**base, "HOPCAST_HOST": "127.0.0.1", **env, "HOPCAST_PORT": str(self.port)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hopcast", "serve", *args],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return repr(exc)
        return "\n".join(text.splitlines()[-lines:])

    def workers(self) -> list[int]:
        """The worker processes of a ``--workers N`` supervisor (spawned by multiprocessing)."""
        found = []
        for pid in _children(self.pid):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return sorted(found)


@contextlib.contextmanager
def gateway(
    env: Mapping[str, str], *args: str, log_dir: Path, label: str = "gateway"
) -> Iterator[GatewayProcess]:
    child = GatewayProcess(env, *args, log_dir=log_dir, label=label)
    try:
        yield child
    finally:
        child.stop()


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def client_ports(pid: int, server_port: int) -> set[int]:
    """The client ports of the established connections that process ``pid`` serves on a port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if (
                    state == "01"
                    and inode in inodes
                    and int(local.rsplit(":", 1)[1], 16) == (server_port)
                ):
                    ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


async def wait_status(url: str, status: int, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers ``status`` (a transport error counts as no answer)."""
    async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == status:
                    return
            await asyncio.sleep(0.1)


def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def amqp_host_port(url: str = AMQP_URL) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), parts.port or 5672


@dataclass
class Timings:
    """Phase durations of a scenario, printed for the report (``pytest -s`` or ``-rA``)."""

    marks: dict[str, float] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.began, 2)
        print(f"  {self.marks[name]:7.2f}s {name}")  # shown with -s, and for a failing test

    def show(self, title: str) -> None:
        print(f"{title}: " + ", ".join(f"{k} at {v}s" for k, v in self.marks.items()))
