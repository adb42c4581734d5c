"""A three-node RabbitMQ cluster on this machine, in a temporary directory, torn down completely.

Each node gets its own name (``n1@localhost`` …), AMQP and distribution ports
(found free, away from the machine's own node on 5672/25672/15672), Mnesia and
log directories, pid file, an empty plugin list, a config file of its own (the
machine's ``/etc/rabbitmq`` one would put it on 5672) and an Erlang cookie in
its own ``HOME``. Nodes two and three join the first with ``stop_app`` /
``join_cluster`` / ``start_app`` (design §7). Only processes started here are
ever stopped: each node runs in a session of its own, stopped with
``rabbitmqctl stop`` and, if anything is left, killed by pid among its session's processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.rabbitmq import rabbitmqctl, rabbitmqctl_table

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
"""The scripts themselves: the /usr/sbin wrappers switch to the rabbitmq user and its HOME."""
PORT_RANGE = range(5700, 5900)
BOOT_TIMEOUT = 120.0
DIST_ON_LOOPBACK = "-kernel inet_dist_use_interface {127,0,0,1}"


@dataclass
class Node:
    name: str
    port: int
    dist_port: int
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """AMQP ports p with p and p + 20000 (its distribution port) both free."""
    found = [p for p in PORT_RANGE if p != 5672 and _free(p) and _free(p + 20000)]
    if len(found) < count:
        raise RuntimeError(f"no {count} free port pairs in {PORT_RANGE}")
    return found[:count]


class RabbitCluster:
    """``start()`` boots and joins the nodes; ``teardown()`` stops them and removes nothing else."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        self.home = base / "home"
        self.nodes = [
            Node(f"n{i + 1}@localhost", port, port + 20000, base / f"n{i + 1}")
            for i, port in enumerate(_ports(size))
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node_on_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env |= {
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.home / "log"),
                "RABBITMQ_PID_FILE": str(node.home / "rabbitmq.pid"),
                "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.home / "advanced.config"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": DIST_ON_LOOPBACK,
            }
        return env

    def ctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n node …`` with the cluster's cookie; raises with its stderr."""
        return rabbitmqctl(*args, node=node.name, ctl=CTL, env=self._env(), timeout=timeout)

    def table(self, *args: str, node: Node | None = None) -> list[list[str]]:
        """The rows of a ``rabbitmqctl list_…`` command, asked of ``node`` (by default the last)."""
        target = node if node is not None else self.nodes[-1]
        return rabbitmqctl_table(*args, node=target.name, ctl=CTL, env=self._env())

    def start(self) -> None:
        self.home.mkdir(parents=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        for node in self.nodes:
            node.home.mkdir()
            (node.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\nloopback_users.guest = true\n"
            )
            with (node.home / "server.out").open("wb") as out:
                node.proc = subprocess.Popen(
                    [SERVER],
                    env=self._env(node),
                    cwd=node.home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        for node in self.nodes:
            self.wait_booted(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        for node in self.nodes:
            self.ctl(node, "await_startup", timeout=BOOT_TIMEOUT)

    def wait_booted(self, node: Node) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self.log_tail(node)}")
            try:
                self.ctl(node, "await_startup", timeout=BOOT_TIMEOUT)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def log_tail(self, node: Node, lines: int = 30) -> str:
        out = node.home / "server.out"
        text = out.read_text(errors="replace") if out.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def registered(self) -> list[str]:
        """Those of this cluster's nodes that epmd still lists."""
        out = subprocess.run(
            ["epmd", "-names"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        return [n.name for n in self.nodes if f"name {n.name.split('@')[0]} " in out]

    def teardown(self) -> None:
        """Stop every node started here; kill what does not stop (by its own process group)."""
        for node in reversed(self.nodes):
            proc = node.proc
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctl(node, "stop", timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            # whatever is left of its session: beam.smp and its port programs
            for pid in _session(proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` (one started here with ``start_new_session``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                found.append(int(stat.parent.name))
    return found
