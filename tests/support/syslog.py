"""A real syslog collector on loopback: RFC 5425 octet-counted frames over TCP, with or without TLS.

It reads each connection to its end, keeps every message, then closes its side, as
rsyslog's imtcp does; `stop()` takes it down (the port refuses connections) and
`start()` brings it back on the same port. `drop_after` makes the next connection
die mid-batch (reset after that many bytes, nothing kept), a collector crashing.
The TLS certificate is made per run by a private CA (`ca_pem` is what a sink trusts).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port

# <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
    rb"(?P<sd>\[[^ \]]+(?: [a-z_]+=\"(?:[^\"\\\]]|\\.)*\")*\]) \xef\xbb\xbf(?P<msg>.*)$",
    re.S,
)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass(frozen=True)
class Certificates:
    """A private CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""

    ca_pem: str
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path, common: str = "EnvCat test CA") -> Certificates:
    """A new CA (named `common`) and a server certificate it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return Certificates(ca_pem, cert_file, key_file)


def parse_frames(data: bytes) -> list[bytes]:
    """Split octet-counted frames (`LEN SP MSG`); raise ValueError on a malformed stream."""
    messages, at = [], 0
    while at < len(data):
        space = data.index(b" ", at)
        length = int(data[at:space])
        start = space + 1
        if start + length > len(data):
            raise ValueError("a frame is cut short")
        messages.append(data[start : start + length])
        at = start + length
    return messages


@dataclass
class SyslogCollector:
    """Accepts connections on 127.0.0.1:`port`; `messages` holds every complete message."""

    tls: Certificates | None = None
    port: int = field(default_factory=free_port)
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    drop_after: int | None = None
    _server: socket.socket | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        self._thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _accept(self, server: socket.socket) -> None:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        while True:
            try:
                raw, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw, context), daemon=True).start()

    def _serve(self, raw: socket.socket, context: ssl.SSLContext | None) -> None:
        with self._lock:
            self.connections += 1
            drop, self.drop_after = self.drop_after, None
        raw.settimeout(10)
        connection: socket.socket = raw
        try:
            if context is not None:
                connection = context.wrap_socket(raw, server_side=True)
            data = b""
            while True:
                if drop is not None and len(data) >= drop:
                    # A crash mid-batch: reset the connection, keep nothing of it.
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                try:
                    chunk = connection.recv(65536)
                except ssl.SSLZeroReturnError:  # the client's close_notify
                    chunk = b""
                if not chunk:
                    break
                data += chunk
            if isinstance(connection, ssl.SSLSocket):
                connection = connection.unwrap()
            with self._lock:
                self.messages.extend(parse_frames(data))
        except (OSError, ValueError):
            return
        finally:
            connection.close()
            raw.close()


@contextlib.contextmanager
def collector(tls: bool = True) -> Iterator[SyslogCollector]:
    """A running collector (TLS with a fresh CA unless `tls=False`), stopped afterwards."""
    with tempfile.TemporaryDirectory() as directory:
        certificates = make_certificates(Path(directory)) if tls else None
        running = SyslogCollector(certificates)
        running.start()
        try:
            yield running
        finally:
            running.stop()
