"""Debian's nginx with the documented deploy/nginx.conf, run by a test in front of its gateways.

The documented file goes in nginx's ``http`` block as it is, with only its
ports and paths substituted; the main configuration around it (what Debian's
/etc/nginx/nginx.conf holds) keeps nginx in the foreground with its pid file,
logs and temporary files in the test's folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import ipaddress
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.documented import DEPLOY, substitute
from tests.support.net import free_port

DOCUMENTED = DEPLOY / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN = """\
daemon off;
user {user};
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/hopcast.conf;
}}
"""
"""The main configuration around the documented file (Debian's nginx.conf, in short); its
workers run as the test's own user, who can reach the test's folder."""


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, in PEM files."""

    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this certificate only."""
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed(folder: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    found = Certificate(folder / "cert.pem", folder / "key.pem")
    found.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return found


@dataclass
class Nginx:
    """nginx in front of the gateways: TLS (HTTP/2) on ``port``, plain HTTP on ``plain_port``."""

    folder: Path
    port: int
    plain_port: int
    certificate: Certificate
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, source: str = "127.0.0.1") -> httpx.AsyncClient:
        """An HTTPS client of this nginx that trusts its certificate, from a source address."""
        return httpx.AsyncClient(base_url=self.url, transport=self.transport(source), timeout=30)

    def transport(self, source: str = "127.0.0.1") -> httpx.AsyncHTTPTransport:
        """HTTPS to this nginx, trusting its certificate, from a source address (127.x.x.x)."""
        return httpx.AsyncHTTPTransport(verify=self.certificate.context(), local_address=source)

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")


@contextlib.contextmanager
def nginx_in_front(folder: Path, gateway_ports: Sequence[int]) -> Iterator[Nginx]:
    """Debian's nginx with deploy/nginx.conf in front of two gateways; stopped at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    certificate = self_signed(folder)
    port, plain_port = free_port(), free_port()
    first, second = gateway_ports
    site = substitute(
        DOCUMENTED,
        {
            "server 127.0.0.1:8080;": f"server 127.0.0.1:{first};",
            "server 127.0.0.1:8081;": f"server 127.0.0.1:{second};",
            "listen 80;": f"listen 127.0.0.1:{plain_port};",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{port} ssl http2;",
            "/etc/ssl/hopcast/fullchain.pem": str(certificate.cert),
            "/etc/ssl/hopcast/privkey.pem": str(certificate.key),
        },
    )
    (folder / "hopcast.conf").write_text(site)
    conf = folder / "nginx.conf"
    conf.write_text(MAIN.format(dir=folder, user=getpass.getuser()))
    command = [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    with (folder / "nginx.out").open("wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    nginx = Nginx(folder, port, plain_port, certificate, proc)
    try:
        yield nginx
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (nginx's graceful stop) would wait for open streams: SIGTERM stops it at once."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
