"""Text messages through Twilio's REST API as an alert channel.

One message per number, so a number Twilio refuses does not stop the others; the failures are
raised together afterwards, naming the numbers (not secrets). The auth token is: it only
travels in the Basic authorization header and never appears in an error.
"""

import base64
import re
from urllib.parse import quote, urlencode

import dagster as dg
from pydantic import Field, field_validator

from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.channels.http_post import HttpAlertChannel, host_of, post

SMS_MAX_CHARS = 320  # two concatenated GSM-7 segments' worth, roughly
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def check_e164(number: object, field: str) -> object:
    """An E.164 number ("+" then 2 to 15 digits, no spaces); an EnvVar is checked once Dagster
    resolves it (the validators run again then)."""
    if isinstance(number, dg.EnvVar):
        return number
    if not isinstance(number, str) or not _E164.fullmatch(number):
        raise ValueError(f"{field}: {number!r} is not an E.164 phone number "
                         "(+ and country code, digits only, e.g. +15555550100)")
    return number


def sms_text(message: AlertMessage, limit: int = SMS_MAX_CHARS) -> str:
    """Title on the first line, then the text with whitespace collapsed; at most `limit`
    characters."""
    title = " ".join(message.title.split())
    text = " ".join(message.text.split())
    body = f"{title}\n{text}" if text else title
    return body if len(body) <= limit else body[: limit - 3].rstrip() + "..."


class TwilioChannel(HttpAlertChannel):
    """SMS alerts: a POST to /2010-04-01/Accounts/{account_sid}/Messages.json per number."""

    account_sid: str = Field(description="The account SID (AC...).")
    auth_token: str = Field(description="The account's auth token; set it with dg.EnvVar.")
    from_number: str = Field(description="A Twilio number of the account, E.164.")
    to_numbers: list[str] = Field(description="E.164 numbers to text, e.g. ['+15555550100'].")
    base_url: str = "https://api.twilio.com"

    @field_validator("from_number", mode="before")
    @classmethod
    def _from(cls, value: object) -> object:
        return check_e164(value, "from_number")

    @field_validator("to_numbers", mode="before")
    @classmethod
    def _to(cls, value: object) -> object:
        if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
            raise ValueError(f"to_numbers must be a non-empty list of E.164 numbers, not "
                             f"{value!r}")
        return list(dict.fromkeys(check_e164(n, "to_numbers") for n in value))

    def describe(self) -> str:
        return f"twilio {', '.join(self.to_numbers)}"

    def messages_url(self) -> str:
        return (f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/"
                f"{quote(self.account_sid, safe='')}/Messages.json")

    def send_alert(self, message: AlertMessage) -> None:
        url = self.messages_url()
        credentials = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Authorization": f"Basic {credentials}", "Accept": "application/json"}
        text = sms_text(message)
        host = host_of(url)
        failures: dict[str, str] = {}
        for number in self.to_numbers:
            form = urlencode({"To": number, "From": self.from_number, "Body": text})
            describe = f"twilio {number} (host {host})"
            try:
                post(url, form.encode("utf-8"), headers, self.timeout_seconds, self.retries,
                     self.backoff_seconds, describe, secrets=[self.auth_token], tls=self.tls())
            except AlertDeliveryError as failed:
                failures[number] = str(failed).removeprefix(f"{describe}: ")
        if failures:
            listed = "; ".join(f"{number} {reason}" for number, reason in failures.items())
            raise AlertDeliveryError(f"{self.describe()} (host {host}): {len(failures)} of "
                                     f"{len(self.to_numbers)} messages failed: {listed}")
