"""Alerts: who hears about which events, through which channel."""

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from assets.spec.common import Model, Name, Secret, Setting

AlertEvent = Literal["start", "success", "failure", "runtime_exceeded", "missing_files",
                     "alarm", "sensor_error"]
ALERT_EVENTS: tuple[str, ...] = AlertEvent.__args__  # type: ignore[attr-defined]
PROBLEM_EVENTS = ("failure", "runtime_exceeded", "missing_files", "alarm", "sensor_error")


class AlertTemplate(Model):
    """Overrides of one event's message (Jinja; the variables are listed in docs/alerting.md)."""

    title: str | None = None
    text: str | None = None


class AlertReporter(Model):
    """What every reporter shares: which events, for which jobs, with which templates."""

    send_on: list[AlertEvent] | Literal["always", "problems"] = Field(
        "problems", description="Events to report: a list, `always` (all), or `problems` "
                                "(failure, runtime_exceeded, missing_files, alarm, "
                                "sensor_error).")
    jobs: list[Name] | None = Field(
        None, description="Courier or orchestration groups (or `workflow`, the whole "
                          "workflow's job) whose runs this reporter follows; default: all.")
    templates: dict[AlertEvent, AlertTemplate] = Field(default_factory=dict)
    description: str | None = None

    @field_validator("send_on", mode="before")
    @classmethod
    def _known_events(cls, value: object) -> object:
        known = f"the events are {', '.join(ALERT_EVENTS)}; or write `always` or `problems`"
        if isinstance(value, str) and value not in ("always", "problems"):
            raise ValueError(f"unknown value {value!r}: give a list of events ({known})")
        for event in value if isinstance(value, list) else []:
            if event not in ALERT_EVENTS:
                raise ValueError(f"unknown event {event!r} ({known})")
        return value

    @property
    def events(self) -> tuple[str, ...]:
        if self.send_on == "always":
            return ALERT_EVENTS
        return PROBLEM_EVENTS if self.send_on == "problems" else tuple(self.send_on)


class HttpReporter(AlertReporter):
    """Reporters over HTTP: retried on connection errors, 429 and 5xx with backoff."""

    # Defaults keep a reporter that is down under ~20 s: a sensor evaluation has about 60.
    retries: int = Field(2, ge=0, le=10, description="Further attempts after the first.")
    backoff_seconds: float = Field(1.0, ge=0, le=60, description="Wait before the first retry, "
                                                                 "doubled each time.")
    timeout_seconds: float = Field(5.0, gt=0, le=300, description="Per attempt.")
    ca_file: str | None = Field(None, description="PEM CA bundle that signed the server's "
                                                  "certificate; default the system's store.")
    verify_tls: bool = Field(True, description="false: encrypt without checking the server's "
                                               "certificate (explicit opt-out).")


class SlackAlert(HttpReporter):
    kind: Literal["slack"]
    channel: str = Field(description="#channel, channel name or ID.")
    token: Secret = Field(description="A bot token with chat:write.")
    base_url: str = "https://slack.com/api/"


class MailAlert(AlertReporter):
    kind: Literal["mail"]
    connection: Name = Field(description="An `smtp` connection.")
    to: list[str] = Field(default_factory=list)
    sms_to: list[str] = Field(default_factory=list, description="Email-to-SMS gateway "
                                                                 "addresses: short plain text.")
    html: bool = True


class TwilioAlert(HttpReporter):
    kind: Literal["twilio"]
    account_sid: Setting
    auth_token: Secret
    from_: Annotated[str, Field(alias="from")]
    to: list[str] = Field(min_length=1)
    base_url: str = "https://api.twilio.com"


class TeamsAlert(HttpReporter):
    kind: Literal["teams"]
    webhook_url: Secret = Field(description="The incoming webhook's URL (it holds a token).")


class WebhookAlert(HttpReporter):
    kind: Literal["webhook"]
    url: Secret = Field(description="Where to POST the alert as JSON (URLs often hold tokens).")
    secret: Secret | None = Field(None, description="HMAC-SHA256 key for a signature header.")
    header: str = "X-Stagecoach-Signature"


class ShellAlert(AlertReporter):
    kind: Literal["shell"]
    command: list[str] = Field(min_length=1, description="Program, then arguments (no shell).")
    timeout_seconds: float = Field(30, gt=0)
    env: dict[str, Setting] = Field(default_factory=dict)


class DatasetAlert(AlertReporter):
    """Send to dataset: a row per alert and per finished run in stagecoach.run_history."""

    kind: Literal["dataset"]
    send_on: list[AlertEvent] | Literal["always", "problems"] = "always"


Alert = Annotated[SlackAlert | MailAlert | TwilioAlert | TeamsAlert | WebhookAlert | ShellAlert
                  | DatasetAlert, Field(discriminator="kind")]
