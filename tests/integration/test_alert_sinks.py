"""The alert channels against real things: mail and SMS through the aiosmtpd servers, a real
command in a real process group, the run-history table on DuckDB and PostgreSQL; and the alert
templates they all carry.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest

from resources.bookkeeping.run_history import SCHEMA, TABLE, DatasetChannel, RunHistory
from resources.channels.alert_mail import MailChannel
from resources.channels.alert_templates import (
    DEFAULT_TEMPLATES,
    EVENTS,
    SAMPLE_DETAILS,
    SAMPLE_VALUES,
    check_overrides,
    human_duration,
    render_alert,
)
from resources.channels.alerting import AlertChannel, AlertDeliveryError, AlertMessage
from resources.channels.shell_channel import VALUE_MAX_CHARS, ShellChannel, looks_secret
from resources.warehouse import WarehouseResource
from tests import servers_mail
from tests.servers_mail import REFUSED_DOMAIN, ReceivedMail, SmtpServer

pytestmark = pytest.mark.timeout(120)

# the shared servers' fixtures, made visible to this module's tests
smtp_tls_files = servers_mail.smtp_tls_files
smtp_plain = servers_mail.smtp_plain
smtp_starttls = servers_mail.smtp_starttls

RUN_ID = "8f14e45f-ceea-467f-a0e6-5f2b3c1d9e21"
RUN_URL = f"http://dagster.example/runs/{RUN_ID}"
ERROR = ("TransferError: sftp 10.0.0.5:22 upload orders.csv: connection reset\n"
         "  at deliver_orders\n  line 3\n  line 4\n  line 5\n  line 6 is left off\n")


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}@example.com"


def full_error(error: BaseException) -> str:
    """The text Dagster would show: message, cause chain and traceback."""
    return "".join(traceback.format_exception(error))


def failure(workflow: str = "acme_retail", **changes: Any) -> AlertMessage:
    """A failure alert as the run-status sensor builds it: rendered from the default templates."""
    values = {"workflow": workflow, "job": f"{workflow}_nightly_job", "run_id": RUN_ID,
              "status": "FAILURE", "duration_seconds": 5520.5,
              "failed_step": "deliver_orders", "error": ERROR, "run_url": RUN_URL}
    title, text = render_alert("failure", values)
    fields = {**values, "error": ERROR.splitlines()[0], "title": title, "text": text,
              "details": {"attempt": 2}}
    return AlertMessage(event="failure", **{**fields, **changes})


def arrived(server: SmtpServer, address: str) -> list[ReceivedMail]:
    return [mail for mail in server.all_received() if address in mail.rcpt_tos]


def plain_body(mail: ReceivedMail) -> str:
    part = mail.message().get_body(preferencelist=("plain",))
    return part.get_content().replace("\r\n", "\n")


# ---------------------------------------------------------------- mail and SMS


def test_mail_alert_carries_text_and_facts(smtp_plain: SmtpServer) -> None:
    to, sms = [unique("ops"), unique("data")], f"5551234567@txt.{secrets.token_hex(3)}.example"
    channel = MailChannel(smtp=smtp_plain.resource(), to=to, sms_to=[sms])
    message = failure()
    channel.send_alert(message)

    [mail] = arrived(smtp_plain, to[0])
    assert list(mail.rcpt_tos) == to
    parsed = mail.message()
    assert parsed["Subject"] == "acme_retail_nightly_job failed" == message.title
    assert plain_body(mail) == (
        "Workflow acme_retail: acme_retail_nightly_job failed at step deliver_orders after "
        "1h 32m.\n\n"
        "TransferError: sftp 10.0.0.5:22 upload orders.csv: connection reset\n"
        "  at deliver_orders\n  line 3\n  line 4\n  line 5\n...\n\n"
        "Workflow:    acme_retail\n"
        "Job:         acme_retail_nightly_job\n"
        f"Run id:      {RUN_ID}\n"
        "Status:      FAILURE\n"
        "Duration:    1h 32m\n"
        "Failed step: deliver_orders\n"
        f"Run URL:     {RUN_URL}\n"
        "Error:\n"
        "    TransferError: sftp 10.0.0.5:22 upload orders.csv: connection reset\n")
    page = parsed.get_body(preferencelist=("html",)).get_content()
    assert f'<a href="{RUN_URL}">{RUN_URL}</a>' in page
    assert "<th align=\"left\">Failed step</th><td>deliver_orders</td>" in page

    [text_message] = arrived(smtp_plain, sms)
    assert list(text_message.rcpt_tos) == [sms]
    sms_part = text_message.message()
    assert not sms_part.is_multipart() and sms_part.get_content_type() == "text/plain"
    assert sms_part["Subject"] == ""
    body = sms_part.get_content().strip()
    assert body == ("acme_retail_nightly_job failed: Workflow acme_retail: "
                    "acme_retail_nightly_job failed at step deliver_orders after 1h 32m.")
    assert len(body) <= 160  # and the text's first line only: no error, no facts

    long_sms = f"5557654321@txt.{secrets.token_hex(3)}.example"
    MailChannel(smtp=smtp_plain.resource(), to=[], sms_to=[long_sms]).send_alert(
        failure(text="x " * 200))
    [cut] = arrived(smtp_plain, long_sms)
    body = cut.message().get_content().strip()
    assert len(body) == 160 and body.endswith("...") and body.startswith("acme_retail_nig")


def test_html_is_escaped_and_optional(smtp_plain: SmtpServer) -> None:
    to = unique("ops")
    message = failure(workflow="w", text="<script>alert(1)</script> & more",
                      run_url="javascript:alert(1)", error="<b>bad</b>")
    MailChannel(smtp=smtp_plain.resource(), to=[to]).send_alert(message)
    page = arrived(smtp_plain, to)[0].message().get_body(preferencelist=("html",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<pre>&lt;b&gt;bad&lt;/b&gt;</pre>" in page
    assert "<script>" not in page and "<a href" not in page  # javascript: is never a link

    plain_only = unique("ops")
    MailChannel(smtp=smtp_plain.resource(), to=[plain_only], include_html=False
                ).send_alert(message)
    parsed = arrived(smtp_plain, plain_only)[0].message()
    assert not parsed.is_multipart() and parsed.get_content_type() == "text/plain"


def test_mail_channel_in_a_run_with_a_secret_password(smtp_starttls: SmtpServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SmtpResource nests in MailChannel as a resource field, its password from the env."""
    monkeypatch.setenv("STAGECOACH_TEST_SMTP_PASSWORD", smtp_starttls.password or "")
    to = unique("ops")
    channel = MailChannel(smtp=smtp_starttls.resource(
        password=dg.EnvVar("STAGECOACH_TEST_SMTP_PASSWORD")), to=[to])

    @dg.asset
    def alerted(alerts: MailChannel) -> None:
        alerts.send_alert(failure())

    result = dg.materialize([alerted], resources={"alerts": channel},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert len(arrived(smtp_starttls, to)) == 1
    assert to in channel.describe() and str(smtp_starttls.port) in channel.describe()


def test_wrong_password_names_server_never_password(smtp_starttls: SmtpServer) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    channel = MailChannel(smtp=smtp_starttls.resource(password=wrong), to=[unique("ops")])
    with pytest.raises(AlertDeliveryError) as caught:
        channel.send_alert(failure())
    text = str(caught.value)
    assert f"127.0.0.1:{smtp_starttls.port}" in text and "535" in text
    assert "not delivered" in text and "'acme_retail_nightly_job failed'" in text
    assert wrong not in full_error(caught.value)


def test_a_refused_sms_says_the_mail_went(smtp_plain: SmtpServer) -> None:
    to = unique("ops")
    channel = MailChannel(smtp=smtp_plain.resource(), to=[to],
                          sms_to=[f"5550000000@{REFUSED_DOMAIN}"])
    with pytest.raises(AlertDeliveryError, match=r"not delivered \(the mail was sent\) via "
                                                 rf"smtp 127\.0\.0\.1:{smtp_plain.port}: SMS: "
                                                 r".*RCPT TO.*550"):
        channel.send_alert(failure())
    assert len(arrived(smtp_plain, to)) == 1


def test_no_recipients_at_all(smtp_plain: SmtpServer) -> None:
    with pytest.raises(AlertDeliveryError, match="no recipients"):
        MailChannel(smtp=smtp_plain.resource(), to=[]).send_alert(failure())


# ---------------------------------------------------------------- shell command

RECORDER = """\
import json, os, sys
payload = sys.stdin.read()
with open(sys.argv[1], "w") as out:
    json.dump({"env": dict(os.environ), "stdin": payload, "cwd": os.getcwd()}, out)
"""


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[list[str], Path]:
    script, out = tmp_path / "record_alert.py", tmp_path / "seen.json"
    script.write_text(RECORDER)
    return [sys.executable, str(script), str(out)], out


def test_command_gets_the_alert_as_env_and_json(recorder: tuple[list[str], Path],
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    command, out = recorder
    monkeypatch.setenv("ACME_API_TOKEN", "tok-should-not-pass")
    monkeypatch.setenv("SMTP_PASSWORD", "pw-should-not-pass")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "key-should-not-pass")
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("PAGER_API_KEY", "passed-on-purpose")
    monkeypatch.setenv("STAGECOACH_TEST_PLAIN", "plain value")
    channel = ShellChannel(command=command, env={"TEAM": "data"},
                           pass_env=["PAGER_API_KEY"], cwd=str(tmp_path))
    message = failure()
    channel.send_alert(message)

    seen = json.loads(out.read_text())
    alert_vars = {k: v for k, v in seen["env"].items() if k.startswith("STAGECOACH_ALERT_")}
    assert alert_vars == {
        "STAGECOACH_ALERT_EVENT": "failure",
        "STAGECOACH_ALERT_WORKFLOW": "acme_retail",
        "STAGECOACH_ALERT_JOB": "acme_retail_nightly_job",
        "STAGECOACH_ALERT_RUN_ID": RUN_ID,
        "STAGECOACH_ALERT_STATUS": "FAILURE",
        "STAGECOACH_ALERT_TITLE": "acme_retail_nightly_job failed",
        "STAGECOACH_ALERT_TEXT": message.text,
        "STAGECOACH_ALERT_ERROR": ERROR.splitlines()[0],
        "STAGECOACH_ALERT_RUN_URL": RUN_URL,
        "STAGECOACH_ALERT_DURATION_SECONDS": "5520.5",
    }
    assert json.loads(seen["stdin"]) == message.as_dict()
    env = seen["env"]
    for secret in ("ACME_API_TOKEN", "SMTP_PASSWORD", "AWS_SECRET_ACCESS_KEY",
                   "STAGECOACH_WAREHOUSE_URL"):
        assert secret not in env
    assert not any("should-not-pass" in value for value in env.values())
    assert env["PAGER_API_KEY"] == "passed-on-purpose"
    assert env["STAGECOACH_TEST_PLAIN"] == "plain value" and env["TEAM"] == "data"
    assert env["PATH"] == os.environ["PATH"]
    assert Path(seen["cwd"]) == tmp_path


def test_empty_and_unsafe_values(recorder: tuple[list[str], Path]) -> None:
    command, out = recorder
    message = AlertMessage(event="sensor_error", workflow="w", title="t",
                           text="a\x00b" + "x" * (VALUE_MAX_CHARS * 2))
    ShellChannel(command=command).send_alert(message)
    env = json.loads(out.read_text())["env"]
    assert env["STAGECOACH_ALERT_JOB"] == "" and env["STAGECOACH_ALERT_DURATION_SECONDS"] == ""
    text = env["STAGECOACH_ALERT_TEXT"]
    assert text.startswith("abxxx") and len(text) == VALUE_MAX_CHARS and text.endswith("...")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; echo waiting >&2; sleep 30"
    channel = ShellChannel(command=["sh", "-c", script], timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError) as caught:
        channel.send_alert(failure())
    assert time.monotonic() - started < 8
    text = str(caught.value)
    assert text.startswith("shell command sh for alert 'acme_retail_nightly_job failed': "
                           "did not finish within 1 s; its process group was killed")
    assert text.endswith("stderr: waiting")
    time.sleep(0.2)
    for pid in map(int, pids.read_text().split()):
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, f"process {pid} outlived the timeout"


def test_failing_command_reports_code_and_stderr_tail(tmp_path: Path) -> None:
    script = ("import sys\n"
              "sys.stderr.write('early noise ' * 500)\n"
              "sys.stderr.write('\\npager refused: HTTP 403 for token tok-abcdef\\n')\n"
              "sys.exit(3)\n")
    channel = ShellChannel(command=[sys.executable, "-c", script],
                           env={"PAGER_TOKEN": "tok-abcdef"})
    with pytest.raises(AlertDeliveryError) as caught:
        channel.send_alert(failure())
    text = str(caught.value)
    assert "shell command " in text and "exited with code 3" in text
    assert text.endswith("pager refused: HTTP 403 for token ***")
    assert "tok-abcdef" not in full_error(caught.value)
    tail = text.partition("stderr: ")[2]
    assert tail.startswith("...") and len(tail.encode()) <= 2048 + 3


def test_killed_and_missing_commands(tmp_path: Path) -> None:
    with pytest.raises(AlertDeliveryError, match="was killed by signal 9; no output"):
        ShellChannel(command=["sh", "-c", "kill -9 $$"]).send_alert(failure())
    with pytest.raises(AlertDeliveryError, match=r"stdout: only stdout"):
        ShellChannel(command=["sh", "-c", "echo only stdout; exit 1"]).send_alert(failure())
    missing = str(tmp_path / "no-such-script")
    with pytest.raises(AlertDeliveryError, match=f"cannot start {missing}: No such file"):
        ShellChannel(command=[missing]).send_alert(failure())


def test_bad_shell_settings_fail_when_configured() -> None:
    with pytest.raises(Exception, match="command must name a program"):
        ShellChannel(command=[])
    with pytest.raises(Exception, match="not valid variable names"):
        ShellChannel(command=["true"], env={"BAD=NAME": "x"})
    assert looks_secret("db_password") and looks_secret("GITHUB_TOKEN")
    assert not looks_secret("PATH") and not looks_secret("HOME")


# ---------------------------------------------------------------- run history (dataset)

NASTY = "O'Brien's \"quoted\" title'; drop table stagecoach.run_history; --"


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest) -> WarehouseResource:
    if request.param == "duckdb":
        root = request.getfixturevalue("stagecoach_env")
        return WarehouseResource(url=f"duckdb:///{root / 'data' / 'warehouse.duckdb'}")
    return WarehouseResource(url=request.getfixturevalue("postgres_url"))


