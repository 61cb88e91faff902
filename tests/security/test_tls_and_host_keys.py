"""Servers are who they say they are: SFTP refuses an unknown or changed host key unless the spec
pins it; FTPS, SMTP and HTTPS refuse a certificate the system store does not trust, and accept it
only when the spec names its CA file or explicitly opts out (`verify_tls: false`).

Connections are built from spec models through orchestration.connections, so the spec keys
themselves are tested, against the real loopback servers of tests/conftest.py.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paramiko
import pytest

from assets import spec
from orchestration.connections import resource_for
from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.channels.webhook_channel import WebhookChannel
from resources.connections.files import TransferError
from resources.connections.mail import MailError
from tests import servers_mail
from tests.endpoints.ftp import FtpServer
from tests.servers_mail import SmtpServer, TlsFiles, make_tls_files

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

smtp_tls_files = servers_mail.smtp_tls_files
smtp_starttls = servers_mail.smtp_starttls
smtp_ssl = servers_mail.smtp_ssl


# ---------------------------------------------------------------- SFTP host keys


def host_key_line(sshd) -> str:
    return " ".join((sshd.config_dir / "hostkey.pub").read_text().split()[:2])


def fingerprint(key_line: str) -> str:
    key_type, data = key_line.split()[:2]
    key = paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
    return key.fingerprint


def impostor_key(folder: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "impostor")],
                   check=True, capture_output=True, timeout=30)
    return " ".join((folder / "impostor.pub").read_text().split()[:2])


def sftp_from_spec(sshd, **keys: Any):
    settings = {"kind": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.username,
                "private_key_path": str(sshd.private_key_path), "base_path": str(sshd.root),
                "timeout_seconds": 10, **keys}
    return resource_for(spec.SftpConnection.model_validate(settings))


def test_an_unknown_host_key_is_refused_naming_its_fingerprint(sshd, tmp_path: Path):
    (tmp_path / "known_hosts").write_text("")
    conn = sftp_from_spec(sshd, known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(TransferError) as refused:
        conn.download("anything.csv", tmp_path / "got.csv")
    message = str(refused.value)
    assert f"sftp {sshd.username}@127.0.0.1:{sshd.port} download" in message
    assert f"host key ssh-ed25519 {fingerprint(host_key_line(sshd))} is unknown" in message
    assert f"known_hosts {tmp_path / 'known_hosts'}" in message
    assert "pin it with `host_key`" in message
    assert not (tmp_path / "got.csv").exists()


def test_a_changed_host_key_is_refused_with_both_fingerprints(sshd, tmp_path: Path):
    impostor = impostor_key(tmp_path)
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    conn = sftp_from_spec(sshd, known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(TransferError) as refused:
        conn.list_files("*.csv")
    message = str(refused.value)
    assert "the server's host key CHANGED" in message
    assert f"it offered ssh-ed25519 {fingerprint(host_key_line(sshd))}" in message
    assert f"known_hosts {tmp_path / 'known_hosts'} holds ssh-ed25519 {fingerprint(impostor)}" \
        in message
    assert "someone may be between Stagecoach and the server" in message


def test_a_pinned_host_key_is_the_only_one_accepted(sshd, tmp_path: Path):
    folder = sshd.root / f"pin-{secrets.token_hex(4)}"
    folder.mkdir()
    (folder / "a.csv").write_text("id\n1\n")
    # The pin alone is enough: known_hosts (here a file that does not exist) is not read.
    pinned = sftp_from_spec(sshd, host_key=host_key_line(sshd),
                            known_hosts=str(tmp_path / "absent"))
    assert [f.path for f in pinned.list_files(f"{folder.name}/*.csv")] == [f"{folder.name}/a.csv"]

    wrong = sftp_from_spec(sshd, host_key=impostor_key(tmp_path))
    with pytest.raises(TransferError, match=r"host key CHANGED: .* but the pinned `host_key` "
                                            r"holds ssh-ed25519 SHA256:"):
        wrong.list_files(f"{folder.name}/*.csv")


def test_a_malformed_pin_is_named(sshd):
    conn = sftp_from_spec(sshd, host_key="ssh-ed25519 not-base64!")
    with pytest.raises(TransferError, match=r"`host_key` is not a public key line"):
        conn.list_files("*.csv")


def known_hosts_file(folder: Path, *lines: str) -> str:
    (folder / "known_hosts").write_text("".join(f"{line}\n" for line in lines))
    return str(folder / "known_hosts")


@pytest.mark.parametrize("also_trusted", ["the same key", "another key"])
def test_a_revoked_host_key_is_refused_as_revoked(sshd, tmp_path: Path, also_trusted: str):
    """OpenSSH's `@revoked` marker wins over any plain line, whatever the host has listed."""
    entry, real = f"[127.0.0.1]:{sshd.port}", host_key_line(sshd)
    listed = real if also_trusted == "the same key" else impostor_key(tmp_path)
    known = known_hosts_file(tmp_path, "# keys", f"{entry} {listed}", f"@revoked * {real}")
    with pytest.raises(TransferError) as refused:
        sftp_from_spec(sshd, known_hosts=known).list_files("*.csv")
    message = str(refused.value)
    assert f"host key ssh-ed25519 {fingerprint(real)} is REVOKED (@revoked on line 3 of " \
           f"known_hosts {known})" in message
    assert "ask the server's owner for its new key's fingerprint" in message
    assert "padding" not in message


