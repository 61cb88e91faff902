"""Mail as a destination and as an alert channel: one SMTP sending core under file delivery,
alerts and SMS through email-to-SMS gateways.

TLS is verified (against `ca_file` or the system store) unless `verify_tls: false`; a message
goes to all of its recipients or to none (a refused recipient stops it before DATA, so a Dagster
retry sends no duplicates); errors name the server and the operation, never the password.
"""

import contextlib
import functools
import html
import mimetypes
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

SMS_MAX_CHARS = 160
# Never 8bit bodies: every SMTP server takes 7bit, not every one announces 8BITMIME.
MESSAGE_POLICY = policy.default.clone(cte_type="7bit")
_WIRE_POLICY = MESSAGE_POLICY.clone(linesep="\r\n")
_HEADROOM = 64 * 1024  # headers, text bodies and MIME boundaries around a file
_SNIFF_BYTES = 8192
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
               "xz": "application/x-xz", "compress": "application/x-compress",
               "br": "application/x-brotli"}
_TEXT_APPLICATIONS = {"application/json", "application/xml", "application/x-yaml",
                      "application/yaml", "application/sql", "application/x-sh",
                      "application/javascript", "application/x-ndjson"}
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@"
                      rf"(?P<domain>{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f.:]+\])")


class MailError(Exception):
    """A message could not be built or sent; the text names server and operation."""


class _TooLarge(MailError):
    """The built message exceeds max_message_bytes (deliver_file falls back to a link)."""


@dataclass(frozen=True)
class DeliveredMail:
    """What a sent mail was: its id, how the file went, to whom."""

    message_id: str
    mode_used: Literal["attach", "embed", "link"]
    recipients: tuple[str, ...]
    size: int  # of the file, in bytes


def check_address(address: str) -> str:
    """A plain ASCII addr-spec (user@domain), stripped; anything else is refused by name, so a
    typo in a workflow spec fails at once rather than as a bounce nobody reads."""
    clean = address.strip() if isinstance(address, str) else address
    if not isinstance(clean, str) or len(clean) > 254 or not _ADDRESS.fullmatch(clean):
        raise MailError(f"{address!r} is not a valid e-mail address (user@domain, ASCII only, "
                        "no display name)")
    return clean


def check_addresses(addresses: Sequence[str]) -> list[str]:
    """Every address checked (check_address); the list as sent."""
    if isinstance(addresses, str) or not addresses:
        raise MailError(f"recipients must be a non-empty list of addresses, not {addresses!r}")
    return list(dict.fromkeys(check_address(a) for a in addresses))


def encoded_size(size: int) -> int:
    """Bytes a file takes in a message as base64 (76 characters and CRLF a line)."""
    return (size + 56) // 57 * 78


def mime_type(path: Path) -> tuple[str, str]:
    """(maintype, subtype) from the name; compressed files as what they are on disk (a .tar.gz
    is gzip, not tar); unknown kinds (e.g. .gpg) as application/octet-stream."""
    guessed, encoding = mimetypes.guess_type(path.name)
    if encoding is not None:
        guessed = _COMPRESSED.get(encoding)
    maintype, _, subtype = (guessed or "application/octet-stream").partition("/")
    return maintype, subtype


def looks_like_text(path: Path) -> bool:
    """Text unless the name says otherwise (.zip, .pdf, compressed) or the first 8 KiB hold a
    NUL or much control clutter; names that say nothing (.gpg, .log) are judged by content."""
    kind, encoding = mimetypes.guess_type(path.name)
    if encoding is not None:  # compressed
        return False
    if kind is not None and not kind.startswith("text/") and kind not in _TEXT_APPLICATIONS:
        return False
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        return False
    controls = sum(1 for byte in head if byte < 32 and byte not in b"\t\n\r\f\x1b")
    return controls <= len(head) // 100


@functools.cache
def _local_hostname() -> str:
    """The EHLO name; socket.getfqdn() can take seconds without DNS, so once per process."""
    return socket.getfqdn()


