"""Slack as an alert channel: dagster-slack's SlackResource with a configurable API base URL.

dagster-slack's failure sensor builds its own WebClient from a raw token, so it cannot be
pointed anywhere but slack.com; this resource's `get_client()` passes `base_url`, retry handlers
and a timeout to slack_sdk's WebClient, so Stagecoach's own run-status sensors use it and tests
point it at a local server. The token travels only in the Authorization header; errors name the
channel, the host and Slack's error code, never the token.
"""

import re
import time
from typing import Any

from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
    RetryIntervalCalculator,
    RetryState,
)

from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.channels.http_post import (
    RETRY_AFTER_CAP_SECONDS,
    duration_text,
    host_of,
    retry_after_seconds,
    scrub,
    tls_context,
)
from resources.retries import backoff_delay

_HEADER_CHARS = 150  # Slack's limit for a header block
_SECTION_CHARS = 3000  # and for a section's text
_ERROR_CODE_CHARS = 200
_CHANNEL_ID = re.compile(r"[CDG][A-Z0-9]{6,}")


class _Backoff(RetryIntervalCalculator):
    def __init__(self, backoff_seconds: float) -> None:
        self.backoff_seconds = backoff_seconds

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return backoff_delay(current_attempt, self.backoff_seconds)


class _RateLimitAndServerErrors(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, extended to 5xx, with our backoff and Retry-After capped (the
    stock one sleeps whatever Retry-After says and fails on an HTTP-date)."""

    def __init__(self, max_retry_count: int, backoff_seconds: float) -> None:
        super().__init__(max_retry_count=max_retry_count,
                         interval_calculator=_Backoff(backoff_seconds))

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        return response is not None and (response.status_code == 429
                                          or 500 <= response.status_code <= 599)

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        delay = self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        headers = response.headers if response is not None else {}
        value: Any = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        if isinstance(value, list):
            value = value[0] if value else None
        after = retry_after_seconds(value)
        if after is not None:
            delay = max(delay, min(after, RETRY_AFTER_CAP_SECONDS))
        time.sleep(delay)
        state.next_attempt_requested = True
        state.increment_current_attempt()


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn and plain text fields."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def slack_blocks(message: AlertMessage) -> list[dict[str, Any]]:
    """A header (the title), the text, the error if any, a context line (workflow, job, run id,
    duration) and an "Open run" button when the message has a run_url."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _clip(message.title, _HEADER_CHARS)}}]
    if message.text.strip():
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": _clip(_escape(message.text), _SECTION_CHARS)}})
    if message.error:
        error = _clip(_escape(message.error), _SECTION_CHARS - 6)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{error}```"}})
    context = [f"*{name}* {_escape(str(value))}" for name, value in (
        ("Workflow", message.workflow), ("Job", message.job), ("Run", message.run_id),
        ("Duration", duration_text(message.duration_seconds))) if value is not None]
    blocks.append({"type": "context",
                   "elements": [{"type": "mrkdwn", "text": "  |  ".join(context)}]})
    if message.run_url:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "action_id": "open_run", "url": message.run_url,
            "text": {"type": "plain_text", "text": "Open run"}}]})
    return blocks


class SlackChannel(SlackResource):
    """Alerts to one Slack channel with chat.postMessage (a bot token with chat:write)."""

    channel: str = Field(description="Channel name (#data-alerts or data-alerts) or ID.")
    base_url: str = Field(
        default="https://slack.com/api/", description="The Slack Web API's base URL.")
    retries: int = Field(default=3, ge=0, description="Further attempts on connection errors, 429 "
                         "and 5xx.")
    backoff_seconds: float = Field(
        default=1.0, ge=0, description="Wait before the first retry, doubled "
        "for each next one (a 429's Retry-After wins if longer).")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per attempt.")
    ca_file: str | None = Field(default=None, description="PEM CA bundle that signed the server's "
                                "certificate; default the system store.")
    verify_tls: bool = Field(
        default=True, description="false: encrypt without checking the server's "
        "certificate (explicit opt-out).")

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def get_client(self) -> WebClient:
        """A WebClient on `base_url` that retries connection errors, 429 and 5xx."""
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        return WebClient(
            token=self.token.strip(), base_url=base, timeout=self.timeout_seconds,  # type: ignore
            ssl=tls_context(self.ca_file, self.verify_tls),
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=self.retries,
                                            interval_calculator=_Backoff(self.backoff_seconds)),
                _RateLimitAndServerErrors(self.retries, self.backoff_seconds)])

    def describe(self) -> str:
        channel = self.channel.strip()
        is_id_or_tagged = channel.startswith("#") or _CHANNEL_ID.fullmatch(channel)
        return f"slack {channel}" if is_id_or_tagged else f"slack #{channel}"

    def send_alert(self, message: AlertMessage) -> None:
        where = f"{self.describe()} (host {host_of(self.base_url)}) chat.postMessage"
        secrets = [self.token, self.token.strip()]
        text = _escape(f"{message.title}\n{message.text}" if message.text else message.title)
        try:
            self.get_client().chat_postMessage(channel=self.channel.strip(), text=text,
                                               blocks=slack_blocks(message),
                                               unfurl_links=False, unfurl_media=False)
        except SlackApiError as refused:
            response = refused.response
            code = response.get("error") if isinstance(response.data, dict) else None
            reason = f"Slack error {_clip(str(code), _ERROR_CODE_CHARS)}" if code else "refused"
            raise AlertDeliveryError(scrub(f"{where}: HTTP {response.status_code}, {reason}",
                                           secrets)) from None
        except (SlackClientError, OSError, ValueError) as failed:
            # URLError and friends, after the retries; a ValueError from http.client would quote
            # the Authorization header
            reason = getattr(failed, "reason", None)  # a URLError's
            cause = reason if isinstance(reason, BaseException) else failed
            shown = (f"{type(cause).__name__}: {reason if isinstance(reason, str) else cause}"
                     if not isinstance(failed, ValueError)
                     else "the token or URL holds characters HTTP does not allow")
            raise AlertDeliveryError(scrub(f"{where}: failed after up to {self.retries + 1} "
                                           f"attempts: {shown}", secrets)) from None
