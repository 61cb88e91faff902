"""Runs launched without the workflow's tag ("Materialize all", an asset's Materialize button,
an ad-hoc selection, a UI backfill: all `__ASSET_JOB`) are the workflow's runs all the same:
alerted, recorded in the run history and timed, attributed by the assets they touch.

The runs are real runs of Dagster's implicit asset job on a real instance; the sensors are
evaluated as the daemon does (a first tick sets the cursor, the next one reads from it).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.names import ATTRIBUTED_ASSETS_TAG, WORKFLOW_TAG, courier_key
from orchestration.definitions import build_definitions
from resources.bookkeeping.run_history import SCHEMA, TABLE
from tests import servers_http, servers_mail
from tests.integration import test_alerts
from tests.integration.test_alerts import Setup, history_rows, tick
from tests.servers_http import HttpRecorder

pytestmark = pytest.mark.timeout(180)

WF = "al"
ASSET_JOB = "__ASSET_JOB"
http_recorder = servers_http.http_recorder
smtp_plain = servers_mail.smtp_plain
setup = test_alerts.setup


def _asset_run(defs: dg.Definitions, instance: dg.DagsterInstance, *keys: dg.AssetKey,
               tags: dict[str, str] | None = None) -> dg.DagsterRun:
    """What the UI's Materialize button does: the implicit asset job on a selection."""
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=list(keys),
                                    raise_on_error=False, tags=tags or {})
    return instance.get_run_by_id(result.run_id)


def test_a_failed_ui_materialization_alerts_and_is_recorded(setup: Setup,
                                                            http_recorder: HttpRecorder):
    """orders.csv is missing: materialising the courier from the UI fails like its job would."""
    sensor = setup.sensor(f"{WF}_run_failure_alert_sensor")
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, setup.defs, None)
        run = _asset_run(setup.defs, instance, courier_key("orders"))
        assert run.job_name == ASSET_JOB and WORKFLOW_TAG not in run.tags
        assert run.status == dg.DagsterRunStatus.FAILURE
        cursor = tick(sensor, instance, setup.defs, cursor)
        tick(sensor, instance, setup.defs, cursor)  # a second look sends nothing new
    [alert] = [r.json() for r in http_recorder.requests(setup.paths["hook"])]
    assert (alert["event"], alert["job"], alert["run_id"]) == ("failure", ASSET_JOB, run.run_id)
    assert alert["failed_step"] == "courier__orders_file"
    # `jobs: [load]` follows it (the load group runs that courier); `jobs: [workflow]` does
    # not: one asset is not the whole workflow.
    assert http_recorder.requests(f"{setup.paths['slack']}/chat.postMessage") != []
    assert http_recorder.requests(setup.paths["teams"]) == []
    rows = history_rows(setup.root, run.run_id)
    assert ("run", "failure", "FAILURE", "courier__orders_file") in rows


def test_another_workflows_asset_run_is_not_this_ones(setup: Setup, http_recorder: HttpRecorder):
    """A second workflow in the same code location: its asset runs reach only its sensors."""
    other = setup.root / "workflows" / "other.yaml"
    other.write_text(f"""
workflow: {{name: oth}}
connections:
  drop: {{kind: folder, path: {setup.root / 'drop'}}}
couriers:
  stock: {{from: drop, path: stock.csv}}
""", encoding="utf-8")
    defs = build_definitions(setup.root / "workflows")
    sensor = defs.resolve_sensor_def(f"{WF}_run_failure_alert_sensor")
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, defs, None)
        mine = _asset_run(defs, instance, courier_key("orders"))
        theirs = _asset_run(defs, instance, courier_key("stock"))
        assert {mine.status, theirs.status} == {dg.DagsterRunStatus.FAILURE}
        tick(sensor, instance, defs, cursor)
    runs = {r.json()["run_id"] for r in http_recorder.requests(setup.paths["hook"])}
    assert runs == {mine.run_id}
    assert history_rows(setup.root, theirs.run_id) == []


def test_materialize_all_succeeding_is_recorded_with_the_assets_it_touched(
        setup: Setup, http_recorder: HttpRecorder, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLOW_DB_URL", postgres_url)
    (setup.root / "landing" / "orders.csv").write_text("id\n1\n")
    sensor = setup.sensor(f"{WF}_run_success_alert_sensor")
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, setup.defs, None)
        run = _asset_run(setup.defs, instance, courier_key("orders"), courier_key("slow"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        tick(sensor, instance, setup.defs, cursor)
    [success] = [r.json() for r in http_recorder.requests(setup.paths["hook"])]
    assert (success["event"], success["run_id"]) == ("success", run.run_id)
    # Every asset of the workflow: it counts as the whole workflow's job, so `jobs: [workflow]`
    # follows it this time (teams reports failures only: nothing to send for a success).
    with duckdb.connect(str(setup.root / "data" / "warehouse.duckdb"), read_only=True) as db:
        [(details,)] = db.execute(f'select details from "{SCHEMA}"."{TABLE}" where run_id = ? '
                                  "and kind = 'run'", [run.run_id]).fetchall()
    assert f'"{WORKFLOW_TAG}": "{WF}"' in details
    assert ATTRIBUTED_ASSETS_TAG in details and "courier/orders" in details


def test_a_long_ui_materialization_gets_its_groups_duration_alert(
        setup: Setup, http_recorder: HttpRecorder, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch):
    """The slow courier's group has `duration_alert: 1s`; materialised from the UI, the run
    carries no duration tag, yet it is reported once as running long."""
    monkeypatch.setenv("SLOW_DB_URL", postgres_url)
    runtime = setup.sensor(f"{WF}_runtime_alert_sensor")
    with dg.instance_for_test() as instance:
        outcome: dict[str, dg.DagsterRun] = {}
        worker = threading.Thread(target=lambda: outcome.update(
            run=_asset_run(setup.defs, instance, courier_key("slow"))))
        worker.start()
        deadline = time.monotonic() + 30
        while not instance.get_runs(filters=dg.RunsFilter(
                job_name=ASSET_JOB, statuses=[dg.DagsterRunStatus.STARTED])):
            assert time.monotonic() < deadline and worker.is_alive(), "the run did not start"
            time.sleep(0.1)
        time.sleep(1.5)
        cursor = tick(runtime, instance, setup.defs, None)
        tick(runtime, instance, setup.defs, cursor)
        worker.join(60)
    run = outcome["run"]
    [alert] = [r.json() for r in http_recorder.requests(setup.paths["hook"])]
    assert (alert["event"], alert["job"], alert["run_id"]) == ("runtime_exceeded", ASSET_JOB,
                                                              run.run_id)
    assert "past its limit of 1s" in alert["text"]


def test_the_alert_sensors_watch_the_whole_location(setup: Setup, tmp_path: Path):
    """No job list: Dagster hands them every run of the code location, `__ASSET_JOB` too."""
    sensor = setup.sensor(f"{WF}_run_failure_alert_sensor")
    assert not getattr(sensor, "monitored_jobs", None)
    assert "jobs or assets" in (sensor.description or "")
