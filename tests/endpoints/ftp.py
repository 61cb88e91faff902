"""FTP and FTPS endpoints: pyftpdlib servers on loopback, each in a background thread.

The servers serve temporary folders on this machine, so what arrived is read from the folder
itself: the file system, not ftplib, is the witness. The handlers record every command and how
each data channel was protected, for the tests that count listings or check PROT P.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from resources.connections.ftp import FtpResource
from tests.endpoints import Endpoint
from tests.endpoints.kinds import local_endpoint_parts, outside_of

FULL_PERMS = "elradfmwMT"


@dataclass
class FtpServer:
    host: str
    port: int
    username: str
    password: str
    root: Path  # the user's home folder: "/" on the server
    ca_file: str | None  # the FTPS server's self-signed certificate (None: plain FTP)
    commands: list[str] = field(default_factory=list)  # every command received, in order
    data_channels: list[str] = field(default_factory=list)  # "P" (PROT P) or "C" per channel
    secured_data: list[bool] = field(default_factory=list)  # one True per TLS data handshake

    def settings(self, base_path: str = ".", **overrides: Any) -> dict[str, Any]:
        """FtpResource settings for this server (JSON-able, to rebuild it in a child process)."""
        settings: dict[str, Any] = {"host": self.host, "port": self.port,
                                    "username": self.username, "password": self.password,
                                    "base_path": base_path, "timeout_seconds": 10}
        if self.ca_file:
            settings |= {"tls": True, "ca_file": self.ca_file}
        return settings | overrides


def self_signed_certificate(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """(certificate, key) files for 127.0.0.1, valid for a day; the certificate is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@contextmanager
def serve_ftp(root: Path, certificate: tuple[Path, Path] | None = None,
              perm: str = FULL_PERMS, without: tuple[str, ...] = ()) -> Iterator[FtpServer]:
    """A pyftpdlib server on 127.0.0.1 (a port the OS picks: no race) until the block ends.

    With `certificate` it is FTPS that requires TLS on both channels; `without` removes
    commands (e.g. MLSD, to test the LIST fallback). Passive data ports are bound to the control
    connection's address, so they stay on loopback too.
    """
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

    username, password = "stagecoach", secrets.token_urlsafe(16)
    authorizer = DummyAuthorizer()
    authorizer.add_user(username, password, str(root), perm=perm)
    record = FtpServer("127.0.0.1", 0, username, password, root,
                       str(certificate[0]) if certificate else None)
    base = TLS_FTPHandler if certificate else FTPHandler

    class DataHandler(base.dtp_handler):
        def __init__(self, sock: Any, cmd_channel: Any) -> None:
            record.data_channels.append("P" if getattr(cmd_channel, "_prot", False) else "C")
            super().__init__(sock, cmd_channel)

        def handle_ssl_established(self) -> None:
            record.secured_data.append(True)

    class Handler(base):
        dtp_handler = DataHandler
        proto_cmds = {k: v for k, v in base.proto_cmds.items() if k not in without}
        auth_failed_timeout = 0.05  # pyftpdlib waits 3 s before answering a wrong password
        banner = "stagecoach test server"

        def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
            record.commands.append(cmd)
            super().pre_process_command(line, cmd, arg)

    Handler.authorizer = authorizer
    if certificate:
        Handler.certfile, Handler.keyfile = str(certificate[0]), str(certificate[1])
        Handler.tls_control_required = True
        Handler.tls_data_required = True
    # Unless its logger has a handler, pyftpdlib's first loop configures logging itself: a
    # stderr handler at INFO, and process-wide switches (logging.logThreads, _srcfile) turned off.
    quiet = logging.getLogger("pyftpdlib")
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    quiet.setLevel(logging.WARNING)
    server = FTPServer(("127.0.0.1", 0), Handler, ioloop=IOLoop())  # its own loop, not the global
    record.port = server.address[1]
    stop = threading.Event()

    def serve() -> None:
        try:
            while not stop.is_set():
                server.ioloop.loop(timeout=0.05, blocking=False)  # serve_forever logs each call
        finally:
            server.close_all()  # in the serving thread: pyftpdlib's loop is not thread-safe

    thread = threading.Thread(target=serve, name=f"ftp-server-{record.port}", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join(10)


def _need_pyftpdlib() -> None:
    try:
        import OpenSSL  # noqa: F401
        import pyftpdlib  # noqa: F401
    except ImportError as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"pyftpdlib and pyopenssl are required in CI: {missing}", pytrace=False)
        pytest.skip(f"pyftpdlib or pyopenssl is not installed: {missing}")


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    _need_pyftpdlib()
    with serve_ftp(tmp_path_factory.mktemp("ftp_root")) as server:
        yield server


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    _need_pyftpdlib()
    certificate = self_signed_certificate(tmp_path_factory.mktemp("ftps_tls"))
    with serve_ftp(tmp_path_factory.mktemp("ftps_root"), certificate) as server:
        yield server


def _endpoint(kind: str, server: FtpServer) -> Endpoint:
    """A fresh folder under the server's root as base_path (relative to the login folder)."""
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    base = server.root / name
    base.mkdir()
    settings = server.settings(base_path=name)
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    bad = FtpResource(**{**settings, "password": wrong})
    return Endpoint(kind, FtpResource(**settings), *local_endpoint_parts(base), bad_login=bad,
                    rebuild=("resources.connections.ftp:FtpResource", settings), secret=wrong,
                    outside=outside_of(base, server.root))


@pytest.fixture
def ftp_files(ftp_server: FtpServer) -> Endpoint:
    return _endpoint("ftp", ftp_server)


@pytest.fixture
def ftps_files(ftps_server: FtpServer) -> Endpoint:
    return _endpoint("ftps", ftps_server)