def test_alerts_and_runs_are_appended_and_read_back(warehouse: WarehouseResource) -> None:
    workflow = f"wf_{secrets.token_hex(3)}"  # PostgreSQL's database is shared by the session
    channel = DatasetChannel(warehouse=warehouse)
    message = failure(workflow=workflow, title=NASTY, details={"files": ["a.csv"], "n": 2})
    channel.send_alert(message)
    run = channel.record_run(workflow, f"{workflow}_nightly_job", RUN_ID, "FAILURE",
                             started_at=1_700_000_000.0, ended_at=1_700_005_520.5,
                             failed_step="deliver_orders", error="boom",
                             tags={"dagster/schedule_name": "nightly"})
    RunHistory(warehouse).record_alert(failure(workflow="another_workflow"))

    history = RunHistory(warehouse)
    latest, alert = history.recent(workflow)
    assert latest == run
    assert (latest.kind, latest.event, latest.status) == ("run", "failure", "FAILURE")
    assert latest.duration_seconds == 5520.5
    assert latest.started_at.isoformat() == "2023-11-14T22:13:20"
    assert latest.details == {"tags": {"dagster/schedule_name": "nightly"}}

    assert alert.kind == "alert" and alert.event == "failure" and alert.workflow == workflow
    assert alert.title == NASTY  # stored verbatim: bound, never pasted into SQL
    assert (alert.run_id, alert.failed_step, alert.duration_seconds) == (
        RUN_ID, "deliver_orders", 5520.5)
    assert alert.error == ERROR.splitlines()[0]
    assert alert.details == {"text": message.text, "run_url": RUN_URL,
                             "details": {"files": ["a.csv"], "n": 2}}
    assert alert.started_at is None and alert.recorded_at <= latest.recorded_at
    assert warehouse.has_table(SCHEMA, TABLE)
    assert {r.workflow for r in history.recent(limit=1000)} >= {workflow, "another_workflow"}
    assert len(history.recent(limit=1)) == 1
    assert channel.describe().startswith("dataset stagecoach.run_history (")


