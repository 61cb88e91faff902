"""SmtpResource against real aiosmtpd servers on loopback: plain, STARTTLS with login, and
implicit TLS. What arrived is read back from the server's own record of the SMTP session and
parsed with the standard email package.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import traceback
from email.message import EmailMessage
from pathlib import Path

import pytest

from resources.connections.mail import MailError, SmtpResource
from tests import servers_mail
from tests.servers_mail import REFUSED_DOMAIN, SmtpServer, make_tls_files

pytestmark = pytest.mark.timeout(120)

# the shared servers' fixtures, made visible to this module's tests
smtp_tls_files = servers_mail.smtp_tls_files
smtp_plain = servers_mail.smtp_plain
smtp_starttls = servers_mail.smtp_starttls
smtp_ssl = servers_mail.smtp_ssl


def unique(name: str) -> str:
    """An address no other test uses, so a shared server's record tells tests apart."""
    return f"{name}-{secrets.token_hex(4)}@example.com"


def body_text(message: EmailMessage) -> str:
    """The plain-text body with the wire's CRLF line ends as \\n."""
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def full_error(error: BaseException) -> str:
    """The text Dagster would show: message, cause chain and traceback."""
    return "".join(traceback.format_exception(error))


# ---------------------------------------------------------------- sending


@pytest.mark.parametrize("kind", ["smtp_plain", "smtp_starttls", "smtp_ssl"])
def test_message_arrives_with_headers_and_envelope(kind: str,
                                                   request: pytest.FixtureRequest) -> None:
    server: SmtpServer = request.getfixturevalue(kind)
    to = [unique("ops"), unique("data")]
    message_id = server.resource().send(to, "Daily export ready", "The export ran.\n",
                                        html="<p>The export ran.</p>")
    mail = server.received(message_id)
    assert mail.mail_from == "stagecoach@example.com"
    assert list(mail.rcpt_tos) == to
    message = mail.message()
    assert message["From"] == "Stagecoach <stagecoach@example.com>"
    assert [a.addr_spec for a in message["To"].addresses] == to
    assert message["Subject"] == "Daily export ready"
    assert message["Message-ID"] == message_id and message["Date"]
    assert body_text(message) == "The export ran.\n"
    assert "<p>The export ran.</p>" in message.get_body(preferencelist=("html",)).get_content()


def test_starttls_server_saw_the_login(smtp_starttls: SmtpServer) -> None:
    before = len(smtp_starttls.handler.logins)
    smtp_starttls.resource().send([unique("ops")], "hello", "hi")
    assert len(smtp_starttls.handler.logins) == before + 1


def test_subject_is_one_line_and_bcc_is_not_sent(smtp_plain: SmtpServer) -> None:
    resource = smtp_plain.resource()
    to, hidden = unique("ops"), unique("hidden")
    message = resource.compose([to], "Failed:\r\nBcc: attacker@example.com", "body")
    message["Bcc"] = hidden
    mail = smtp_plain.received(resource.send_message(message))
    assert mail.message()["Subject"] == "Failed: Bcc: attacker@example.com"
    assert list(mail.rcpt_tos) == [to, hidden]
    assert mail.message()["Bcc"] is None and hidden.encode() not in mail.content


# ---------------------------------------------------------------- deliver_file


