"""Running the gateway: one listener per process, N processes sharing one socket.

On SIGTERM or SIGINT each process stops accepting, ends its event streams with a
spread-out ``retry:`` hint, and closes what is left after the grace period. The
workers report their metrics to a folder the supervisor makes, so that any of
them answers ``/metrics`` for the whole gateway (`hopcast._http.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import FrameType

import uvloop
from pydantic import SecretStr

from hopcast._core.errors import ConfigError, cannot_listen
from hopcast._core.logs import configure_logging
from hopcast._core.settings import Settings
from hopcast._http.app import create_app
from hopcast._http.metrics import Reports, WorkerTally
from hopcast._http.server import StreamServer

log = logging.getLogger("hopcast.supervisor")  # named by layer: module paths are internal

RESTART_PAUSE = 0.5
STOP_MARGIN = 5.0
"""Seconds the supervisor waits for its workers beyond their --shutdown-grace, then kills them."""


def serve_here(
    settings: Settings, sock: socket.socket | None = None, tally: WorkerTally | None = None
) -> None:
    """Serve in this process, on ``sock`` when given (a worker, reporting to ``tally``)
    or on host:port."""
    _warn_about(settings)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings, sock, tally))


async def _serve(settings: Settings, sock: socket.socket | None, tally: WorkerTally | None) -> None:
    app = create_app(settings)
    app.state.tally = tally
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app.router.lifespan_context(app):
        server = StreamServer(app)
        await server.start(sock)
        if server.address is not None:
            log.info("serving on http://%s:%d", *server.address)
        reporting = (
            asyncio.create_task(tally.keep(app.state.hub, app.state.queues)) if tally else None
        )
        await stop.wait()
        log.info("shutting down: ending streams, %.1f s of grace", settings.shutdown_grace)
        server.begin_shutdown()
        app.state.queues.begin_shutdown()
        await server.wait_closed(settings.shutdown_grace)
        if reporting is not None and tally is not None:
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)
            tally.report(
                app.state.hub, app.state.queues
            )  # the last counts, for the worker that may follow


def _warn_about(settings: Settings) -> None:
    if settings.broker[0].startswith("memory:"):
        log.warning("using the embedded memory:// broker: events live in this process only")


def _worker(settings: Settings, sock: socket.socket, reports: Reports, slot: int) -> None:
    configure_logging(settings, worker=True)
    try:
        serve_here(settings, sock, WorkerTally(reports, slot))
    except ConfigError as exc:  # found at start-up (keys that cannot be fetched): said once
        log.error("%s", exc)
        raise SystemExit(1) from None


def run(settings: Settings) -> None:
    """Run the gateway: in this process, or as ``settings.workers`` processes on one port."""
    for note in settings.former_names_used:  # said here: workers get the new names
        log.warning("%s; the former name still works", note)
    if settings.workers == 1:
        serve_here(settings)
        return
    if settings.broker[0].startswith("memory:"):
        log.error("memory:// lives in one process; use RabbitMQ to run several workers")
        raise SystemExit(2)
    if settings.lease_secret is None:  # every worker signs and reads every lease
        settings = settings.model_copy(update={"lease_secret": SecretStr(secrets.token_hex(32))})
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise cannot_listen(settings.host, settings.port, exc) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    Supervisor(settings, sock).run()


class Supervisor:
    """Keeps N worker processes serving one socket; restarts one that dies."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self._settings = settings
        self._sock = sock
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[multiprocessing.process.BaseProcess] = []
        self._stopping = False
        self._reports = Reports(Path(tempfile.mkdtemp(prefix="hopcast-metrics-")), settings.workers)

    def _spawn(self, slot: int) -> multiprocessing.process.BaseProcess:
        proc = self._ctx.Process(
            target=_worker, args=(self._settings, self._sock, self._reports, slot), daemon=False
        )
        proc.start()
        log.info("started worker %s", proc.pid)
        return proc

    def _retire(self, slot: int) -> None:
        try:
            self._reports.retire(slot)
        except OSError as exc:
            log.warning("cannot keep the metrics of worker %d: %s", slot, exc)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> None:
        try:
            self._run()
        finally:
            shutil.rmtree(self._reports.folder, ignore_errors=True)

    def _run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info(
            "listening on %s:%d with %d workers",
            self._settings.host,
            self._settings.port,
            self._settings.workers,
        )
        self._workers = [self._spawn(slot) for slot in range(self._settings.workers)]
        while not self._stopping:
            time.sleep(0.2)
            for slot, proc in enumerate(self._workers):
                if not proc.is_alive() and not self._stopping:
                    log.warning("worker %s exited (%s); starting another", proc.pid, proc.exitcode)
                    self._retire(slot)
                    time.sleep(RESTART_PAUSE)
                    self._workers[slot] = self._spawn(slot)
        for proc in self._workers:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace + STOP_MARGIN
        for proc in self._workers:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
        self._sock.close()