def test_old_table_gains_new_columns(stagecoach_env: Path) -> None:
    warehouse = WarehouseResource(url=f"duckdb:///{stagecoach_env / 'data' / 'wh.duckdb'}")
    warehouse.execute("an older table",
                      ('CREATE SCHEMA "stagecoach"', None),
                      ('CREATE TABLE "stagecoach"."run_history" ("id" TEXT PRIMARY KEY, '
                       '"recorded_at" TIMESTAMP, "kind" TEXT, "workflow" TEXT)', None),
                      ("INSERT INTO \"stagecoach\".\"run_history\" VALUES "
                       "('old1', TIMESTAMP '2026-01-01 00:00:00', 'run', 'w')", None))
    history = RunHistory(warehouse)
    history.record_alert(failure(workflow="w"))
    new, old = history.recent("w")
    assert new.title == "w_nightly_job failed" and new.kind == "alert"
    assert old.id == "old1" and old.title is None and old.details == {}


def test_unreachable_warehouse_hides_the_password() -> None:
    with socket.socket() as probe:  # bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        password = f"pw-{secrets.token_hex(6)}"
        channel = DatasetChannel(warehouse=WarehouseResource(
            url=f"postgresql+psycopg2://u:{password}@127.0.0.1:{port}/db"))
        with pytest.raises(AlertDeliveryError,
                           match=r"dataset stagecoach\.run_history") as caught:
            channel.send_alert(failure())
    assert password not in full_error(caught.value)
    assert password not in channel.describe()


