"""One POST for the HTTP alert channels (Teams, generic webhook, Twilio), with urllib only.

A channel that is down or answers 429 or 5xx is retried with exponential backoff (plus a little
jitter), a 429's Retry-After honoured up to a cap; any other 4xx fails at once, since sending it
again would get the same answer. Redirects are not followed: urllib would turn the POST into a
bodyless GET (reported as delivered) or carry the Authorization header to another host.

Errors name the channel by the caller's `describe` text (which names the host only): webhook
URLs carry their token in the path or query, so neither the URL nor a header value
(Authorization) appears in an exception or a log line. Errors are raised `from None`, since
urllib's exceptions keep the URL and http.client's quote header values.
"""

import email.utils
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field

from resources.channels.alerting import AlertDeliveryError
from resources.retries import run_with_retries

RETRY_AFTER_CAP_SECONDS = 30.0  # a longer Retry-After is cut to this: alerts are not deferred
_EXCERPT_CHARS = 200  # of a refusing server's answer, in the error
_MIN_SECRET_CHARS = 4  # shorter secrets are not scrubbed (they would mangle ordinary words)
_MIN_TOKEN_CHARS = 12  # URL path segments and query values this long may be tokens
_PLAIN_HEADERS = {"content-type", "accept", "user-agent"}

USER_AGENT = "stagecoach-alerts"

log = logging.getLogger(__name__)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirect)


