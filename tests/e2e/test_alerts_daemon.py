"""Alerts from a real Dagster daemon: under `dagster dev`, a schedule that finds its file missing,
a sensor whose source raises, and a run that fails each reach a webhook on loopback once, sent
by the workflow's alert sensors as the daemon ticks them.

The two failing runs are launched when the daemon starts, so their alerts come while the first
test waits for the schedule's minute; each test still waits on its own for what it checks.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import servers_http
from tests.e2e.dagster_dev import (
    SENSOR_QUERY,
    DagsterDev,
    instigator_selector,
    running_dagster_dev,
    start_instigator,
    wait_for_run,
)
from tests.servers_http import HttpRecorder, Recorded

pytestmark = pytest.mark.timeout(600)
http_recorder = servers_http.http_recorder

WF = "dmn"
ALERT_TIMEOUT = 200.0  # a minute for the schedule's tick, then the alert sensors' interval
QUIET_SECONDS = 20.0  # after an alert, daemon ticks that must not send it again

PROBE = '''
def source_is_down(context):
    raise ConnectionError("inventory API at 127.0.0.1:9 refused the connection")
'''

def spec(root: Path) -> str:
    return f"""
workflow: {{name: {WF}}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
couriers:
  stock: {{from: landing, path: stock.csv}}
courier_groups:
  morning:
    couriers: [stock]
    run: load
    schedule: {{cron: "* * * * *"}}
    missing_files: notify_and_stop
triggers:
  inventory:
    job: morning
    every: 30s
    when: {{kind: python, callable: "alert_probe:source_is_down"}}
alerts:
  ops:
    kind: webhook
    url: {{env: OPS_HOOK_URL}}
    retries: 1
    backoff_seconds: 0.1
  history: {{kind: dataset}}
"""


@dataclass(frozen=True)
class Daemon:
    """A `dagster dev` with the workflow's schedule and sensor running, and two runs launched at
    the start, so the waits of the tests (a cron minute, the alert sensors' interval) overlap."""

    dev: DagsterDev
    path: str  # the webhook's path on the recorder
    failed_run: str  # the group's job, failing: stock.csv is missing
    ui_run: str  # what an asset's Materialize button sends: `__ASSET_JOB`, no Stagecoach tag


LAUNCH_ASSETS = """
mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId jobName tags { key value } } }
    ... on PythonError { message } ... on InvalidSubsetError { message } } }
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, http_recorder: HttpRecorder
           ) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("alerts_daemon")
    for folder in ("landing", "workflows", "data", "dagster_home", "probe"):
        (root / folder).mkdir()
    (root / "probe" / "alert_probe.py").write_text(PROBE)
    (root / "workflows" / f"{WF}.yaml").write_text(spec(root))
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    path = http_recorder.unique_path("ops")
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           "OPS_HOOK_URL": f"{http_recorder.url}{path}?token={secrets.token_hex(12)}",
           "PYTHONPATH": os.pathsep.join([str(root / "probe"), os.environ.get("PYTHONPATH", "")]),
           "STAGECOACH_UI_URL": "http://dagster.acme.test"}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    with running_dagster_dev(root, root / "workflows", env) as dev:
        start_instigator(dev, "schedule", f"{WF}_morning_schedule")
        start_instigator(dev, "sensor", f"{WF}_inventory_sensor")
        selector = instigator_selector("sensor", f"{WF}_run_failure_alert_sensor")
        deadline = time.monotonic() + 60  # the sensor's first tick sets its cursor: wait for it
        while not dev.graphql(SENSOR_QUERY, {"selector": selector})["sensorOrError"][
                "sensorState"]["ticks"]:
            assert time.monotonic() < deadline, "the failure alert sensor never ticked"
            time.sleep(2)
        failed_run = dev.client().submit_job_execution(f"{WF}_morning_job")
        launched = dev.graphql(LAUNCH_ASSETS, {"params": {
            "selector": {"repositoryLocationName": "stagecoach",
                         "repositoryName": "__repository__", "jobName": "__ASSET_JOB",
                         "assetSelection": [{"path": ["courier", "stock_file"]}]},
            "executionMetadata": {"tags": []}}})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run = launched["run"]
        assert run["jobName"] == "__ASSET_JOB"
        assert "stagecoach/workflow" not in {t["key"] for t in run["tags"]}
        yield Daemon(dev, path, failed_run, run["runId"])


TICKS = """
query ($selector: %(type)s!) { %(kind)sOrError(%(kind)sSelector: $selector) {
    ... on %(name)s { %(kind)sState { ticks(limit: 100) { status } } } } }
"""


def _tick_statuses(dev: DagsterDev, kind: str, name: str) -> list[str]:
    selector = instigator_selector(kind, name)
    query = TICKS % {"type": f"{kind.title()}Selector", "kind": kind, "name": kind.title()}
    state = dev.graphql(query, {"selector": selector})[f"{kind}OrError"][f"{kind}State"]
    return [t["status"] for t in state["ticks"]]


def _alerts(recorder: HttpRecorder, path: str, event: str) -> list[dict]:
    return [r.json() for r in recorder.requests(path) if r.json()["event"] == event]


def _wait_for(recorder: HttpRecorder, path: str, event: str, dev: DagsterDev) -> list[dict]:
    deadline = time.monotonic() + ALERT_TIMEOUT
    while time.monotonic() < deadline:
        if found := _alerts(recorder, path, event):
            return found
        time.sleep(2)
    pytest.fail(f"no {event} alert within {ALERT_TIMEOUT:.0f} s; dagster dev's log:\n"
                f"{dev.log_tail()}")


def test_a_missing_file_and_a_failing_sensor_alert_once_each(daemon: Daemon,
                                                             http_recorder: HttpRecorder):
    dev, path = daemon.dev, daemon.path
    [missing] = _wait_for(http_recorder, path, "missing_files", dev)[:1]
    assert missing["job"] == f"{WF}_morning_job"
    assert missing["details"]["files"] == ["stock: landing/stock.csv"]
    assert "stock: landing/stock.csv" in missing["text"]
    [broken] = _wait_for(http_recorder, path, "sensor_error", dev)[:1]
    assert broken["details"]["sensor"] == f"{WF}_inventory_sensor"
    assert "inventory API at 127.0.0.1:9 refused the connection" in broken["error"]
    # Each tick is reported once: never more alerts than ticks that could cause them.
    time.sleep(QUIET_SECONDS)
    skipped = _tick_statuses(dev, "schedule", f"{WF}_morning_schedule").count("SKIPPED")
    failed = _tick_statuses(dev, "sensor", f"{WF}_inventory_sensor").count("FAILURE")
    missing_ticks = [a["details"]["tick_id"] for a in _alerts(http_recorder, path,
                                                                "missing_files")]
    assert len(missing_ticks) == len(set(missing_ticks))  # each tick once
    assert 1 <= len(missing_ticks) <= skipped
    # The sensor fails on every tick: one alert for the series, however long it lasts.
    assert failed >= 2
    assert len(_alerts(http_recorder, path, "sensor_error")) == 1


def _failure_alerts(recorder: HttpRecorder, daemon: Daemon, run_id: str) -> list[Recorded]:
    """The failure alerts of one run, waited for (up to ALERT_TIMEOUT)."""
    deadline, found = time.monotonic() + ALERT_TIMEOUT, []
    while time.monotonic() < deadline and not found:
        found = [r for r in recorder.requests(daemon.path)
                 if r.json()["event"] == "failure" and r.json()["run_id"] == run_id]
        if not found:
            time.sleep(2)
    return found


def test_a_failed_run_alerts_once_through_the_daemon(daemon: Daemon,
                                                     http_recorder: HttpRecorder):
    dev, run_id = daemon.dev, daemon.failed_run
    assert wait_for_run(dev, run_id) == "FAILURE"  # stock.csv is still missing
    found = _failure_alerts(http_recorder, daemon, run_id)
    assert found, dev.log_tail()
    time.sleep(max(0.0, QUIET_SECONDS - (time.monotonic() - found[0].at)))  # more ticks
    found = _failure_alerts(http_recorder, daemon, run_id)
    assert len(found) == 1, ([r.json() for r in found], dev.log_tail())
    alert = found[0].json()
    assert alert["failed_step"] == "courier__stock_file"
    assert alert["run_url"] == f"http://dagster.acme.test/runs/{run_id}"


def test_a_ui_materialization_without_the_workflow_tag_alerts_and_is_recorded(
        daemon: Daemon, http_recorder: HttpRecorder):
    """What an asset's Materialize button sends: `__ASSET_JOB` on one asset, no Stagecoach tag.
    The daemon's failure sensor alerts it and the dataset reporter records it."""
    dev, run_id = daemon.dev, daemon.ui_run
    assert wait_for_run(dev, run_id) == "FAILURE"  # stock.csv is missing
    found = _failure_alerts(http_recorder, daemon, run_id)
    assert len(found) == 1, ([r.json() for r in found], dev.log_tail())
    assert found[0].json()["job"] == "__ASSET_JOB"
    assert found[0].json()["failed_step"] == "courier__stock_file"
    rows = _history_rows(dev.root / "data" / "warehouse.duckdb", run_id)
    assert ("run", "failure", "FAILURE") in rows, rows


def _history_rows(warehouse: Path, run_id: str) -> list[tuple]:
    """The run's rows of stagecoach.run_history; the daemon's sensors write the same file, so a
    locked file is read again a moment later."""
    import duckdb

    deadline = time.monotonic() + 60
    while True:
        try:
            with duckdb.connect(str(warehouse), read_only=True) as db:
                rows = db.execute("select kind, event, status from stagecoach.run_history "
                                  "where run_id = ?", [run_id]).fetchall()
        except duckdb.Error:
            rows = []
        if ("run", "failure", "FAILURE") in rows or time.monotonic() > deadline:
            return rows
        time.sleep(2)
