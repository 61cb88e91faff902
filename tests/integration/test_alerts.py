"""Alert sensors on a real instance: real runs fail, succeed, are retried or run long, and each
reporter's real server (HTTP, SMTP, a command, the warehouse) receives exactly one alert.

The run-status sensors are evaluated as the daemon does: a first tick sets their cursor, later
ticks carry the cursor the previous one stored, so a second look must send nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import dagster as dg
import duckdb
import pytest

from orchestration.definitions import build_definitions
from resources import settings
from resources.bookkeeping.run_history import SCHEMA, TABLE
from resources.channels.webhook_channel import TIMESTAMP_HEADER
from sensors import alerts as alerts_module
from sensors.alert_ledger import (
    KEEP_SECONDS,
    PRUNE_EVERY_SECONDS,
    ledger_key,
    pruned_key,
    warehouse_ledger,
)
from tests import servers_http, servers_mail
from tests.conftest import fresh_database
from tests.servers_http import HttpRecorder, Reply, closed_port_url
from tests.servers_mail import SmtpServer

pytestmark = pytest.mark.timeout(180)

http_recorder = servers_http.http_recorder
smtp_plain = servers_mail.smtp_plain

WF = "al"
JOB = f"{WF}_load_job"
SLACK_OK = Reply(200, {"ok": True, "channel": "C0123ABCD", "ts": "1700000000.000100"})


@dataclass
class Setup:
    root: Path
    defs: dg.Definitions
    paths: dict[str, str]  # reporter → its path on the recorder
    secrets: dict[str, str]  # variable → value, none of which may show anywhere
    shell_out: Path
    smtp: SmtpServer

    def sensor(self, name: str) -> dg.SensorDefinition:
        return self.defs.resolve_sensor_def(name)


def write_spec(root: Path, recorder: HttpRecorder, smtp: SmtpServer, alerts: str,
               extra: str = "") -> None:
    (root / "landing").mkdir(exist_ok=True)
    (root / "workflows").mkdir(exist_ok=True)
    (root / "workflows" / f"{WF}.yaml").write_text(f"""
