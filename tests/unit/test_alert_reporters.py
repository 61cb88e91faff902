"""Spec reporters → channels: every setting of the spec reaches the channel, variables are read
when the channel is built (and a missing one names itself)."""

from __future__ import annotations

import pytest

from orchestration.alert_channels import channel_factory
from orchestration.spec_loader import load_workflow_text
from resources.channels.alerting import AlertDeliveryError

SPEC = """
workflow: {name: rep}
connections:
  mailer: {kind: smtp, host: smtp.acme.test, port: 2525, security: starttls,
           from_address: a@acme.test, ca_file: /etc/ssl/acme.pem, verify_tls: false,
           password: {env: REP_SMTP_PASSWORD}, username: ops}
alerts:
  hook: {kind: webhook, url: {env: REP_HOOK_URL}, ca_file: /etc/ssl/acme.pem,
         verify_tls: false, retries: 1, timeout_seconds: 2}
  slack: {kind: slack, channel: "#ops", token: {env: REP_SLACK}, verify_tls: false}
  mail: {kind: mail, connection: mailer, to: [ops@acme.test]}
"""


def channel(name: str):
    workflow = load_workflow_text(SPEC)
    return channel_factory(workflow, name, workflow.alerts[name], lambda: "duckdb:///:memory:")()


def test_settings_reach_the_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REP_HOOK_URL", "https://hooks.acme.test/x")
    monkeypatch.setenv("REP_SLACK", "xoxb-1")
    monkeypatch.setenv("REP_SMTP_PASSWORD", "pw")
    hook = channel("hook")
    assert (hook.url, hook.ca_file, hook.verify_tls, hook.retries, hook.timeout_seconds) == (
        "https://hooks.acme.test/x", "/etc/ssl/acme.pem", False, 1, 2)
    assert channel("slack").verify_tls is False
    smtp = channel("mail").smtp
    assert (smtp.host, smtp.port, smtp.ca_file, smtp.verify_tls, smtp.password) == (
        "smtp.acme.test", 2525, "/etc/ssl/acme.pem", False, "pw")


def test_a_missing_variable_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REP_HOOK_URL", raising=False)
    with pytest.raises(AlertDeliveryError, match="REP_HOOK_URL is not set"):
        channel("hook")
