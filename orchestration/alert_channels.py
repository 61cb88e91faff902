"""Spec reporters → the alert channels in resources/, built when an alert is sent.

A channel is built per alert, with its environment variables read then: a reporter whose
variable is missing fails alone, with the variable's name, and the workflow's other reporters
still send (a Dagster resource with a missing EnvVar would fail the whole sensor instead).
"""

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assets import spec
from assets.registry import Entry, Registry
from resources.bookkeeping.run_history import DatasetChannel
from resources.channels.alert_mail import MailChannel
from resources.channels.alerting import AlertChannel, AlertDeliveryError
from resources.channels.shell_channel import ShellChannel
from resources.channels.teams import TeamsChannel
from resources.channels.twilio import TwilioChannel
from resources.channels.webhook_channel import WebhookChannel
from resources.connections.mail import SmtpResource
from resources.warehouse import WarehouseResource

ChannelFactory = Callable[[], AlertChannel]


def _env(setting: spec.Setting | None, what: str) -> Any:
    """A setting's value, reading `{env: NAME}` now; a missing variable names itself."""
    if not isinstance(setting, spec.EnvRef):
        return setting
    value = os.environ.get(setting.env)
    if value is None:
        raise AlertDeliveryError(f"{what}: environment variable {setting.env} is not set; "
                                 "set it where the Dagster daemon runs")
    return value


def _smtp(connection: spec.SmtpConnection, what: str) -> SmtpResource:
    fields = {name: _env(getattr(connection, name), what) for name in (
        "host", "port", "username", "password", "security", "ca_file", "verify_tls",
        "from_address", "timeout_seconds")}
    return SmtpResource(**{k: v for k, v in fields.items() if v is not None})


@functools.lru_cache(maxsize=8)
def _dataset_channel(url: str) -> DatasetChannel:
    # A sensor evaluation has about a minute: wait less than that for DuckDB's lock.
    return DatasetChannel(warehouse=WarehouseResource(url=url, lock_timeout_seconds=20))


@dataclass(frozen=True)
class Channel:
    """How one reporter kind is shown (its target, variables by name only) and built."""

    target: Callable[[Any], str]
    make: Callable[[Any, "_Context"], AlertChannel]


@dataclass(frozen=True)
class _Context:
    """What a channel is built with besides its spec: the workflow (mail reads its smtp
    connection), the label naming it in errors, shared HTTP settings and the warehouse URL."""

    workflow: spec.Workflow
    what: str
    http: dict[str, Any]
    warehouse_url: Callable[[], str]


def _slack(alert: spec.SlackAlert, c: _Context) -> AlertChannel:
    # slack_sdk and dagster-slack load with the first Slack alert, not with every run.
    from resources.channels.slack import SlackChannel

    return SlackChannel(token=_env(alert.token, c.what), channel=alert.channel,
                        base_url=alert.base_url, **c.http)


def _mail(alert: spec.MailAlert, c: _Context) -> AlertChannel:
    connection = c.workflow.connections[alert.connection]
    assert isinstance(connection, spec.SmtpConnection)  # checked by the loader
    return MailChannel(smtp=_smtp(connection, c.what), to=alert.to, sms_to=alert.sms_to,
                       include_html=alert.html)


def _twilio(alert: spec.TwilioAlert, c: _Context) -> AlertChannel:
    return TwilioChannel(account_sid=_env(alert.account_sid, c.what),
                         auth_token=_env(alert.auth_token, c.what), from_number=alert.from_,
                         to_numbers=alert.to, base_url=alert.base_url, **c.http)


def _teams(alert: spec.TeamsAlert, c: _Context) -> AlertChannel:
    return TeamsChannel(webhook_url=_env(alert.webhook_url, c.what), **c.http)


def _webhook(alert: spec.WebhookAlert, c: _Context) -> AlertChannel:
    return WebhookChannel(url=_env(alert.url, c.what), secret=_env(alert.secret, c.what),
                          header=alert.header, **c.http)


def _shell(alert: spec.ShellAlert, c: _Context) -> AlertChannel:
    return ShellChannel(command=alert.command, timeout_seconds=alert.timeout_seconds,
                        env={k: _env(v, c.what) for k, v in alert.env.items()})


def _dataset(alert: spec.DatasetAlert, c: _Context) -> AlertChannel:
    # One per process and URL: the table is checked once and PostgreSQL's pool reused.
    return _dataset_channel(c.warehouse_url())


CHANNELS: Registry[Channel] = Registry("alert channel", spec.Alert, [
    Entry(spec.SlackAlert, Channel(lambda a: a.channel, _slack)),
    Entry(spec.MailAlert, Channel(lambda a: ", ".join(a.to + a.sms_to), _mail)),
    Entry(spec.TwilioAlert, Channel(lambda a: ", ".join(a.to), _twilio)),
    Entry(spec.TeamsAlert, Channel(lambda a: f"${a.webhook_url.env}", _teams)),
    Entry(spec.WebhookAlert, Channel(lambda a: f"${a.url.env}", _webhook)),
    Entry(spec.ShellAlert, Channel(lambda a: a.command[0], _shell)),
    Entry(spec.DatasetAlert, Channel(lambda a: "stagecoach.run_history", _dataset)),
])


def describe(name: str, alert: Any) -> str:
    """What the UI shows for a reporter: kind and target, variables by name only."""
    target = CHANNELS.build(alert).target(alert)
    return f"{name}: {alert.kind} {target} on {', '.join(alert.events)}"


def channel_factory(workflow: spec.Workflow, name: str, alert: Any,
                    warehouse_url: Callable[[], str]) -> ChannelFactory:
    """A function building reporter `name`'s channel, reading its variables when called."""
    http = ({k: getattr(alert, k) for k in ("retries", "backoff_seconds", "timeout_seconds",
                                             "ca_file", "verify_tls")}
            if isinstance(alert, spec.HttpReporter) else {})
    what = f"alert reporter {name!r} ({getattr(alert, 'kind', '?')})"
    context = _Context(workflow, what, http, warehouse_url)
    make = CHANNELS.build(alert).make
    return lambda: make(alert, context)
