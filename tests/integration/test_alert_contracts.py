"""The alert contracts the README documents, checked against what the channels really do:
`base_url` on Slack and Twilio (built from the README's own reporter entries, sent to a
recording server on loopback), the webhook signature (the README's verification snippet run
against a real signed alert) and the shell channel's STAGECOACH_ALERT_* variables."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from pathlib import Path

import pydantic
import pytest
import yaml

from assets import spec
from orchestration.alert_channels import channel_factory
from resources.channels.alerting import AlertMessage
from resources.channels.shell_channel import alert_environment
from resources.channels.webhook_channel import WebhookChannel
from tests import servers_http
from tests.servers_http import HttpRecorder, Reply

pytestmark = pytest.mark.timeout(120)
http_recorder = servers_http.http_recorder
README = (Path(__file__).resolve().parents[2] / "docs" / "alerting.md").read_text(encoding="utf-8")
ALERTS = README.split("## `alerts`\n", 1)[1].split("\n## ", 1)[0]


def readme_reporters() -> dict:
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", ALERTS, re.S) if "alerts:" in b]
    return yaml.safe_load(block)["alerts"]


def readme_python(containing: str) -> str:
    for _indent, code in re.findall(r"^( *)```python\n(.*?)^\1```", ALERTS, re.S | re.M):
        if containing in code:
            return textwrap.dedent(code)
    raise AssertionError(f"no python block with {containing!r} in the README's alerts section")


def reporter(name: str, **overrides: object):
    """The README's reporter `name`, with `overrides`, as the loader validates it."""
    entry = {**readme_reporters()[name], **overrides}
    return pydantic.TypeAdapter(spec.Alert).validate_python(entry)


def message() -> AlertMessage:
    return AlertMessage(event="failure", workflow="acme_retail", title="nightly failed",
                        text="Step load_orders failed.", job="acme_retail_nightly_job",
                        run_id="5f1c2a9e-0b7d-4a51-9c3e-2f8d6b1e4a70", status="FAILURE",
                        duration_seconds=12.5, failed_step="load_orders", error="ValueError",
                        run_url="http://127.0.0.1:3000/runs/5f1c2a9e")


def send(name: str, alert_spec: object) -> None:
    channel_factory(None, name, alert_spec, lambda: "")().send_alert(message())  # type: ignore


def test_the_documented_base_url_defaults_are_the_real_ones():
    assert reporter("data_team_slack").base_url == spec.SlackAlert.model_fields[
        "base_url"].default == readme_reporters()["data_team_slack"]["base_url"]
    assert reporter("pager").base_url == spec.TwilioAlert.model_fields["base_url"].default


def test_slack_base_url_points_the_channel_elsewhere(http_recorder: HttpRecorder,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-0001")
    path = http_recorder.unique_path("slack")
    http_recorder.script(f"{path}/chat.postMessage", then=Reply(200, {"ok": True, "ts": "1.2"}))
    send("data_team_slack", reporter("data_team_slack", base_url=f"{http_recorder.url}{path}/"))
    [request] = http_recorder.requests(f"{path}/chat.postMessage")
    assert request.headers["Authorization"] == "Bearer xoxb-test-0001"
    assert "#data-alerts" in request.body.decode()


def test_twilio_base_url_points_the_channel_elsewhere(http_recorder: HttpRecorder,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-test-0001")
    path = http_recorder.unique_path("twilio")
    messages = f"{path}/2010-04-01/Accounts/AC0123456789/Messages.json"
    http_recorder.script(messages, then=Reply(201, {"sid": "SM1", "status": "queued"}))
    send("pager", reporter("pager", base_url=f"{http_recorder.url}{path}"))
    [request] = http_recorder.requests(messages)
    assert "To=%2B15555550199" in request.body.decode()


def test_the_readme_snippet_verifies_a_real_signed_alert(http_recorder: HttpRecorder,
                                                         monkeypatch: pytest.MonkeyPatch):
    namespace: dict = {}
    exec(readme_python("def verify("), namespace)  # the documented receiver, as written
    verify = namespace["verify"]
    path = http_recorder.unique_path("hook")
    monkeypatch.setenv("OPS_HOOK_URL", f"{http_recorder.url}{path}")
    monkeypatch.setenv("OPS_HOOK_SECRET", "s3cret-for-the-hook")
    send("ops_hook", reporter("ops_hook"))
    [request] = http_recorder.requests(path)
    assert verify("s3cret-for-the-hook", request.headers, request.body)
    assert not verify("another-secret", request.headers, request.body)
    assert not verify("s3cret-for-the-hook", request.headers, request.body + b" ")
    channel = WebhookChannel(url="http://127.0.0.1:9/", secret="s3cret-for-the-hook")
    stale = channel.signed_headers(request.body, now=time.time() - 600)
    assert not verify("s3cret-for-the-hook", stale, request.body)  # a replay, 10 minutes on
    assert verify("s3cret-for-the-hook", channel.signed_headers(request.body), request.body)


DUMP_ENV = ("import json, os, sys; json.dump({'env': dict(os.environ), 'stdin': "
            "json.load(sys.stdin)}, open(sys.argv[1], 'w'))")


def test_the_shell_channel_sets_exactly_the_documented_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bullet = ALERTS.split("- **Shell commands**", 1)[1].split("\n- **", 1)[0]
    documented = set(re.findall(r"`(STAGECOACH_ALERT_[A-Z_]+)`", bullet))
    assert documented == set(alert_environment(message()))
    out = tmp_path / "seen.json"
    monkeypatch.setenv("PAGER_KEY", "pager-key-0001")
    monkeypatch.setenv("WAREHOUSE_TOKEN", "not-for-scripts")
    send("script", reporter("script", command=[sys.executable, "-c", DUMP_ENV, str(out)]))
    seen = json.loads(out.read_text())
    given = {k: v for k, v in seen["env"].items() if k.startswith("STAGECOACH_ALERT_")}
    assert set(given) == documented
    assert given["STAGECOACH_ALERT_RUN_ID"] == "5f1c2a9e-0b7d-4a51-9c3e-2f8d6b1e4a70"
    assert given["STAGECOACH_ALERT_DURATION_SECONDS"] == "12.5"
    assert seen["env"]["PAGER_KEY"] == "pager-key-0001"  # the reporter's `env`
    assert "WAREHOUSE_TOKEN" not in seen["env"]  # the worker's secrets are withheld
    assert seen["stdin"] == json.loads(json.dumps(message().as_dict(), default=str))