workflow: {{name: {WF}}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
  mailer: {{kind: smtp, host: 127.0.0.1, port: {smtp.port}, security: none,
            from_address: alerts@acme.test}}
{extra}
  slow_db: {{kind: sql, url: {{env: SLOW_DB_URL}}}}
couriers:
  orders: {{from: landing, path: orders.csv}}
  slow: {{from: slow_db, query: "select 1 as id from pg_sleep(4)"}}
courier_groups:
  load: {{couriers: [orders], run: load}}
  slow: {{couriers: [slow], run: load, duration_alert: 1s}}
alerts:
{alerts}
""", encoding="utf-8")


@pytest.fixture
def setup(stagecoach_env: Path, http_recorder: HttpRecorder, smtp_plain: SmtpServer,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    root = stagecoach_env
    paths = {name: http_recorder.unique_path(name) for name in ("hook", "slack", "teams")}
    twilio = http_recorder.unique_path("twilio")
    paths["twilio"] = f"{twilio}/2010-04-01/Accounts/AC123/Messages.json"
    http_recorder.script(f"{paths['slack']}/chat.postMessage", then=SLACK_OK)
    http_recorder.script(paths["twilio"], then=Reply(201, {"sid": "SM1", "status": "queued"}))
    values = {"HOOK_URL": f"{http_recorder.url}{paths['hook']}?token=hook-{secrets.token_hex(8)}",
              "HOOK_SECRET": f"sign-{secrets.token_hex(8)}",
              "SLACK_TOKEN": f"xoxb-{secrets.token_hex(12)}",
              "TEAMS_URL": f"{http_recorder.url}{paths['teams']}?sig=teams{secrets.token_hex(8)}",
              "TWILIO_TOKEN": f"tw-{secrets.token_hex(12)}",
              "DOWN_URL": closed_port_url() + "/down"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(settings.UI_URL_ENV, "http://dagster.acme.test/")
    shell_out = root / "shell_alerts.jsonl"
    write = ("import os, sys; open(os.environ['OUT'], 'a').write("
             "sys.stdin.read().replace(chr(10), ' ') + chr(10))")
    alerts = f"""
  down:   # first, so the ones after it show that one bad channel blocks nothing
    kind: webhook
    url: {{env: DOWN_URL}}
    send_on: [failure]
    retries: 0
  unset:
    kind: slack
    channel: "#nowhere"
    token: {{env: NEVER_SET_TOKEN}}
    send_on: [failure]
  hook:
    kind: webhook
    url: {{env: HOOK_URL}}
    secret: {{env: HOOK_SECRET}}
    send_on: always
    backoff_seconds: 0.05
  slack:
    kind: slack
    channel: "#data-alerts"
    token: {{env: SLACK_TOKEN}}
    base_url: {http_recorder.url}{paths['slack']}/
    send_on: [failure]
    jobs: [load]
    templates:
      failure: {{title: "PAGE {{{{ job }}}}"}}
  teams:
    kind: teams
    webhook_url: {{env: TEAMS_URL}}
    send_on: [failure]
    jobs: [workflow]   # not the load group: must stay silent
  sms:
    kind: twilio
    account_sid: AC123
    auth_token: {{env: TWILIO_TOKEN}}
    from: "+15555550100"
    to: ["+15555550199"]
    base_url: {http_recorder.url}{twilio}
    send_on: [failure]
  mail:
    kind: mail
    connection: mailer
    to: [oncall@acme.test]
    send_on: [failure, success]
  script:
    kind: shell
    command: [{sys.executable}, -c, "{write}"]
    env: {{OUT: {shell_out}}}
    send_on: [failure, runtime_exceeded]
  history:
    kind: dataset
"""
    write_spec(root, http_recorder, smtp_plain, alerts)
    monkeypatch.delenv("NEVER_SET_TOKEN", raising=False)
    yield Setup(root, build_definitions(root / "workflows"), paths, values, shell_out,
                smtp_plain)


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, defs: dg.Definitions,
         cursor: str | None) -> str | None:
    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
    return sensor.evaluate_tick(context).cursor


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance, job: str = JOB,
            **tags: str) -> dg.DagsterRun:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags,
                                                          raise_on_error=False)
    return instance.get_run_by_id(result.run_id)


def mails_to(smtp: SmtpServer, run_id: str) -> list:
    return [m for m in smtp.all_received() if run_id in m.content.decode("utf-8", "replace")]


def history_rows(root: Path, run_id: str) -> list[tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as db:
        return db.execute(f'select kind, event, status, failed_step from "{SCHEMA}"."{TABLE}" '
                          "where run_id = ? order by kind", [run_id]).fetchall()


def test_a_failed_run_reaches_every_reporter_once(setup: Setup, http_recorder: HttpRecorder,
                                                  capfd: pytest.CaptureFixture):
    sensor = setup.sensor(f"{WF}_run_failure_alert_sensor")
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, setup.defs, None)  # the daemon's first look
        run = run_job(setup.defs, instance)  # orders.csv is not there: the courier fails
        assert run.status == dg.DagsterRunStatus.FAILURE
        cursor = tick(sensor, instance, setup.defs, first)
        tick(sensor, instance, setup.defs, cursor)  # a second look sends nothing new
        # An evaluation Dagster timed out is run again from the old cursor: the ledger in the
        # instance skips what went out (the two broken reporters are simply tried again).
        tick(sensor, instance, setup.defs, first)

    [hook] = http_recorder.requests(setup.paths["hook"])
    body = hook.json()
    assert (body["event"], body["job"], body["run_id"], body["status"]) == (
        "failure", JOB, run.run_id, "FAILURE")
    assert body["failed_step"] == "courier__orders_file"
    assert "orders.csv" in body["error"] and "Traceback" not in body["error"]
    assert body["run_url"] == f"http://dagster.acme.test/runs/{run.run_id}"
    stamp = hook.headers[TIMESTAMP_HEADER]
    expected = hmac.new(setup.secrets["HOOK_SECRET"].encode(), stamp.encode() + b"." + hook.body,
                        hashlib.sha256).hexdigest()
    assert hook.headers["X-Stagecoach-Signature"] == f"sha256={expected}"

    [slack] = http_recorder.requests(f"{setup.paths['slack']}/chat.postMessage")
    assert slack.headers["Authorization"] == f"Bearer {setup.secrets['SLACK_TOKEN']}"
    posted = slack.json() if slack.body.startswith(b"{") else {
        k: v[0] for k, v in parse_qs(slack.body.decode()).items()}
    assert posted["channel"] == "#data-alerts"
    assert posted["text"].startswith(f"PAGE {JOB}\n")  # the spec's title template

    assert http_recorder.requests(setup.paths["teams"]) == []  # follows another job only
    [sms] = http_recorder.requests(setup.paths["twilio"])
    form = parse_qs(sms.body.decode())
    assert (form["To"], form["From"]) == (["+15555550199"], ["+15555550100"])
    assert form["Body"][0].startswith(f"{JOB} failed")

    [mail] = mails_to(setup.smtp, run.run_id)
    assert mail.rcpt_tos == ("oncall@acme.test",)
    assert mail.message()["Subject"] == f"{JOB} failed"

    [line] = setup.shell_out.read_text().splitlines()
    assert json.loads(line)["run_id"] == run.run_id

    assert history_rows(setup.root, run.run_id) == [
        ("alert", "failure", "FAILURE", "courier__orders_file"),
        ("run", "failure", "FAILURE", "courier__orders_file")]

    logged = "\n".join(capfd.readouterr())  # the sensor's log lines, as the daemon prints
    assert "failure alert not sent by reporter down" in logged
    assert "NEVER_SET_TOKEN is not set" in logged
    for name in ("hook", "slack", "sms", "mail", "script", "history"):
        assert f"failure alert sent by reporter {name} " in logged
    for value in setup.secrets.values():
        assert value.split("?")[-1] not in logged


def test_a_retried_run_alerts_after_its_last_attempt_and_a_good_retry_says_so(
        setup: Setup, http_recorder: HttpRecorder):
    failure = setup.sensor(f"{WF}_run_failure_alert_sensor")
    success = setup.sensor(f"{WF}_run_success_alert_sensor")
    retries = {"run_retries": {"enabled": True, "max_retries": 1}}
    with dg.instance_for_test(overrides=retries) as instance:
        failed_at, succeeded_at = (tick(s, instance, setup.defs, None) for s in (failure,
                                                                                 success))
        first = run_job(setup.defs, instance)
        assert first.tags["dagster/will_retry"] == "true"
        failed_at = tick(failure, instance, setup.defs, failed_at)
        assert http_recorder.requests(setup.paths["hook"]) == []  # a retry is coming

        # The last attempt: Dagster tags its failure will_retry=false. (The retry daemon's
        # count of the run group decides that in production; here its max_retries tag does.)
        lineage = {"dagster/parent_run_id": first.run_id, "dagster/root_run_id": first.run_id,
                   "dagster/retry_number": "1"}
        last = run_job(setup.defs, instance, **lineage, **{"dagster/max_retries": "0"})
        assert last.tags["dagster/will_retry"] == "false"
        tick(failure, instance, setup.defs, failed_at)
        [alert] = http_recorder.requests(setup.paths["hook"])
        assert (alert.json()["event"], alert.json()["run_id"]) == ("failure", last.run_id)

        (setup.root / "landing" / "orders.csv").write_text("id\n1\n")
        good = run_job(setup.defs, instance, **lineage)
        assert good.status == dg.DagsterRunStatus.SUCCESS
        tick(success, instance, setup.defs, succeeded_at)

    [_, note] = http_recorder.requests(setup.paths["hook"])
    assert note.json()["event"] == "success"
    assert "(on attempt 2, after 1 failed attempt)" in note.json()["text"]
    [mail] = mails_to(setup.smtp, good.run_id)
    assert mail.message()["Subject"] == f"{JOB} succeeded"
    assert history_rows(setup.root, good.run_id) == [("alert", "success", "SUCCESS", None),
                                                     ("run", "success", "SUCCESS", None)]
    # The attempt that was retried is a finished run, not an alert.
    assert history_rows(setup.root, first.run_id) == [("run", "failure", "FAILURE",
                                                       "courier__orders_file")]


def test_a_long_run_is_reported_once_and_goes_on(setup: Setup, http_recorder: HttpRecorder,
                                                 postgres_url: str,
                                                 monkeypatch: pytest.MonkeyPatch):
    """A courier whose query sleeps 4 s in PostgreSQL, past its group's 1 s duration_alert."""
    monkeypatch.setenv("SLOW_DB_URL", postgres_url)
    job = f"{WF}_slow_job"
    runtime = setup.sensor(f"{WF}_runtime_alert_sensor")
    with dg.instance_for_test() as instance:
        outcome: dict[str, dg.DagsterRun] = {}
        worker = threading.Thread(
            target=lambda: outcome.update(run=run_job(setup.defs, instance, job)))
        worker.start()
        deadline = time.monotonic() + 30
        while not instance.get_runs(filters=dg.RunsFilter(
                job_name=job, statuses=[dg.DagsterRunStatus.STARTED])):
            assert time.monotonic() < deadline and worker.is_alive(), "the run did not start"
            time.sleep(0.1)
        time.sleep(1.5)  # past the 1 s threshold, well before the 4 s query ends
        cursor = tick(runtime, instance, setup.defs, None)
        cursor = tick(runtime, instance, setup.defs, cursor)  # the same run: not again
        [reported] = json.loads(cursor or "[]")
        # Alerted, not stopped: no daemon runs here to act on a cancel request or a
        # `dagster/max_runtime` tag, so look for either on the run the sensor saw going.
        going = instance.get_run_by_id(reported)
        assert going.status == dg.DagsterRunStatus.STARTED
        assert "dagster/max_runtime" not in going.tags
        worker.join(60)
        run = outcome["run"]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert reported == run.run_id
        stops = {dg.DagsterEventType.RUN_CANCELING, dg.DagsterEventType.RUN_CANCELED}
        assert instance.get_records_for_run(run.run_id, of_type=stops).records == []
        assert json.loads(tick(runtime, instance, setup.defs, cursor) or "[]") == []

    [alert] = http_recorder.requests(setup.paths["hook"])
    body = alert.json()
    assert (body["event"], body["job"], body["run_id"], body["status"]) == (
        "runtime_exceeded", job, run.run_id, "STARTED")
    assert "past its limit of 1s" in body["text"]
    [line] = setup.shell_out.read_text().splitlines()
    assert json.loads(line)["event"] == "runtime_exceeded"


def test_a_failed_check_is_an_alarm(stagecoach_env: Path, http_recorder: HttpRecorder,
                                    monkeypatch: pytest.MonkeyPatch):
    root, path = stagecoach_env, http_recorder.unique_path("alarm")
    monkeypatch.setenv("ALARM_URL", f"{http_recorder.url}{path}")
    (root / "landing").mkdir()
    (root / "landing" / "orders.csv").write_text("id,amount\n1,10\n")
    (root / "workflows").mkdir()
    (root / "workflows" / "chk.yaml").write_text(f"""
workflow: {{name: chk}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
couriers:
  orders: {{from: landing, path: orders.csv}}
domain_tables:
  orders: {{from: orders, columns: {{id: {{tag: id}}, amount: {{tag: decimal}}}}}}
queries:
  big_orders:
    sql: "select * from domain.orders"
    checks: {{min_rows: 5}}
alerts:
  ops: {{kind: webhook, url: {{env: ALARM_URL}}, send_on: [alarm]}}
""")
    defs = build_definitions(root / "workflows")
    sensors = [defs.resolve_sensor_def(f"chk_run_{s}_alert_sensor") for s in ("success", "failure")]
    with dg.instance_for_test() as instance:
        cursors = [tick(s, instance, defs, None) for s in sensors]
        result = defs.resolve_job_def("chk_job").execute_in_process(instance=instance,
                                                                    raise_on_error=False)
        for sensor, cursor in zip(sensors, cursors, strict=True):
            cursor = tick(sensor, instance, defs, cursor)
            tick(sensor, instance, defs, cursor)
    [alarm] = http_recorder.requests(path)
    body = alarm.json()
    assert (body["event"], body["run_id"]) == ("alarm", result.run_id)
    assert "row_count_in_bounds" in body["details"]["alarm"]
    assert body["details"]["value"] == 1
    assert "1 rows, expected between 5 and any" in body["text"]


def test_start_and_success_go_only_to_the_reporters_that_ask(setup: Setup,
                                                              http_recorder: HttpRecorder):
    (setup.root / "landing" / "orders.csv").write_text("id\n1\n")
    names = [f"{WF}_run_started_alert_sensor", f"{WF}_run_success_alert_sensor"]
    sensors = [setup.sensor(name) for name in names]
    with dg.instance_for_test() as instance:
        cursors = [tick(s, instance, setup.defs, None) for s in sensors]
        run = run_job(setup.defs, instance)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for sensor, cursor in zip(sensors, cursors, strict=True):
            tick(sensor, instance, setup.defs, tick(sensor, instance, setup.defs, cursor))
    events = [r.json()["event"] for r in http_recorder.requests(setup.paths["hook"])]
    assert sorted(events) == ["start", "success"]  # `always`: once each
    # Slack, Teams and Twilio report failures only; mail asked for success too.
    for reporter in ("teams", "twilio"):
        assert http_recorder.requests(setup.paths[reporter]) == []
    assert http_recorder.requests(f"{setup.paths['slack']}/chat.postMessage") == []
    [mail] = mails_to(setup.smtp, run.run_id)
    assert mail.message()["Subject"] == f"{JOB} succeeded"
    assert history_rows(setup.root, run.run_id) == [("alert", "start", "STARTED", None),
                                                    ("alert", "success", "SUCCESS", None),
                                                    ("run", "success", "SUCCESS", None)]


DAY = 86400


def test_the_ledger_drops_entries_older_than_30_days_hourly(setup: Setup):
    """The failure sensor prunes its workflow's ledger when it sends, at most once an hour."""
    sensor = setup.sensor(f"{WF}_run_failure_alert_sensor")
    now = time.time()
    old, recent, other = (ledger_key(WF, "hook", "failure:old"),
                          ledger_key(WF, "hook", "failure:recent"),
                          ledger_key(f"{WF}x", "hook", "failure:old"))
    ledger = warehouse_ledger(settings.warehouse_url())
    with dg.instance_for_test() as instance:
        ledger.write(old, WF, now - KEEP_SECONDS - DAY)
        ledger.write(recent, WF, now - KEEP_SECONDS + DAY)
        ledger.write(other, f"{WF}x", now - KEEP_SECONDS - DAY)
        cursor = tick(sensor, instance, setup.defs, None)
        first = run_job(setup.defs, instance)
        cursor = tick(sensor, instance, setup.defs, cursor)
        left = ledger.read({old, recent, other, pruned_key(WF),
                            ledger_key(WF, "hook", f"failure:{first.run_id}")})
        assert set(left) == {recent, other, pruned_key(WF),
                             ledger_key(WF, "hook", f"failure:{first.run_id}")}
        assert now <= left[pruned_key(WF)] + 1

        # Within the hour: an old entry stays; an hour later it goes.
        ledger.write(old, WF, now - KEEP_SECONDS - DAY)
        run_job(setup.defs, instance)
        cursor = tick(sensor, instance, setup.defs, cursor)
        assert old in ledger.read({old})
        ledger.write(pruned_key(WF), WF, now - PRUNE_EVERY_SECONDS - 1)
        run_job(setup.defs, instance)
        tick(sensor, instance, setup.defs, cursor)
        assert ledger.read({old, recent}) == {recent: int(now - KEEP_SECONDS + DAY)}


def test_pruning_on_postgres_reads_the_workflow_name_literally():
    """On a PostgreSQL warehouse; `_` in a workflow's name is not a wildcard."""
    now = time.time()
    mine, lookalike = ledger_key("a_b", "r", "x"), ledger_key("aXb", "r", "x")
    with fresh_database("stagecoach_ledger") as url:
        ledger = warehouse_ledger(url)
        try:
            ledger.write(mine, "a_b", now - KEEP_SECONDS - DAY)
            ledger.write(lookalike, "aXb", now - KEEP_SECONDS - DAY)
            assert ledger.prune("a_b", now) == 1
            assert set(ledger.read({mine, lookalike})) == {lookalike}
            assert ledger.read({pruned_key("a_b")}) == {pruned_key("a_b"): int(now)}
        finally:
            ledger.warehouse.engine().dispose()


def test_pruning_on_duckdb_matches_the_case_and_keeps_recent_entries(tmp_path: Path):
    """Entries of a workflow whose name differs only in case stay, as do recent ones; the
    ledger's read never sees another workflow's pruning mark as an alert."""
    now = time.time()
    ledger = warehouse_ledger(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    mine, recent, other = (ledger_key("wf", "r", "x"), ledger_key("wf", "r", "y"),
                           ledger_key("WF", "r", "x"))
    ledger.write(mine, "wf", now - KEEP_SECONDS - DAY)
    ledger.write(recent, "wf", now - KEEP_SECONDS + DAY)
    ledger.write(other, "WF", now - KEEP_SECONDS - DAY)
    assert ledger.prune("wf", now) == 1
    assert set(ledger.read({mine, recent, other})) == {recent, other}
    assert ledger.prune("wf", now + KEEP_SECONDS) == 1  # the mark itself is never pruned
    assert set(ledger.read({pruned_key("wf"), recent})) == {pruned_key("wf")}


@pytest.mark.fault
def test_a_broken_ledger_fails_the_tick_naming_the_reporters(setup: Setup,
                                                            http_recorder: HttpRecorder,
                                                            capfd: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch):
    """The ledger's warehouse unreachable: the failure sensor sends nothing, logs the error
    with the reporters and raises, which Dagster turns into a failed tick."""
    sensor = setup.sensor(f"{WF}_run_failure_alert_sensor")
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, setup.defs, None)
        run = run_job(setup.defs, instance)
        port = closed_port_url().rsplit(":", 1)[1]
        monkeypatch.setenv(settings.WAREHOUSE_URL_ENV,
                           f"postgresql+psycopg2://stagecoach@127.0.0.1:{port}/gone")
        context = dg.build_sensor_context(instance=instance, definitions=setup.defs,
                                          cursor=cursor)
        [reaction] = sensor.evaluate_tick(context).dagster_run_reactions
    assert reaction.dagster_run.run_id == run.run_id
    assert reaction.error is not None and port in reaction.error.to_string()
    assert http_recorder.requests(setup.paths["hook"]) == []
    logged = "\n".join(capfd.readouterr())
    assert ("failure alert: the alert ledger of reporter(s) down, unset, hook, slack, sms, "
            "mail, script, history could not be read (OperationalError); nothing sent") in logged


@pytest.mark.fault
def test_a_failure_whose_promised_retry_never_starts_is_reported(
        setup: Setup, http_recorder: HttpRecorder, monkeypatch: pytest.MonkeyPatch):
    """The retry daemon is down: the failure it was to retry must still reach the reporters."""
    watch = setup.sensor(f"{WF}_retry_watch_alert_sensor")
    retries = {"run_retries": {"enabled": True, "max_retries": 1}}
    with dg.instance_for_test(overrides=retries) as instance:
        stalled = run_job(setup.defs, instance)
        assert stalled.tags["dagster/will_retry"] == "true"
        cursor = tick(watch, instance, setup.defs, None)
        assert http_recorder.requests(setup.paths["hook"]) == []  # within the grace period
        retried = run_job(setup.defs, instance)
        lineage = {"dagster/parent_run_id": retried.run_id, "dagster/retry_number": "1",
                   "dagster/max_retries": "0"}
        run_job(setup.defs, instance, **lineage)  # its retry did start (and failed for good)

        monkeypatch.setattr(alerts_module, "RETRY_GRACE_SECONDS", 0)
        cursor = tick(watch, instance, setup.defs, cursor)
        tick(watch, instance, setup.defs, cursor)  # nothing twice
    [alert] = http_recorder.requests(setup.paths["hook"])
    body = alert.json()
    assert (body["event"], body["run_id"], body["failed_step"]) == (
        "failure", stalled.run_id, "courier__orders_file")
    assert "Dagster was to retry this run, but no retry started within 0s" in body["text"]
