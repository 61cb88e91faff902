"""Microsoft Teams as an alert channel, through an incoming webhook.

The payload is an Adaptive Card (version 1.4) inside a message with one attachment of type
`application/vnd.microsoft.card.adaptive`: the one shape both kinds of Teams webhook accept, the
Workflows (Power Automate) "When a Teams webhook request is received" trigger that replaces
Office 365 connectors, and the retiring connector webhooks. The older MessageCard format only
works with the connectors.

The webhook URL is the secret (its path or `sig` query value is the token): it is only ever
shown as its host.
"""

from typing import Any

from pydantic import Field

from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.channels.http_post import HttpAlertChannel, duration_text, host_of, post_json

CARD_VERSION = "1.4"
_MAX_TEXT_CHARS = 10_000  # a Teams message is at most ~28 KB
# The Office 365 connectors answer some failures (such as Teams' own 429) with HTTP 200 and this
# text instead of their usual "1".
_CONNECTOR_FAILURE = b"webhook message delivery failed"
_ATTENTION_EVENTS = {"failure", "runtime_exceeded", "missing_files", "alarm", "sensor_error"}


def _clip(text: str, limit: int = _MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def teams_card(message: AlertMessage) -> dict[str, Any]:
    """The webhook payload for one alert: title, text, facts, the error and an "Open run"
    action when the message has a run_url."""
    facts = [("Workflow", message.workflow), ("Job", message.job), ("Run id", message.run_id),
             ("Status", message.status), ("Duration", duration_text(message.duration_seconds)),
             ("Failed step", message.failed_step)]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": _clip(message.title, 500), "weight": "Bolder",
         "size": "Medium", "wrap": True, "style": "heading",
         "color": "Attention" if message.event in _ATTENTION_EVENTS else "Default"},
        {"type": "TextBlock", "text": _clip(message.text), "wrap": True},
        {"type": "FactSet", "facts": [{"title": title, "value": str(value)}
                                      for title, value in facts if value is not None]},
    ]
    if message.error:
        body.append({"type": "TextBlock", "text": _clip(message.error, 2000), "wrap": True,
                     "fontType": "Monospace", "size": "Small"})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard", "version": CARD_VERSION, "body": body,
        "msteams": {"width": "Full"}}
    if message.run_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open run",
                            "url": message.run_url}]
    return {"type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                             "contentUrl": None, "content": card}]}


class TeamsChannel(HttpAlertChannel):
    """Alerts to a Teams channel through its incoming webhook (Workflows or connector)."""

    webhook_url: str = Field(description="The webhook's URL; a secret: set it with dg.EnvVar.")

    def describe(self) -> str:
        return f"teams webhook (host {host_of(self.webhook_url)})"

    def send_alert(self, message: AlertMessage) -> None:
        status, answer = post_json(self.webhook_url, teams_card(message), {},
                                   self.timeout_seconds, self.retries, self.backoff_seconds,
                                   self.describe(), tls=self.tls())
        if _CONNECTOR_FAILURE in answer[:200].lower():
            raise AlertDeliveryError(f"{self.describe()}: HTTP {status} but the webhook reports "
                                     "that delivery failed")