class SmtpResource(dg.ConfigurableResource):
    """An SMTP submission server; TLS certificates are checked against ca_file or the system
    store unless `verify_tls` is explicitly false."""

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="starttls (port 587), ssl (implicit TLS, port 465) or none "
        "(a local relay; no login allowed in clear).")
    ca_file: str | None = Field(default=None, description="PEM CA bundle to check the server's "
                                "certificate against; default the system store.")
    verify_tls: bool = Field(
        default=True, description="Check the server's certificate and host name; "
        "false still encrypts but trusts any server (explicit opt-out).")
    from_address: str = Field(description="user@domain or 'Display Name <user@domain>'.")
    timeout_seconds: float = 30
    max_message_bytes: int = 10 * 1024 * 1024

    # ------------------------------------------------------------- building

    def _sender(self) -> Address:
        name, addr = parseaddr(self.from_address)
        try:
            local, _, domain = check_address(addr).partition("@")
        except MailError as bad:
            raise MailError(f"from_address {self.from_address!r}: {bad}") from None
        return Address(display_name=name, username=local, domain=domain)

    def compose(self, to: Sequence[str], subject: str, text: str, html: str | None = None,
                attachments: Sequence[Path] = ()) -> EmailMessage:
        """A message ready for send_message; attachments are sized before they are read, so a
        huge file is refused without loading it."""
        recipients = check_addresses(to)
        sender = self._sender()
        files = [Path(p) for p in attachments]
        sizes = []
        for path in files:
            try:
                sizes.append(path.stat().st_size)
            except OSError as missing:
                raise MailError(f"attachment {path}: {missing.strerror}") from missing
        if files and sum(map(encoded_size, sizes)) + _HEADROOM > self.max_message_bytes:
            listed = ", ".join(f"{p.name} ({s} bytes)" for p, s in zip(files, sizes, strict=True))
            raise _TooLarge(f"attachments {listed} would not fit in a message of at most "
                            f"{self.max_message_bytes} bytes (max_message_bytes)")
        message = EmailMessage(policy=MESSAGE_POLICY)
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = " ".join(subject.split())  # one line: no header injection
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=sender.domain)
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        for path in files:
            maintype, subtype = mime_type(path)
            try:
                data = path.read_bytes()  # the email package holds parts in memory
            except OSError as failed:
                raise MailError(f"attachment {path}: {failed.strerror}") from failed
            message.add_attachment(data, maintype=maintype, subtype=subtype,
                                   filename=path.name)
        return message

    def _prepare(self, message: EmailMessage) -> tuple[str, list[str], bytes]:
        """(envelope sender, recipients from To/Cc/Bcc, wire bytes); Bcc is not sent. The message
        needs MESSAGE_POLICY (as compose builds it) for its address headers to parse."""
        addresses = [a.addr_spec for field in ("To", "Cc", "Bcc")
                     for header in message.get_all(field, [])
                     for a in getattr(header, "addresses", ())]
        recipients = check_addresses(addresses)
        del message["Bcc"]
        sender = self._sender()
        if message["From"] is None:
            message["From"] = sender
        if message["Date"] is None:
            message["Date"] = format_datetime(datetime.now(UTC))
        if message["Message-ID"] is None:
            message["Message-ID"] = make_msgid(domain=sender.domain)
        data = message.as_bytes(policy=_WIRE_POLICY)
        if len(data) > self.max_message_bytes:
            raise _TooLarge(f"the message is {len(data)} bytes, above max_message_bytes "
                            f"{self.max_message_bytes}")
        return sender.addr_spec, recipients, data

    # ------------------------------------------------------------- sending

    def send(self, to: list[str], subject: str, text: str, html: str | None = None,
             attachments: Sequence[Path] = ()) -> str:
        """Send one message (text, optional HTML alternative, files); returns its Message-ID."""
        return self.send_message(self.compose(to, subject, text, html, attachments))

    def send_message(self, message: EmailMessage) -> str:
        """Send a built message to its To/Cc/Bcc addresses; returns its Message-ID."""
        sender, recipients, data = self._prepare(message)
        self._transmit(sender, recipients, data)
        return str(message["Message-ID"])

    def _where(self) -> str:
        return f"smtp {self.host}:{self.port}"

    def _scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def _tls_context(self) -> ssl.SSLContext:
        if not self.verify_tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as failed:
            raise MailError(f"{self._where()} TLS: cannot load ca_file {self.ca_file}: "
                            f"{failed}") from failed

    def _transmit(self, sender: str, recipients: list[str], data: bytes) -> None:
        if self.username and self.security == "none":
            raise MailError(f"{self._where()}: a login with security 'none' would send the "
                            "password in clear; use starttls or ssl")
        context = self._tls_context() if self.security != "none" else None
        timeout = self.timeout_seconds
        conn: smtplib.SMTP | None = None
        step = "connect" + (" (implicit TLS)" if self.security == "ssl" else "")
        try:
            # connecting in the constructor: it records the host name TLS checks against
            conn = (smtplib.SMTP_SSL(self.host, self.port, _local_hostname(), timeout=timeout,
                                     context=context) if self.security == "ssl"
                    else smtplib.SMTP(self.host, self.port, _local_hostname(), timeout=timeout))
            step = "EHLO"
            conn.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                step = "STARTTLS"
                if not conn.has_extn("starttls"):
                    raise MailError(f"{self._where()} STARTTLS: the server does not offer "
                                    "STARTTLS; not sending in clear")
                conn.starttls(context=context)
                conn.ehlo()
            if self.username:
                step = f"login as {self.username}"
                conn.login(self.username, self.password or "")
            step = f"MAIL FROM {sender}"
            options = [f"SIZE={len(data)}"] if conn.has_extn("size") else []
            code, reply = conn.mail(sender, options)
            if code != 250:
                raise MailError(f"{self._where()} {step}: refused {_reply(code, reply)}")
            step = "RCPT TO"
            refused = {}
            for recipient in recipients:
                code, reply = conn.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = _reply(code, reply)
            if refused:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    conn.rset()  # nobody gets it: a retry then sends no duplicates
                listed = "; ".join(f"{r}: {why}" for r, why in refused.items())
                raise MailError(f"{self._where()} RCPT TO: {len(refused)} of "
                                f"{len(recipients)} recipients refused, nothing sent: {listed}")
            step = "DATA"
            code, reply = conn.data(data)
            if code != 250:
                raise MailError(f"{self._where()} DATA: refused {_reply(code, reply)}")
            # accepted: a failure from here on must not fail the step (a retry sends it twice)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.quit()
        except MailError as failed:
            raise MailError(self._scrub(str(failed))) from None
        except ssl.SSLCertVerificationError as failed:
            trust = f"ca_file {self.ca_file}" if self.ca_file else "the system store"
            raise MailError(f"{self._where()} {step}: the server's certificate is not trusted "
                            f"(checked against {trust}): {failed.verify_message}; set `ca_file` "
                            "to the CA that signed it, or `verify_tls: false` to encrypt "
                            "without checking") from failed
        except smtplib.SMTPAuthenticationError as failed:
            raise MailError(self._scrub(f"{self._where()} {step}: refused "
                                        f"{_reply(failed.smtp_code, failed.smtp_error)}")
                            ) from None
        except smtplib.SMTPResponseException as failed:
            raise MailError(self._scrub(f"{self._where()} {step}: "
                                        f"{_reply(failed.smtp_code, failed.smtp_error)}")
                            ) from failed
        except (TimeoutError, smtplib.SMTPServerDisconnected) as failed:
            if not isinstance(failed, TimeoutError) and not isinstance(failed.__context__,
                                                                       TimeoutError):
                raise MailError(f"{self._where()} {step}: the server closed the connection: "
                                f"{failed}") from failed
            raise MailError(f"{self._where()} {step}: timed out after {timeout} s") from failed
        except ConnectionRefusedError as failed:
            raise MailError(f"{self._where()} {step}: connection refused") from failed
        except (smtplib.SMTPException, OSError) as failed:
            raise MailError(self._scrub(f"{self._where()} {step}: {type(failed).__name__}: "
                                        f"{failed}")) from failed
        finally:
            if conn is not None:
                conn.close()

    # ------------------------------------------------------------- uses

    def deliver_file(self, path: Path, to: list[str], subject: str, text: str,
                     mode: Literal["attach", "embed", "link"], link: str | None = None,
                     max_attachment_bytes: int = 5 * 1024 * 1024) -> DeliveredMail:
        """Attach or embed a produced file; above the limit (or a binary file to embed) the
        message links to the archived copy instead and says why."""
        path = Path(path)
        if mode not in ("attach", "embed", "link"):
            raise MailError(f"mode must be attach, embed or link, not {mode!r}")
        if link is not None and (not link.strip() or any(c.isspace() for c in link.strip())):
            raise MailError(f"link {link!r} must be one URL or path without spaces")
        link = link.strip() if link else None
        if mode == "link" and link is None:
            raise MailError(f"{path.name}: mode 'link' needs a link to the archived copy")
        try:
            size = path.stat().st_size
        except OSError as missing:
            raise MailError(f"file to deliver {path}: {missing.strerror}") from missing
        recipients = check_addresses(to)
        body_room = self.max_message_bytes - _HEADROOM
        # embed writes the text twice (plain and HTML), in quoted-printable at worst
        capacity = max(0, body_room // 6) if mode == "embed" else body_room // 78 * 57
        limit = min(max_attachment_bytes, capacity)
        reason: str | None = None
        if mode == "link":
            reason = f"the file is {size} bytes"
        elif size > limit:
            reason = f"the file is {size} bytes, above the limit of {limit}"
        elif mode == "embed" and not looks_like_text(path):
            kind = "/".join(mime_type(path))
            reason = f"the file is {size} bytes and not text ({kind}), so it is not embedded"
        if reason is None:
            assert mode != "link"  # a link always has its reason above
            try:
                message = self._file_message(path, recipients, subject, text, mode)
                sender, envelope_to, data = self._prepare(message)
            except _TooLarge as large:
                reason = f"the file is {size} bytes, above the limit for this message ({large})"
            else:
                self._transmit(sender, envelope_to, data)
                return DeliveredMail(str(message["Message-ID"]), mode, tuple(recipients), size)
        if link is None:
            raise MailError(f"{path.name}: {reason}, and no link to the archived copy was given")
        note = f"{path.name}: {reason}; it is kept at {link}"
        message_id = self.send(recipients, subject, f"{text}\n\n{note}\n" if text else note)
        return DeliveredMail(message_id, "link", tuple(recipients), size)

    def _file_message(self, path: Path, recipients: list[str], subject: str, text: str,
                      mode: Literal["attach", "embed"]) -> EmailMessage:
        if mode == "attach":
            return self.compose(recipients, subject, text, attachments=[path])
        content = path.read_bytes().decode("utf-8-sig", errors="replace")
        intro = html.escape(text).replace("\n", "<br>\n")
        page = f"<p>{intro}</p>\n<pre>{html.escape(content)}</pre>\n"
        return self.compose(recipients, subject, f"{text}\n\n{content}" if text else content,
                            html=page)

    def send_sms(self, to: list[str], text: str) -> str:
        """Plain text for email-to-SMS gateways: whitespace collapsed, at most 160 characters,
        an empty subject (gateways prepend it to the text), no HTML, no attachments."""
        line = " ".join(text.split())
        if not line:
            raise MailError("an SMS needs some text")
        if len(line) > SMS_MAX_CHARS:
            line = line[: SMS_MAX_CHARS - 3].rstrip() + "..."
        return self.send(to, "", line)


def _reply(code: int, reply: bytes | str) -> str:
    detail = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else reply
    return f"{code} {' '.join(detail.split())}".strip()
