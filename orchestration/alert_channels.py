"""Spec reporters → the alert channels in resources/, built when an alert is sent.

A channel is built per alert, with its environment variables read then: a reporter whose
variable is missing fails alone, with the variable's name, and the workflow's other reporters
still send (a Dagster resource with a missing EnvVar would fail the whole sensor instead).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from assets import spec
from resources.alert_mail import MailChannel
from resources.alerting import AlertChannel, AlertDeliveryError
from resources.mail import SmtpResource
from resources.run_history import DatasetChannel
from resources.shell_channel import ShellChannel
from resources.slack import SlackChannel
from resources.teams import TeamsChannel
from resources.twilio import TwilioChannel
from resources.warehouse import WarehouseResource
from resources.webhook_channel import WebhookChannel

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


def describe(name: str, alert: Any) -> str:
    """What the UI shows for a reporter: kind and target, variables by name only."""
    target = {"slack": lambda: alert.channel, "mail": lambda: ", ".join(alert.to + alert.sms_to),
              "twilio": lambda: ", ".join(alert.to), "teams": lambda: f"${alert.webhook_url.env}",
              "webhook": lambda: f"${alert.url.env}", "shell": lambda: alert.command[0],
              "dataset": lambda: "stagecoach.run_history"}[alert.kind]()
    return f"{name}: {alert.kind} {target} on {', '.join(alert.events)}"


def channel_factory(workflow: spec.Workflow, name: str, alert: Any,
                    warehouse_url: Callable[[], str]) -> ChannelFactory:
    """A function building reporter `name`'s channel, reading its variables when called."""
    what = f"alert reporter {name!r} ({alert.kind})"

    http = ({k: getattr(alert, k) for k in ("retries", "backoff_seconds", "timeout_seconds",
                                             "ca_file", "verify_tls")}
            if isinstance(alert, spec.HttpReporter) else {})

    def build() -> AlertChannel:
        if isinstance(alert, spec.SlackAlert):
            return SlackChannel(token=_env(alert.token, what), channel=alert.channel,
                                base_url=alert.base_url, **http)
        if isinstance(alert, spec.MailAlert):
            connection = workflow.connections[alert.connection]
            assert isinstance(connection, spec.SmtpConnection)  # checked by the loader
            return MailChannel(smtp=_smtp(connection, what), to=alert.to, sms_to=alert.sms_to,
                               include_html=alert.html)
        if isinstance(alert, spec.TwilioAlert):
            return TwilioChannel(account_sid=_env(alert.account_sid, what),
                                 auth_token=_env(alert.auth_token, what),
                                 from_number=alert.from_, to_numbers=alert.to,
                                 base_url=alert.base_url, **http)
        if isinstance(alert, spec.TeamsAlert):
            return TeamsChannel(webhook_url=_env(alert.webhook_url, what), **http)
        if isinstance(alert, spec.WebhookAlert):
            return WebhookChannel(url=_env(alert.url, what), secret=_env(alert.secret, what),
                                  header=alert.header, **http)
        if isinstance(alert, spec.ShellAlert):
            return ShellChannel(command=alert.command, timeout_seconds=alert.timeout_seconds,
                                env={k: _env(v, what) for k, v in alert.env.items()})
        if isinstance(alert, spec.DatasetAlert):
            # One per process and URL: the table is checked once and PostgreSQL's pool reused.
            return _dataset_channel(warehouse_url())
        raise TypeError(f"no channel for alert kind {alert.kind!r}")

    return build
