"""Alerts by mail and by text message (through email-to-SMS gateway addresses), over the same
SmtpResource that delivers files.

The mail carries the rendered text and a block of facts (workflow, job, run id, duration,
failed step, error, run URL) as plain text and, optionally, as escaped HTML; the SMS carries
the title and the text's first line, plain and at most 160 characters.
"""

import html

import dagster as dg
from pydantic import Field

from resources.channels.alert_templates import first_lines, human_duration
from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.connections.mail import MailError, SmtpResource

_SAFE_LINK = ("https://", "http://")


def facts(message: AlertMessage) -> list[tuple[str, str]]:
    """(label, value) for what a reader needs to find the run; empty facts are left out."""
    rows = [("Workflow", message.workflow), ("Job", message.job), ("Run id", message.run_id),
            ("Status", message.status), ("Duration", human_duration(message.duration_seconds)),
            ("Failed step", message.failed_step), ("Run URL", message.run_url)]
    return [(label, " ".join(str(value).split())) for label, value in rows if value]


def mail_text(message: AlertMessage) -> str:
    """An alert as plain text, for SMS gateways and text-only mail readers."""
    rows = facts(message)
    width = max((len(label) for label, _ in rows), default=0) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in rows]
    error = first_lines(message.error)
    if error:
        lines += ["Error:", *(f"    {line}" for line in error.splitlines())]
    block = "\n".join(lines) + "\n"
    body = message.text.rstrip()
    return f"{body}\n\n{block}" if body else block


def mail_html(message: AlertMessage) -> str:
    """An alert as HTML mail, values escaped."""
    rows = []
    for label, value in facts(message):
        shown = html.escape(value)
        if label == "Run URL" and value.startswith(_SAFE_LINK):  # no javascript: links
            shown = f'<a href="{html.escape(value, quote=True)}">{shown}</a>'
        rows.append(f"<tr><th align=\"left\">{html.escape(label)}</th><td>{shown}</td></tr>")
    parts = []
    if message.text.strip():
        parts.append("<p>" + html.escape(message.text.strip()).replace("\n", "<br>\n") + "</p>")
    if rows:
        parts.append("<table>\n" + "\n".join(rows) + "\n</table>")
    error = first_lines(message.error)
    if error:
        parts.append(f"<p><b>Error</b></p>\n<pre>{html.escape(error)}</pre>")
    return "<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"


def sms_text(message: AlertMessage) -> str:
    """The title and at most the text's first line; send_sms collapses and cuts it to 160."""
    first = next((line.strip() for line in message.text.splitlines() if line.strip()), "")
    return f"{message.title}: {first}" if first else message.title


class MailChannel(dg.ConfigurableResource):
    """An alert channel: mail to `to` and a short text to each email-to-SMS gateway address in
    `sms_to`. Both are tried; an error names what was not delivered and the SMTP server, never
    the password."""

    smtp: SmtpResource
    to: list[str] = Field(description="Mail recipients (user@domain); may be empty when "
                                      "sms_to is set.")
    sms_to: list[str] = Field(default=[], description="Email-to-SMS gateway addresses, e.g. "
                                              "5551234567@txt.att.net: plain short text only.")
    include_html: bool = Field(default=True, description="Add an HTML version of the mail.")

    def describe(self) -> str:
        parts = [f"mail to {', '.join(self.to)}"] if self.to else []
        if self.sms_to:
            parts.append(f"SMS to {len(self.sms_to)} gateway address"
                         f"{'' if len(self.sms_to) == 1 else 'es'}")
        where = f"smtp {self.smtp.host}:{self.smtp.port}"
        return f"{' and '.join(parts) or 'mail to nobody'} via {where}"

    def _scrub(self, text: str) -> str:
        password = self.smtp.password
        return text.replace(password, "***") if password else text

    def send_alert(self, message: AlertMessage) -> None:
        if not self.to and not self.sms_to:
            raise AlertDeliveryError(f"{self.describe()}: no recipients (to and sms_to are "
                                     "both empty)")
        sent, failures = [], []
        if self.to:
            try:
                self.smtp.send(self.to, message.title, mail_text(message),
                               html=mail_html(message) if self.include_html else None)
                sent.append("the mail")
            except MailError as failed:
                failures.append(f"mail: {failed}")
        if self.sms_to:
            try:
                self.smtp.send_sms(self.sms_to, sms_text(message))
                sent.append("the SMS")
            except MailError as failed:
                failures.append(f"SMS: {failed}")
        if failures:
            also = f" ({sent[0]} was sent)" if sent else ""
            raise AlertDeliveryError(self._scrub(
                f"alert {message.title!r} not delivered{also} via smtp {self.smtp.host}:"
                f"{self.smtp.port}: " + "; ".join(failures)))