def test_marker_and_broken_lines_do_not_break_other_hosts(sshd, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture):
    """A file with @revoked and @cert-authority lines (paramiko read them as keys that do not
    decode: "Incorrect padding" for every connection) and a broken line still serves the
    plain lines of the other hosts."""
    folder = sshd.root / f"markers-{secrets.token_hex(4)}"
    folder.mkdir()
    (folder / "a.csv").write_text("id\n1\n")
    other = impostor_key(tmp_path)
    known = known_hosts_file(
        tmp_path, f"@revoked * {other}", f"@cert-authority *.example.com {other}",
        "partner.example.com ssh-ed25519 not!base64", f"partner.example.com {other}",
        f"[127.0.0.1]:{sshd.port} {host_key_line(sshd)}")
    with caplog.at_level("WARNING"):
        listed = sftp_from_spec(sshd, known_hosts=known).list_files(f"{folder.name}/*.csv")
    assert [f.path for f in listed] == [f"{folder.name}/a.csv"]
    assert f"known_hosts {known} line 2: @cert-authority lines are not supported (host " \
           "certificates cannot be checked): skipped" in caplog.text
    assert f"known_hosts {known} line 3: not a 'hosts key-type base64' line" in caplog.text
    assert f"known_hosts {known} line 4: its key is @revoked on line 1: not trusted" in \
        caplog.text


# ---------------------------------------------------------------- FTPS


def ftps_from_spec(server: FtpServer, **keys: Any):
    settings = {"kind": "ftp", "host": server.host, "port": server.port,
                "username": server.username, "tls": True, "timeout_seconds": 10, **keys}
    conn = resource_for(spec.FtpConnection.model_validate(settings))
    return conn.model_copy(update={"password": server.password})  # a secret: env in a spec


def test_a_self_signed_ftps_server_is_refused_by_default(ftps_server: FtpServer):
    mark = len(ftps_server.commands)
    with pytest.raises(TransferError) as refused:
        ftps_from_spec(ftps_server).list_files("*")
    message = str(refused.value)
    assert "the server's certificate is not trusted (checked against the system store)" in \
        message
    assert "set `ca_file` to the CA that signed it, or `verify_tls: false`" in message
    assert ftps_server.commands[mark:] == ["AUTH"]  # refused before USER and PASS


@pytest.mark.parametrize("trust", ["ca_file", "verify_tls_false"])
def test_a_self_signed_ftps_server_is_accepted_when_the_spec_says_so(ftps_server: FtpServer,
                                                                     trust: str):
    keys = {"ca_file": ftps_server.ca_file} if trust == "ca_file" else {"verify_tls": False}
    conn = ftps_from_spec(ftps_server, **keys)
    assert conn.list_files("no-such-folder/*") == []
    assert "PROT" in ftps_server.commands  # still encrypted either way


