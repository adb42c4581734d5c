from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.rights.jwt_kit import public_pem


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