@pytest.mark.parametrize(("name", "content_type", "data"), [
    ("export.zip", "application/zip", bytes(range(256)) * 300),
    ("export.csv.gpg", "application/octet-stream", b"\x85\x02\x0c\x03" + bytes(5000)),
    ("export.csv.gz", "application/gzip", b"\x1f\x8b\x08" + bytes(100)),
    ("Über.csv", "text/csv", "id;name\r\n1;Zoë\r\n.\r\n2;.dot\r\n".encode()),
])
def test_attach_arrives_byte_for_byte(smtp_starttls: SmtpServer, tmp_path: Path, name: str,
                                      content_type: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    to = [unique("partner")]
    sent = smtp_starttls.resource().deliver_file(path, to, f"File {name}", "Attached.",
                                                 mode="attach")
    assert (sent.mode_used, sent.recipients, sent.size) == ("attach", tuple(to), len(data))
    message = smtp_starttls.received(sent.message_id).message()
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    part = attachments[0]
    assert part.get_content_type() == content_type
    assert part.get_filename() == name
    arrived = part.get_payload(decode=True)
    assert arrived == data
    assert hashlib.md5(arrived).hexdigest() == hashlib.md5(path.read_bytes()).hexdigest()
    assert body_text(message).strip() == "Attached."


def test_embed_puts_the_text_in_both_bodies(smtp_plain: SmtpServer, tmp_path: Path) -> None:
    path = tmp_path / "summary.txt"
    path.write_bytes("rows: 12\n<b>bold</b> & \"quoted\"\nZoë\n".encode() + b"bad \xff byte\n")
    sent = smtp_plain.resource().deliver_file(path, [unique("ops")], "Summary", "Today:",
                                              mode="embed")
    assert sent.mode_used == "embed"
    message = smtp_plain.received(sent.message_id).message()
    assert list(message.iter_attachments()) == []
    plain = body_text(message)
    assert plain.startswith("Today:\n\n")
    assert "<b>bold</b> & \"quoted\"\nZoë\nbad \ufffd byte" in plain
    page = message.get_body(preferencelist=("html",)).get_content().replace("\r\n", "\n")
    assert "<pre>rows: 12\n&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in page
    assert "<b>" not in page


def test_above_the_limit_is_linked_not_attached(smtp_plain: SmtpServer, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 2000)
    link = "s3://archive/exports/2026-11-02/big.csv"
    sent = smtp_plain.resource().deliver_file(path, [unique("ops")], "Big", "Export done.",
                                              mode="attach", link=link,
                                              max_attachment_bytes=1000)
    assert (sent.mode_used, sent.size) == ("link", 2000)
    message = smtp_plain.received(sent.message_id).message()
    assert list(message.iter_attachments()) == [] and not message.is_multipart()
    text = body_text(message)
    assert text.startswith("Export done.\n\n")
    assert f"the file is 2000 bytes, above the limit of 1000; it is kept at {link}" in text


def test_embed_of_a_binary_file_is_linked(smtp_plain: SmtpServer, tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    path.write_bytes(b"PAR1" + bytes(300) + b"PAR1")
    sent = smtp_plain.resource().deliver_file(path, [unique("ops")], "Export", "",
                                              mode="embed", link="https://files.example/e")
    assert sent.mode_used == "link"
    text = body_text(smtp_plain.received(sent.message_id).message())
    assert "not text" in text and "it is kept at https://files.example/e" in text
    assert "PAR1" not in text


def test_link_mode_sends_only_the_link(smtp_plain: SmtpServer, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("a,b\n1,2\n")
    sent = smtp_plain.resource().deliver_file(path, [unique("ops")], "Export", "Ready.",
                                              mode="link", link="https://files.example/x")
    assert sent.mode_used == "link"
    text = body_text(smtp_plain.received(sent.message_id).message())
    assert "export.csv: the file is 8 bytes; it is kept at https://files.example/x" in text
    assert "1,2" not in text


def test_link_needed_but_missing(smtp_plain: SmtpServer, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 50)
    resource = smtp_plain.resource()
    with pytest.raises(MailError, match="mode 'link' needs a link"):
        resource.deliver_file(path, [unique("ops")], "s", "t", mode="link")
    with pytest.raises(MailError, match="above the limit of 10, and no link"):
        resource.deliver_file(path, [unique("ops")], "s", "t", mode="attach",
                              max_attachment_bytes=10)


def test_files_above_max_message_bytes_are_refused_unread(
        smtp_plain: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as handle:
        handle.truncate(11 * 1024 * 1024)  # sparse: costs no disk

    def no_reading(self: Path) -> bytes:
        raise AssertionError(f"{self} was read")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    before = len(smtp_plain.all_received())
    with pytest.raises(MailError, match=r"huge\.bin \(11534336 bytes\).*max_message_bytes"):
        smtp_plain.resource().send([unique("ops")], "s", "t", attachments=[huge])
    assert len(smtp_plain.all_received()) == before


# ---------------------------------------------------------------- failures


def test_wrong_password_names_server_not_password(smtp_starttls: SmtpServer) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    resource = smtp_starttls.resource(password=wrong)
    with pytest.raises(MailError) as caught:
        resource.send([unique("ops")], "s", "t")
    text = str(caught.value)
    assert f"127.0.0.1:{smtp_starttls.port}" in text and "login as stagecoach" in text
    assert "535" in text
    assert wrong not in full_error(caught.value)
    assert smtp_starttls.password not in full_error(caught.value)


@pytest.mark.security
@pytest.mark.parametrize("kind", ["smtp_starttls", "smtp_ssl"])
def test_untrusted_certificate_fails_clearly(kind: str, request: pytest.FixtureRequest,
                                             tmp_path: Path) -> None:
    server: SmtpServer = request.getfixturevalue(kind)
    other_ca = make_tls_files(tmp_path / "other", "another").ca_cert
    for ca_file, trust in ((None, "the system store"), (str(other_ca), f"ca_file {other_ca}")):
        with pytest.raises(MailError) as caught:
            server.resource(ca_file=ca_file).send([unique("ops")], "s", "t")
        text = str(caught.value)
        assert f"smtp 127.0.0.1:{server.port}" in text
        assert "certificate is not trusted" in text and f"checked against {trust}" in text
        step = "STARTTLS" if kind == "smtp_starttls" else "connect (implicit TLS)"
        assert step in text


@pytest.mark.security
def test_starttls_not_offered_is_not_sent_in_clear(smtp_plain: SmtpServer) -> None:
    before = len(smtp_plain.all_received())
    with pytest.raises(MailError, match="does not offer STARTTLS; not sending in clear"):
        smtp_plain.resource(security="starttls").send([unique("ops")], "s", "t")
    assert len(smtp_plain.all_received()) == before


@pytest.mark.security
def test_login_in_clear_is_refused(smtp_plain: SmtpServer) -> None:
    password = secrets.token_urlsafe(12)
    with pytest.raises(MailError, match="password in clear") as caught:
        smtp_plain.resource(username="u", password=password).send([unique("ops")], "s", "t")
    assert password not in full_error(caught.value)


def test_refused_recipients_are_named_and_nobody_gets_it(smtp_starttls: SmtpServer) -> None:
    good = unique("ops")
    bad = [f"nobody@{REFUSED_DOMAIN}", f"ghost@{REFUSED_DOMAIN}"]
    with pytest.raises(MailError) as caught:
        smtp_starttls.resource().send([good, *bad], "s", "t")
    text = str(caught.value)
    assert "RCPT TO: 2 of 3 recipients refused, nothing sent" in text
    assert all(address in text for address in bad) and "550" in text
    assert good not in text
    assert not [m for m in smtp_starttls.all_received() if good in m.rcpt_tos]


@pytest.mark.parametrize("address", ["not an address", "ops@", "@example.com",
                                     "ops@example.com\r\nBcc: x@example.com", "zoë@example.com",
                                     "Ops <ops@example.com>"])
def test_invalid_recipient_is_named(smtp_plain: SmtpServer, address: str) -> None:
    with pytest.raises(MailError, match="is not a valid e-mail address") as caught:
        smtp_plain.resource().send([unique("ops"), address], "s", "t")
    assert repr(address) in str(caught.value)


def test_bad_settings_fail_before_connecting(smtp_starttls: SmtpServer, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(MailError, match=rf"TLS: cannot load ca_file {missing}"):
        smtp_starttls.resource(ca_file=str(missing)).send([unique("ops")], "s", "t")
    with pytest.raises(MailError, match="from_address 'Stagecoach <nobody>'"):
        smtp_starttls.resource(from_address="Stagecoach <nobody>").send([unique("o")], "s", "t")


def test_no_recipients(smtp_plain: SmtpServer) -> None:
    with pytest.raises(MailError, match="non-empty list"):
        smtp_plain.resource().send([], "s", "t")
    with pytest.raises(MailError, match="non-empty list"):
        smtp_plain.resource().send("ops@example.com", "s", "t")  # type: ignore[arg-type]


def test_connection_refused_names_host_and_port() -> None:
    with socket.socket() as probe:  # bound, never listening: connecting is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        resource = SmtpResource(host="127.0.0.1", port=port, security="none",
                                from_address="a@example.com", timeout_seconds=5)
        with pytest.raises(MailError, match=rf"smtp 127\.0\.0\.1:{port} connect: "
                                            "connection refused"):
            resource.send(["ops@example.com"], "s", "t")


def test_silent_server_times_out() -> None:
    with socket.socket() as silent:  # listens, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        resource = SmtpResource(host="127.0.0.1", port=port, security="none",
                                from_address="a@example.com", timeout_seconds=0.5)
        with pytest.raises(MailError, match=rf"127\.0\.0\.1:{port} connect: timed out "
                                            r"after 0\.5 s"):
            resource.send(["ops@example.com"], "s", "t")


# ---------------------------------------------------------------- SMS


def test_sms_is_short_plain_text(smtp_plain: SmtpServer) -> None:
    text = "Stagecoach: workflow daily_export FAILED\n\n" + "step deliver: timed out. " * 20
    to = [f"5551234567@txt.{secrets.token_hex(3)}.example"]
    message_id = smtp_plain.resource().send_sms(to, text)
    mail = smtp_plain.received(message_id)
    message = mail.message()
    assert list(mail.rcpt_tos) == to
    assert not message.is_multipart()
    assert message.get_content_type() == "text/plain"
    assert message["Subject"] == ""
    sms = message.get_content().strip()
    assert len(sms) <= 160 and sms.endswith("...")
    assert sms.startswith("Stagecoach: workflow daily_export FAILED step deliver: timed out.")


def test_short_sms_is_kept_whole(smtp_plain: SmtpServer) -> None:
    message_id = smtp_plain.resource().send_sms(["5551234567@sms.example.com"], "Run ok")
    assert smtp_plain.received(message_id).message().get_content() == "Run ok\r\n"
