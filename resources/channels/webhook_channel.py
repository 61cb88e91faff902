"""A generic JSON webhook as an alert channel, optionally signed with HMAC-SHA256."""

import hashlib
import hmac
import re
import time

from pydantic import Field, field_validator

from resources.channels.alerting import AlertMessage
from resources.channels.http_post import HttpAlertChannel, host_of, json_bytes, post

TIMESTAMP_HEADER = "X-Stagecoach-Timestamp"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256, keyed with the UTF-8 secret, of
    `timestamp + "." + body` (timestamp as the ASCII digits sent, body as the raw bytes)."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                      hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookChannel(HttpAlertChannel):
    """POSTs `message.as_dict()` as JSON: UTF-8, keys sorted, no spaces (`json.dumps(...,
    sort_keys=True, separators=(",", ":"), ensure_ascii=False)`).

    With a `secret`, each alert also carries two headers a receiver checks:

    - `X-Stagecoach-Timestamp`: the Unix time in whole seconds when the alert was signed;
    - `<header>` (default `X-Stagecoach-Signature`): `sha256=` followed by the lowercase hex
      HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the timestamp's digits, one `.` and
      the request body's exact bytes.

    To verify: recompute the HMAC over `timestamp + "." + raw_body`, compare with
    `hmac.compare_digest`, and refuse a timestamp more than 5 minutes from now (a replayed
    request). Retries resend the same bytes and headers (they end well within 5 minutes), so
    the signature also serves to drop duplicates.
    """

    url: str = Field(description="Where to POST; a secret if it holds a token: use dg.EnvVar.")
    secret: str | None = Field(
        default=None, description="HMAC key for the signature header; set it "
        "with dg.EnvVar. None: unsigned.")
    header: str = Field(
        default="X-Stagecoach-Signature", description="Header carrying the signature.")

    @field_validator("header", mode="before")
    @classmethod
    def _header_name(cls, value: object) -> object:
        if isinstance(value, str) and not _TOKEN.fullmatch(value):
            raise ValueError(f"header {value!r} is not a valid HTTP header name")
        if isinstance(value, str) and value.lower() in (TIMESTAMP_HEADER.lower(),
                                                        "content-type", "authorization"):
            raise ValueError(f"header {value!r} is taken; choose another name")
        return value

    def describe(self) -> str:
        return f"webhook (host {host_of(self.url)})"

    def signed_headers(self, body: bytes, now: float | None = None) -> dict[str, str]:
        """The signature and timestamp headers for this body (none without a secret)."""
        if not self.secret:
            return {}
        timestamp = str(int(time.time() if now is None else now))
        return {TIMESTAMP_HEADER: timestamp, self.header: signature(self.secret, timestamp, body)}

    def send_alert(self, message: AlertMessage) -> None:
        body = json_bytes(message.as_dict())
        headers = {"Content-Type": "application/json; charset=utf-8", **self.signed_headers(body)}
        post(self.url, body, headers, self.timeout_seconds, self.retries, self.backoff_seconds,
             self.describe(), secrets=[self.secret], tls=self.tls())
