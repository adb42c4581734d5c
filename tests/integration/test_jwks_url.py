"""`--jwks https://…`: keys fetched from the issuer, rotated without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from hopcast._core.errors import ConfigError
from hopcast._http.app import create_app
from hopcast._rights import keys
from tests.support.gateways import serve_asgi, serve_in_loop, settings_for
from tests.support.net import free_port
from tests.support.waits import until

A, B = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())


class Issuer:
    """An identity provider's JWKS endpoint, whose answer a test changes."""

    def __init__(self, *kids: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
        self.keys = list(kids)
        self.broken = False
        self.garbage: bytes | None = None
        self.fetches = 0
        self.app = Starlette(routes=[Route("/jwks.json", self._serve)])

    async def _serve(self, request: Request) -> Response:
        self.fetches += 1
        if self.broken:
            return PlainTextResponse("down for maintenance", status_code=503)
        if self.garbage is not None:
            return Response(self.garbage, media_type="application/json")
        jwks = [
            {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "ES256"}
            for kid, key in self.keys
        ]
        return JSONResponse({"keys": jwks})


def token(kid: str, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    claims = {"exp": int(time.time()) + 600, "hopcast": {"publish": ["orders.#"]}}
    signed = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
    return {"Authorization": f"Bearer {signed}"}


@contextlib.asynccontextmanager
async def gateway(issuer: Issuer, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_asgi(issuer.app) as issuer_url:
        settings = settings_for("memory", auth="jwt", jwks=f"{issuer_url}/jwks.json", **overrides)
        async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
            yield http


async def status(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await http.post("/events/orders.1", content=b"x", headers=headers)).status_code


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "JWKS_MIN_INTERVAL", 0.2)
    monkeypatch.setattr(keys, "FIRST_FETCH_PAUSE", 0.05)


async def test_a_new_kid_is_fetched_when_a_token_names_it(caplog: pytest.LogCaptureFixture) -> None:
    issuer = Issuer(("a", A))
    async with gateway(issuer, jwks_refresh=3600) as http:
        assert await status(http, token("a", A)) == 202
        assert await status(http, token("b", B)) == 401  # not published yet
        issuer.keys.append(("b", B))  # the issuer rotates: b is published beside a
        await _until_status(http, token("b", B), 202)  # each 401 sent the gateway to look
        issuer.keys = [("b", B)]  # a is retired; a token with an unknown kid sends it looking
        assert await status(http, token("zz", A)) == 401
        await _until_status(http, token("a", A), 401)
        assert await status(http, token("b", B)) == 202
        issuer.broken = True  # a failed fetch keeps the keys in use
        with caplog.at_level(logging.WARNING, logger="hopcast.rights"):
            await status(http, token("zz", A))
            await until(lambda: "answered 503" in caplog.text, "a failed fetch is logged")
        assert await status(http, token("b", B)) == 202
        keys.JWKS_MIN_INTERVAL = 3600  # (the fixture puts it back) and made-up kids pour in:
        before = issuer.fetches
        for n in range(20):
            assert await status(http, token(f"made-up-{n}", A)) == 401
        assert issuer.fetches - before <= 1  # they do not make it fetch each time


async def test_keys_are_fetched_again_every_refresh_period() -> None:
    issuer = Issuer(("a", A))
    async with gateway(issuer, jwks_refresh=0.3) as http:
        assert await status(http, token("a", A)) == 202
        issuer.keys = [("b", B)]  # no token names b: only the period brings it in
        await _until_status(http, token("a", A), 401)
        assert await status(http, token("b", B)) == 202


PRIVATE = {**ECAlgorithm.to_jwk(A, as_dict=True), "kid": "a"}


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (None, ["cannot fetch it"]),  # nothing listens there
        (503, ["answered 503"]),
        (b"<html>sign in</html>", ["not JSON"]),
        (b'{"keys": "none"}', ["not a JWKS"]),
        (json.dumps({"keys": [PRIVATE]}).encode(), ["private key"]),
        (b'{"keys": [], "pad": "' + b"x" * 2_000_000 + b'"}', ["larger than"]),
    ],
)
async def test_no_keys_at_start_up_is_a_clear_error(
    answer: int | bytes | None, words: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    issuer = Issuer(("a", A))
    issuer.broken = answer == 503
    issuer.garbage = answer if isinstance(answer, bytes) else None
    caplog.set_level(logging.WARNING, logger="hopcast.rights")
    async with serve_asgi(issuer.app) as issuer_url:
        url = f"http://127.0.0.1:{free_port()}/jwks.json" if answer is None else issuer_url
        url += "" if answer is None else "/jwks.json"
        app = create_app(settings_for("memory", auth="jwt", jwks=url))
        with pytest.raises(ConfigError) as error:
            async with app.router.lifespan_context(app):
                pass
        for word in ["--jwks", url, *words]:
            assert word in str(error.value)
        assert issuer.fetches == (0 if answer is None else keys.FIRST_FETCH_TRIES)
    assert "plain http, so anyone on the way could swap the keys" in caplog.text


async def test_garbage_later_keeps_the_keys_in_use(caplog: pytest.LogCaptureFixture) -> None:
    issuer = Issuer(("a", A))
    async with gateway(issuer, jwks_refresh=3600) as http:
        for garbage in [b"<html>", json.dumps({"keys": [PRIVATE]}).encode()]:
            issuer.garbage = garbage
            with caplog.at_level(logging.WARNING, logger="hopcast.rights"):
                caplog.clear()
                assert await status(http, token("zz", A)) == 401  # sends it looking
                await until(lambda: "keeping the 1 key(s) in use" in caplog.text, "logged")
            assert await status(http, token("a", A)) == 202


@pytest.mark.slow
def test_serve_says_it_cannot_fetch_the_keys_and_stops() -> None:
    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    result = subprocess.run(
        [sys.executable, "-m", "hopcast", "serve", "--broker", "memory://", "--auth", "jwt"],
        env={"HOPCAST_JWKS": url, "HOPCAST_PORT": str(free_port()), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    assert f"--jwks: '{url}': cannot fetch it" in result.stderr
    assert "Traceback" not in result.stderr


async def _until_status(http: httpx.AsyncClient, headers: dict[str, str], wanted: int) -> None:
    async with asyncio.timeout(30):
        while await status(http, headers) != wanted:
            await asyncio.sleep(0.05)