def tls_context(ca_file: str | None, verify_tls: bool) -> ssl.SSLContext | None:
    """The TLS settings of an HTTPS channel: None is Python's default (the system store, host
    name checked); `ca_file` trusts that CA instead; `verify_tls=False` is the explicit opt-out
    (still encrypted, any certificate accepted)."""
    if not verify_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def json_bytes(payload: Any) -> bytes:
    """The JSON the channels send: sorted keys, compact, UTF-8 (not backslash-u escaped), so a
    signature over these bytes is reproducible."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def host_of(url: str) -> str:
    """Host (and port, if any) of a URL, without user info: safe to show."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "?"
    if not host:
        return "?"
    return f"{host}:{port}" if port else host


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """The text with every secret (or fragment of one) long enough to matter replaced."""
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS},
                         key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that may hold a token: the whole URL, its path, query and user info,
    and each path segment or query value long enough to be one (short ones such as "webhook"
    would otherwise be scrubbed from the channel's own description)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    pieces = [url, parts.path, parts.query, parts.fragment, parts.username, parts.password]
    fragments = parts.path.split("/") + [pair.partition("=")[2]
                                         for pair in parts.query.split("&")]
    pieces += [f for f in fragments if len(f) >= _MIN_TOKEN_CHARS]
    return [p for p in pieces if p and p != "/"]


def _excerpt(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float, retries: int,
         backoff_seconds: float, describe: str, *, secrets: Iterable[str | None] = (),
         max_retry_after_seconds: float = RETRY_AFTER_CAP_SECONDS,
         tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """POST `body` and return (status, answer body) of the first 2xx answer.

    Up to `retries` more attempts after the first on connection errors, timeouts, 429 and 5xx;
    raises AlertDeliveryError (text from `describe`, scrubbed of the URL's parts, the header
    values and `secrets`) on any other answer or when the retries run out.
    """
    secrets = [*url_secrets(url), *secrets,
               *(v for k, v in headers.items() if k.lower() not in _PLAIN_HEADERS)]

    def fail(reason: str) -> AlertDeliveryError:
        return AlertDeliveryError(scrub(f"{describe}: {reason}", secrets))

    if urlsplit(url).scheme not in ("http", "https") or host_of(url) == "?":
        raise fail("the URL must be http:// or https:// with a host")
    headers = {"User-Agent": USER_AGENT, **headers}
    opener = _OPENER if tls is None else urllib.request.build_opener(
        _NoRedirect, urllib.request.HTTPSHandler(context=tls))
    attempts = max(0, retries) + 1

    def once() -> tuple[int, bytes]:
        """One POST: the answer, _Retryable for what another attempt may fix, or the
        channel's AlertDeliveryError for a refusal."""
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with opener.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except ValueError:  # http.client quotes the offending URL or header value: not shown
            raise fail("the URL or a header holds characters HTTP does not allow (a stray "
                       "newline in a secret?)") from None
        except urllib.error.HTTPError as answer:
            status = answer.code
            try:
                answer_body = answer.read()
            except OSError:
                answer_body = b""
            finally:
                answer.close()
            last = f"HTTP {status} {answer.reason}"
            excerpt = _excerpt(answer_body)
            if excerpt:
                last += f": {excerpt}"
            if status != 429 and not 500 <= status <= 599:
                if 300 <= status <= 399:
                    last += " (redirects are not followed: configure the final URL)"
                raise fail(f"refused: {last}") from None
            after = retry_after_seconds(answer.headers.get("Retry-After"))
            raise _Retryable(last, None if after is None
                             else min(after, max_retry_after_seconds)) from None
        except TimeoutError:
            raise _Retryable(f"timed out after {timeout} s") from None
        except urllib.error.URLError as failed:
            reason = failed.reason
            if isinstance(reason, ssl.SSLCertVerificationError):  # a retry gets the same answer
                raise fail(f"the server's certificate is not trusted ({reason.verify_message}); "
                           "set `ca_file` to the CA that signed it, or `verify_tls: false` to "
                           "encrypt without checking") from None
            raise _Retryable(f"{type(reason).__name__}: {reason}"
                             if isinstance(reason, BaseException) else str(reason)) from None
        except OSError as failed:  # connection reset or closed while reading the answer
            raise _Retryable(f"{type(failed).__name__}: {failed}") from None

    def log_retry(number: int, failed: BaseException, delay: float) -> None:
        log.warning(scrub(f"{describe}: attempt {number} of {attempts} failed ({failed}); "
                          f"retrying in {delay:.1f} s", secrets))

    try:
        return run_with_retries(
            once, attempts=attempts, backoff_seconds=backoff_seconds,
            should_retry=lambda e: isinstance(e, _Retryable), on_retry=log_retry,
            wait=lambda _, e: e.retry_after if isinstance(e, _Retryable) else None)
    except _Retryable as last:
        raise fail(f"failed after {attempts} attempt{'s' * (attempts != 1)}: {last}"
                   ) from None


class _Retryable(Exception):
    """An answer or fault another POST may get past (connection, timeout, 429, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def post_json(url: str, payload: Any, headers: Mapping[str, str], timeout: float, retries: int,
              backoff_seconds: float, describe: str, *, secrets: Iterable[str | None] = (),
              tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """`post` of `json_bytes(payload)` as application/json; headers may add to or override it."""
    return post(url, json_bytes(payload),
                {"Content-Type": "application/json; charset=utf-8", **headers},
                timeout, retries, backoff_seconds, describe, secrets=secrets, tls=tls)


class HttpAlertChannel(dg.ConfigurableResource):
    """The delivery settings every HTTP alert channel shares."""

    retries: int = Field(
        default=3, ge=0, description="Further attempts after the first on connection "
        "errors, timeouts, 429 and 5xx.")
    backoff_seconds: float = Field(
        default=1.0, ge=0, description="Wait before the first retry; doubled "
        "for each next one (a 429's Retry-After wins if longer).")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per attempt, connecting and "
                                   "reading the answer.")
    ca_file: str | None = Field(default=None, description="PEM CA bundle that signed the server's "
                                "certificate; default the system store.")
    verify_tls: bool = Field(
        default=True, description="false: encrypt without checking the server's "
        "certificate (explicit opt-out).")

    def tls(self) -> ssl.SSLContext | None:
        return tls_context(self.ca_file, self.verify_tls)


def duration_text(seconds: float | None) -> str | None:
    """'1 h 02 min', '3 min 05 s', '42 s' (None stays None), for the message bodies."""
    if seconds is None:
        return None
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
