"""A private redis-server that speaks only TLS, with a CA and certificates made for this run.

    with tls_redis(tmp_path) as server:          # server.url == "rediss://127.0.0.1:PORT"
        settings = make_settings(..., redis_url=f"{server.url}/0",
                                 redis_tls_ca_file=str(server.ca_file))

The server's certificate names 127.0.0.1 (an IP SAN) and `localhost`; with
`require_client_cert` the server refuses clients without a certificate from the
same CA (mutual TLS). `impostor_ca` makes a second, unrelated CA.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import free_port, wait_for_port

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Authority:
    """A CA: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def new_authority(name: str) -> Authority:
    """A fresh CA named `name`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def issue(authority: Authority, name: str, directory: Path, *, server: bool) -> tuple[Path, Path]:
    """A certificate for `name` signed by `authority`; returns (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(authority.key, hashes.SHA256())
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@dataclass(frozen=True)
class TlsRedis:
    """A running TLS-only redis-server and the files a client needs."""

    port: int
    ca_file: Path
    client_cert: Path
    client_key: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}"


@contextlib.contextmanager
def tls_redis(
    directory: Path, *, require_client_cert: bool = False, authority: Authority | None = None
) -> Iterator[TlsRedis]:
    """Run a redis-server with TLS on a free port (no plain port) until the block ends."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ca = authority or new_authority("envcat-test-ca")
    ca_file = ca.write(directory / "ca.crt")
    server_cert, server_key = issue(ca, "redis-server", directory, server=True)
    client_cert, client_key = issue(ca, "envcat-client", directory, server=False)
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(server_cert),
            "--tls-key-file", str(server_key),
            "--tls-ca-cert-file", str(ca_file),
            "--tls-auth-clients", "yes" if require_client_cert else "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield TlsRedis(port, ca_file, client_cert, client_key)
    finally:
        process.terminate()
        process.wait(timeout=10)
