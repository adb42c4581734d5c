"""Waiting for a state, never for a length of time: each wait fails naming what did not come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def wait_ready(url: str, *, ready: bool = True, timeout: float = 120.0) -> None:
    """Poll a gateway's ``/readyz`` until it says ready (200) or, with ``ready=False``, not (503).

    A transport error counts as no answer: the gateway may still be starting.
    """
    wanted = 200 if ready else 503
    try:
        async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{url}/readyz")).status_code == wanted:
                        return
                await asyncio.sleep(0.05)
    except TimeoutError:
        state = "ready" if ready else "not ready"
        raise AssertionError(f"{url} did not say it was {state} within {timeout} s") from None
