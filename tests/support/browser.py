"""A real headless Chromium, the machine's own (never a downloaded build), for browser tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, closed at the end of the block."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def wait_true(page: Page, expression: str, timeout: float = 30) -> Any:
    """Evaluate ``expression`` in the page until it is truthy; its value."""
    async with asyncio.timeout(timeout):
        while not (value := await page.evaluate(expression)):
            await asyncio.sleep(0.05)
    return value