def test_every_channel_is_an_alert_channel(smtp_plain: SmtpServer, tmp_path: Path) -> None:
    channels: list[AlertChannel] = [
        MailChannel(smtp=smtp_plain.resource(), to=[unique("ops")]),
        ShellChannel(command=["true", "--token", "tok-secret"]),
        DatasetChannel(warehouse=WarehouseResource(url=f"duckdb:///{tmp_path / 'w.duckdb'}")),
    ]
    for channel in channels:
        channel.send_alert(failure())
        assert channel.describe() and "tok-secret" not in channel.describe()


# ---------------------------------------------------------------- templates


EXPECTED_DEFAULTS = {
    "start": ("acme_retail_nightly_job started",
              f"Workflow acme_retail: acme_retail_nightly_job started (run {RUN_ID})."),
    "success": ("acme_retail_nightly_job succeeded",
                "Workflow acme_retail: acme_retail_nightly_job succeeded in 1h 32m."),
    "failure": ("acme_retail_nightly_job failed",
                "Workflow acme_retail: acme_retail_nightly_job failed at step deliver_orders "
                "after 1h 32m.\n\nTransferError: sftp 10.0.0.5:22 upload orders.csv: "
                "connection reset"),
    "runtime_exceeded": ("acme_retail_nightly_job is running long",
                         "Workflow acme_retail: acme_retail_nightly_job has been running for "
                         "1h 32m, past its limit of 1h 30m."),
    "missing_files": ("acme_retail: expected files are missing",
                      "Workflow acme_retail: 2 expected files did not arrive in sftp "
                      "inbound/acme by 07:00.\n- orders_20261102.csv\n- stores_20261102.csv"),
    "alarm": ("acme_retail: alarm row_count_drop",
              "Workflow acme_retail: alarm row_count_drop raised: value 12 (threshold 1000).\n"
              "fewer rows than usual"),
    "sensor_error": ("acme_retail: sensor acme_retail_orders_sensor failed",
                     "Workflow acme_retail: the sensor acme_retail_orders_sensor failed and will "
                     "try again at its next tick.\n\nTransferError: sftp 10.0.0.5:22 upload "
                     "orders.csv: connection reset"),
}


