"""SMTP servers (aiosmtpd) on loopback for the mail tests and the alert tests.

Three session-scoped servers, each in its own thread on a free port, each recording every
message it accepted: `smtp_plain` (no TLS, no login), `smtp_starttls` (STARTTLS and AUTH
required; its certificate for 127.0.0.1 is issued at test time by a throwaway CA the client
trusts through `ca_file`) and `smtp_ssl` (implicit TLS, same certificate). Addresses at
REFUSED_DOMAIN are refused at RCPT TO. Tests find their message by Message-ID, so they share
the servers safely.

A test module makes the fixtures visible by assigning them (an import would trip ruff's F811
where tests take them as arguments): `smtp_plain = servers_mail.smtp_plain`, and likewise
`smtp_starttls`, `smtp_ssl` and `smtp_tls_files` (which the TLS servers need).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from resources.connections.mail import SmtpResource

REFUSED_DOMAIN = "refused.test"
SMTP_USERNAME = "stagecoach"
FROM_ADDRESS = "Stagecoach <stagecoach@example.com>"


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path  # what a client trusts (ca_file)
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls_files(folder: Path, label: str = "stagecoach test") -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it; the extensions
    strict X.509 checking asks for, so the client verifies them as it would a real server's."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} CA")).issuer_name(_name(f"{label} CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(_pem_key(key))
    files.server_key.chmod(0o600)
    return files


# ---------------------------------------------------------------- the recording server


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # the DATA as received (after dot-unstuffing)

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)


class RecordingHandler:
    """Accepts every message (recipients at REFUSED_DOMAIN excepted) and keeps it."""

    def __init__(self) -> None:
        self.received: list[ReceivedMail] = []
        self.logins: list[str] = []  # user names that logged in successfully
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.rpartition("@")[2].lower() == REFUSED_DOMAIN:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        with self._lock:
            self.received.append(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos),
                                              bytes(content)))
        return "250 2.0.0 OK: queued"


@dataclass
class SmtpServer:
    host: str
    port: int
    security: Literal["starttls", "ssl", "none"]
    handler: RecordingHandler
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    controller: Controller | None = field(default=None, repr=False)

    def resource(self, **overrides: Any) -> SmtpResource:
        """An SmtpResource for this server (credentials and CA included); overrides win."""
        settings: dict[str, Any] = {
            "host": self.host, "port": self.port, "security": self.security,
            "username": self.username, "password": self.password,
            "ca_file": str(self.ca_file) if self.ca_file else None,
            "from_address": FROM_ADDRESS, "timeout_seconds": 10}
        settings.update(overrides)
        return SmtpResource(**settings)

    def received(self, message_id: str) -> ReceivedMail:
        """The one message this server accepted with that Message-ID."""
        found = [mail for mail in list(self.handler.received)
                 if BytesHeaderParser(policy=email.policy.default)
                 .parsebytes(mail.content)["Message-ID"] == message_id]
        assert len(found) == 1, f"{len(found)} messages with Message-ID {message_id} arrived"
        return found[0]

    def all_received(self) -> list[ReceivedMail]:
        return list(self.handler.received)


def start_controller(handler: RecordingHandler, **smtp_options: Any) -> Controller:
    """An aiosmtpd Controller on a free loopback port (tried three times: another process may
    take the port before the server binds it)."""
    from conftest import free_port  # pytest has loaded it by now (not twice as tests.conftest)

    failure: BaseException | None = None
    for _ in range(3):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                                server_hostname="smtp.stagecoach.test", ready_timeout=10,
                                **smtp_options)
        try:
            controller.start()
            return controller
        except (OSError, TimeoutError, RuntimeError) as failed:
            failure = failed
            with contextlib.suppress(AssertionError, RuntimeError, OSError):
                controller.stop(no_assert=True)
    raise RuntimeError(f"aiosmtpd did not start: {failure}")


def _authenticator(password: str):
    def check(server: Any, session: Any, envelope: Any, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USERNAME.encode()
              and secrets.compare_digest(auth_data.password, password.encode()))
        if ok:
            server.event_handler.logins.append(SMTP_USERNAME)
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd replies 535
    return check


@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("smtp_tls"))


def _serve(handler: RecordingHandler, server: SmtpServer, **options: Any
           ) -> Iterator[SmtpServer]:
    from conftest import need_server

    try:
        controller = start_controller(handler, **options)
    except RuntimeError as failed:
        need_server("aiosmtpd", str(failed))
    server.port, server.controller = controller.port, controller
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def smtp_plain() -> Iterator[SmtpServer]:
    """No TLS, no login: a local relay."""
    handler = RecordingHandler()
    yield from _serve(handler, SmtpServer("127.0.0.1", 0, "none", handler))


@pytest.fixture(scope="session")
def smtp_starttls(smtp_tls_files: TlsFiles) -> Iterator[SmtpServer]:
    """STARTTLS required before anything else, AUTH (PLAIN/LOGIN) required, only over TLS."""
    handler = RecordingHandler()
    password = secrets.token_urlsafe(12)
    server = SmtpServer("127.0.0.1", 0, "starttls", handler, ca_file=smtp_tls_files.ca_cert,
                        username=SMTP_USERNAME, password=password)
    yield from _serve(handler, server, tls_context=smtp_tls_files.server_context(),
                      require_starttls=True, auth_required=True, auth_require_tls=True,
                      authenticator=_authenticator(password))


@pytest.fixture(scope="session")
def smtp_ssl(smtp_tls_files: TlsFiles) -> Iterator[SmtpServer]:
    """Implicit TLS (as on port 465), no login."""
    handler = RecordingHandler()
    server = SmtpServer("127.0.0.1", 0, "ssl", handler, ca_file=smtp_tls_files.ca_cert)
    yield from _serve(handler, server, ssl_context=smtp_tls_files.server_context())
