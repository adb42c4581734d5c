"""Make docs/page.png: the live page in headless Chromium, with a few events on it.

Runs a gateway on the embedded broker on a free port, opens ``/?topic=orders.*``,
publishes through `hopcast.Client` and from the page's own form, and takes the
screenshot. ``python scripts/page_screenshot.py [OUTPUT]`` (default docs/page.png).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from hopcast import Client

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def shoot(url: str, output: Path) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        page = await browser.new_page(viewport={"width": 1000, "height": 700})
        await page.goto(f"{url}/?topic=orders.*&event=order-paid&event=shipped")
        await page.wait_for_function("document.getElementById('status').className.includes('live')")
        async with Client(url) as client:
            await client.publish("orders.41", '{"order": 41, "total": 18.5}', event="order-paid")
            await client.publish("orders.41", '{"order": 41, "carrier": "dhl"}', event="shipped")
            await client.publish("orders.42", "a note\nover two lines")
        await page.fill("#pub-topic", "orders.42")
        await page.fill("#pub-event", "order-paid")
        await page.fill("#pub-data", '{"order": 42, "total": 7}')
        await page.click("#publish button")
        await page.wait_for_function("document.querySelectorAll('#rows tr').length >= 4")
        await page.screenshot(path=str(output), full_page=True)
        await browser.close()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "page.png"
    port = free_port()
    env = {**os.environ, "HOPCAST_BROKER": "memory://", "HOPCAST_PORT": str(port)}
    env["HOPCAST_LOG_LEVEL"] = "warning"
    server = subprocess.Popen([sys.executable, "-m", "hopcast", "serve"], env=env)
    try:
        asyncio.run(shoot(f"http://127.0.0.1:{port}", output))
    finally:
        server.terminate()
        server.wait(15)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