@pytest.mark.parametrize("event", EVENTS)
def test_default_templates(event: str) -> None:
    values = {**SAMPLE_VALUES, "details": SAMPLE_DETAILS.get(event, {})}
    assert render_alert(event, values) == EXPECTED_DEFAULTS[event]
    title, text = render_alert(event, {"workflow": "w"})  # every other value missing
    assert title.startswith("w") and "\n" not in title and text.startswith("Workflow w: ")
    assert "None" not in title + text and "  " not in title + text
    assert set(DEFAULT_TEMPLATES[event]) == {"title", "text"}


def test_values_are_made_readable() -> None:
    assert [human_duration(s) for s in (0, 45, 60, 725, 3600, 5520, 90000, 86400)] == [
        "0s", "45s", "1m", "12m 5s", "1h", "1h 32m", "1d 1h", "1d"]
    _, text = render_alert("failure", {"workflow": "w", "error": ERROR})
    assert text.endswith("line 5\n...") and "line 6" not in text


def test_an_override_replaces_one_part() -> None:
    overrides = {"text": "{{ workflow | upper }} broke in {{ failed_step }}\n"
                         "{% if run_url %}\nSee {{ run_url }}\n{% endif %}\n"
                         "{% for name in details.get('files', []) %}* {{ name }}\n{% endfor %}"}
    title, text = render_alert("failure", {**SAMPLE_VALUES, "details": {"files": ["x", "y"]}},
                               overrides)
    assert title == "acme_retail_nightly_job failed"  # the default
    assert text == f"ACME_RETAIL broke in deliver_orders\nSee {SAMPLE_VALUES['run_url']}\n" \
                   "* x\n* y"
    title, _ = render_alert("start", SAMPLE_VALUES, {"title": "[{{ status }}]\n {{ job }}  "})
    assert title == "[FAILURE] acme_retail_nightly_job"  # one line