# ---------------------------------------------------------------- SMTP


def unique_address() -> str:
    return f"ops-{secrets.token_hex(4)}@example.com"


def smtp_from_spec(server: SmtpServer, **keys: Any):
    settings = {"kind": "smtp", "host": server.host, "port": server.port,
                "security": server.security, "from_address": "stagecoach@example.com",
                "timeout_seconds": 10, **keys}
    conn = resource_for(spec.SmtpConnection.model_validate(settings))
    return conn.model_copy(update={"username": server.username, "password": server.password})


@pytest.mark.parametrize("kind", ["smtp_starttls", "smtp_ssl"])
def test_an_untrusted_smtp_server_is_refused_by_default(kind: str,
                                                        request: pytest.FixtureRequest):
    server: SmtpServer = request.getfixturevalue(kind)
    before = len(server.all_received())
    with pytest.raises(MailError) as refused:
        smtp_from_spec(server).send([unique_address()], "s", "t")
    message = str(refused.value)
    assert "the server's certificate is not trusted (checked against the system store)" in \
        message
    assert "set `ca_file` to the CA that signed it, or `verify_tls: false`" in message
    assert len(server.all_received()) == before


@pytest.mark.parametrize("kind", ["smtp_starttls", "smtp_ssl"])
@pytest.mark.parametrize("trust", ["ca_file", "verify_tls_false"])
def test_an_smtp_server_is_accepted_when_the_spec_says_so(kind: str, trust: str,
                                                          request: pytest.FixtureRequest):
    server: SmtpServer = request.getfixturevalue(kind)
    keys = {"ca_file": str(server.ca_file)} if trust == "ca_file" else {"verify_tls": False}
    address = unique_address()
    smtp_from_spec(server, **keys).send([address], "s", "t")
    assert any(address in mail.rcpt_tos for mail in server.all_received())


# ---------------------------------------------------------------- HTTPS (alert channels)


@dataclass
class HttpsServer:
    url: str
    tls: TlsFiles
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    """An HTTPS server on loopback whose certificate is signed by a throwaway CA."""
    tls = make_tls_files(tmp_path_factory.mktemp("https_tls"), "https test")
    record = HttpsServer("", tls)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            record.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.server_context().wrap_socket(server.socket, server_side=True)
    record.url = f"https://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()


ALERT = AlertMessage(event="run_failure", workflow="wf", title="wf_job failed", text="boom")


def test_an_untrusted_https_server_is_refused_by_default_without_retries(
        https_server: HttpsServer):
    before = len(https_server.bodies)
    channel = WebhookChannel(url=https_server.url, retries=3, backoff_seconds=5)
    with pytest.raises(AlertDeliveryError) as refused:
        channel.send_alert(ALERT)
    message = str(refused.value)
    assert message.startswith("webhook (host 127.0.0.1:")
    assert "the server's certificate is not trusted" in message
    assert "set `ca_file` to the CA that signed it, or `verify_tls: false`" in message
    assert "/hook" not in message  # the URL may hold a token: never shown
    assert len(https_server.bodies) == before


@pytest.mark.parametrize("trust", ["ca_file", "verify_tls_false"])
def test_an_https_server_is_accepted_when_configured(https_server: HttpsServer, trust: str):
    keys = {"ca_file": str(https_server.tls.ca_cert)} if trust == "ca_file" else \
        {"verify_tls": False}
    before = len(https_server.bodies)
    WebhookChannel(url=https_server.url, retries=0, **keys).send_alert(ALERT)
    assert len(https_server.bodies) == before + 1
    assert b'"title":"wf_job failed"' in https_server.bodies[-1]


def test_python_trusts_no_test_ca_by_default():
    """The tests above mean something only if the system store does not hold the test CAs."""
    store = ssl.create_default_context().get_ca_certs()
    assert not any("stagecoach" in str(cert.get("subject", "")).lower() for cert in store)
