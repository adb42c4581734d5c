from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.jwt_kit import public_pem
from tests.support import Names, delete_topology, need_rabbitmq

# A helper module with assertions of its own: report them as a test module's are.
pytest.register_assert_rewrite("tests.integration.hostile_kit")


@pytest.fixture(params=["memory", "amqp"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Run a behavioural test once on the memory broker and once on the real RabbitMQ."""
    kind: str = request.param
    if kind == "amqp":
        need_rabbitmq()
    return kind


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    """A fresh exchange and stream for this test, deleted afterwards."""
    fresh = Names.fresh()
    yield fresh
    await delete_topology(fresh)


@pytest.fixture
def rabbitmq() -> None:
    """Mark a test as needing the real RabbitMQ (fails in CI when it is missing)."""
    need_rabbitmq()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA signing key for this test module."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for this test module's key files."""
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def rsa_pem_file(keydir: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    """The public half of ``rsa_key`` in a PEM file, as ``--jwt-key`` takes it."""
    path = keydir / "rsa.pem"
    path.write_bytes(public_pem(rsa_key))
    return path