@pytest.mark.parametrize(("event", "overrides", "message"), [
    ("failure", {"text": "{{ workflow "},
     "alert template 'text' for event 'failure': syntax error on line 1: unexpected end of "
     "template"),
    ("success", {"title": "{{ wokflow }} ok"},
     "alert template 'title' for event 'success': 'wokflow' is undefined; the variables are "
     "event, workflow, job"),
    ("alarm", {"text": "{{ details.threshhold }}"},
     "alert template 'text' for event 'alarm': 'dict object' has no attribute 'threshhold'"),
    ("start", {"text": "{{ workflow.__class__.__mro__ }}"},
     "alert template 'text' for event 'start': not allowed in an alert template: access to "
     "attribute '__class__'"),
    ("start", {"text": "{{ details.clear() }}"},
     "alert template 'text' for event 'start': not allowed in an alert template"),
    ("start", {"title": "{% if false %}x{% endif %}"},
     "alert template 'title' for event 'start' renders empty text"),
    ("start", {"body": "x"},
     "alert templates for event 'start': unknown part 'body'; a template overrides 'title' "
     "or 'text'"),
    ("crash", None, "unknown alert event 'crash'; the events are start, success, failure"),
])
def test_broken_overrides_are_named(event: str, overrides: dict[str, str] | None,
                                    message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_overrides(event, overrides)
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.__cause__ is None
