"""What every alert channel receives and how it fails: one message shape for Slack, mail, SMS,
Teams, webhooks, a shell command and the run-history dataset.

Channels only deliver; deciding what to alert on (run status, runtime exceeded, missing files,
alarms, sensor errors) and not alerting twice belongs to the sensors that call them.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class AlertMessage:
    """One alert, ready for any channel: the rendered title and text plus the facts behind them."""

    # start | success | failure | runtime_exceeded | missing_files | alarm | sensor_error
    event: str
    workflow: str
    title: str  # one line, e.g. "acme_retail_nightly_job failed"
    text: str  # the body, already rendered from the (overridable) template
    job: str | None = None
    run_id: str | None = None
    status: str | None = None
    duration_seconds: float | None = None
    failed_step: str | None = None
    error: str | None = None  # the error's first lines, never a secret
    run_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # e.g. missing files, alarm value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertDeliveryError(Exception):
    """A channel could not deliver after its retries; the message names the channel, never a
    secret (token, webhook URL, password)."""


class AlertChannel(Protocol):
    """Deliver one alert; raise AlertDeliveryError when it cannot (after its own retries)."""

    def send_alert(self, message: AlertMessage) -> None: ...

    def describe(self) -> str: ...
