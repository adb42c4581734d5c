"""The gateway in a child process, as ``hopcast serve`` runs, and what /proc tells of it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.net import free_port


class ChildGateway:
    """``python -m hopcast serve`` in a child process; its output in a log, for failure reports.

    It sees none of this process's ``HOPCAST_*`` variables, only ``env``; the log is
    in ``log_dir`` (kept, for a look after a failure) or in a folder of its own.
    Always stopped by the test (`close`, or `child_gateway`).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *args: str,
        port: int | None = None,
        log_dir: Path | None = None,
        label: str = "gateway",
    ) -> None:
        self.label = label
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="hopcast-test-")
            log_dir = Path(self._own_dir.name)
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
        """SIGTERM, as an operator stops it; SIGKILL if it does not stop in ``timeout`` s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def close(self) -> None:
        """Stop it, and remove its log unless it lives in a folder the test gave."""
        self.stop()
        if self._own_dir is not None:
            self._own_dir.cleanup()

    def output(self) -> str:
        """Everything it wrote (its log lines), once stopped."""
        self.stop()
        return self.log_path.read_text(errors="replace")

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
def child_gateway(
    env: Mapping[str, str], *args: str, log_dir: Path | None = None, label: str = "gateway"
) -> Iterator[ChildGateway]:
    """A `ChildGateway` for the block; stopped at its end, whatever happens."""
    child = ChildGateway(env, *args, log_dir=log_dir, label=label)
    try:
        yield child
    finally:
        child.close()


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
