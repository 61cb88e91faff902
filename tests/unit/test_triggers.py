"""Trigger sensors on a folder connection and the DuckDB warehouse: real ticks, real cursors.

Each test builds a sensor from an inline spec, evaluates ticks with the cursor the previous
tick stored (as the daemon does), and checks the run requests, their tags and the new cursor.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from assets import spec
from assets.names import (
    PARTITION_TAG,
    RUN_DAY_TAG,
    SERIAL_TAG,
    TRIGGER_TAG,
    WAREHOUSE_KEY,
    connection_key,
)
from orchestration.connections import resource_for
from orchestration.spec_loader import load_workflows
from resources import settings
from resources.warehouse import WarehouseResource
from sensors.triggers import TriggerError, build_trigger_sensor
from tests.conftest import free_port

JOB = "tg_load_job"


def write_spec(root: Path, connections: str, triggers: str, extra: str = "") -> spec.Workflow:
    """A workflow with a courier group `load`, the given connections and triggers."""
    (root / "landing").mkdir(exist_ok=True)
    folder = root / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / "tg.yaml").write_text(f"""
workflow:
  name: tg
  timezone: Pacific/Auckland
  params: {{region: eu}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
{connections}
couriers:
  orders: {{from: landing, path: orders.csv}}
courier_groups:
  load: {{couriers: [orders]}}
{extra}
triggers:
{triggers}
""", encoding="utf-8")
    [loaded] = load_workflows(folder)
    return loaded.spec


class Ticker:
    """Evaluates a trigger's sensor tick after tick, carrying the cursor like the daemon."""

    def __init__(self, workflow: spec.Workflow, trigger: str, concurrency: str = "queue",
                 resources: dict | None = None, instance: dg.DagsterInstance | None = None,
                 definitions: dg.Definitions | None = None):
        self.sensor = build_trigger_sensor(workflow, trigger, workflow.triggers[trigger],
                                           concurrency)
        self.definitions = definitions  # needed for partitioned run requests
        assert self.sensor is not None
        self.resources = resources if resources is not None else {
            connection_key("tg", c): resource_for(conn)
            for c, conn in workflow.connections.items()}
        self.instance = instance or dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def tick(self, cursor: str | None = ...) -> dg.SensorResult:  # type: ignore[assignment]
        """One tick from the stored cursor (or the one given); stores the new cursor."""
        context = dg.build_sensor_context(instance=self.instance,
                                          cursor=self.cursor if cursor is ... else cursor,
                                          resources=self.resources,
                                          definitions=self.definitions)
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data

    def state(self) -> dict:
        return json.loads(self.cursor or "null")


def put(path: Path, text: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


FILES = """\
  landed:
    job: load
    every: 30s
    when: {kind: file_change, connection: landing, path: "in/*.csv"}
"""


# ---------------------------------------------------------------- definition


def test_sensor_definition_names_job_interval_status_and_resources(tmp_path: Path):
    workflow = write_spec(tmp_path, "", FILES + """\
  nightly_table:
    job: workflow
    enabled: false
    description: Rebuild when the mart changes.
    when: {kind: table_change, table: mart.totals}
  called:
    job: workflow
    when: {kind: webhook, token: {env: TG_TOKEN}}
""", extra="databases:\n  mart:\n    tables:\n      totals: {sql: 'select 1 as n'}")
    files = build_trigger_sensor(workflow, "landed", workflow.triggers["landed"], "queue")
    assert files is not None
    assert files.name == "tg_landed_sensor"
    assert files.job_name == JOB
    assert files.minimum_interval_seconds == 30
    assert files.default_status == dg.DefaultSensorStatus.RUNNING
    assert files.required_resource_keys == {connection_key("tg", "landing")}
    assert "in/*.csv" in files.description and "landing" in files.description

    table = build_trigger_sensor(workflow, "nightly_table", workflow.triggers["nightly_table"],
                                 "skip")
    assert table is not None
    assert table.name == "tg_nightly_table_sensor" and table.job_name == "tg_job"
    assert table.default_status == dg.DefaultSensorStatus.STOPPED
    assert table.required_resource_keys == {WAREHOUSE_KEY}
    assert table.description.startswith("Rebuild when the mart changes.")
    assert "mart.totals" in table.description

    assert build_trigger_sensor(workflow, "called", workflow.triggers["called"], "queue") is None


def test_sensor_loads_in_definitions_that_define_its_job_by_name(tmp_path: Path):
    workflow = write_spec(tmp_path, "", FILES)
    sensor = build_trigger_sensor(workflow, "landed", workflow.triggers["landed"], "queue")

    @dg.asset(name="orders", key_prefix="courier")
    def orders() -> None:
        """Stands in for the courier asset the job would hold."""

    defs = dg.Definitions(
        assets=[orders], jobs=[dg.define_asset_job(JOB, selection=[orders])], sensors=[sensor],
        resources={connection_key("tg", "landing"): resource_for(workflow.connections["landing"])})
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_sensor_def("tg_landed_sensor").job_name == JOB


# ---------------------------------------------------------------- file_change


def test_new_file_fires_once_when_stable(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    put(landing / "old.csv", "already there\n")
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed")

    first = ticker.tick()  # after deploy: what is there is recorded, nothing fires
    assert first.run_requests == [] and "first look" in first.skip_message
    assert ticker.state()["files"]["in/old.csv"][2] is True

    put(landing / "new.csv", "a,b\n1,2\n")
    put(landing / "ignored.txt", "not matching")
    seen = ticker.tick()  # seen once: it may still be being written
    assert seen.run_requests == [] and "in/new.csv" in seen.skip_message
    assert ticker.state()["files"]["in/new.csv"][2] is False
    assert "in/ignored.txt" not in ticker.state()["files"]

    fired = ticker.tick()
    [request] = fired.run_requests
    assert request.tags[TRIGGER_TAG] == "landed: 1 new or changed file(s): in/new.csv"
    assert request.tags[SERIAL_TAG] == JOB  # concurrency: queue
    assert len(request.run_key) == 32
    size = (landing / "new.csv").stat().st_size
    assert ticker.state()["files"] == {
        "in/old.csv": [14, (landing / "old.csv").stat().st_mtime, True],
        "in/new.csv": [size, (landing / "new.csv").stat().st_mtime, True]}
    assert set(ticker.state()) == {"files", "watch"}

    again = ticker.tick()
    assert again.run_requests == [] and "no new or changed file" in again.skip_message


def test_changed_files_fire_together_in_one_run(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    put(landing / "a.csv", "1\n", mtime=1_700_000_000)
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed")
    ticker.tick()
    put(landing / "a.csv", "2\n", mtime=1_700_000_100)  # same size, newer mtime: changed
    put(landing / "b.csv", "b\n")
    ticker.tick()
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG] == "landed: 2 new or changed file(s): in/a.csv, in/b.csv"


def test_file_with_older_mtime_than_anything_seen_still_fires(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    put(landing / "today.csv", "x\n")
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed")
    ticker.tick()
    put(landing / "late.csv", "copied with its original time\n", mtime=978_307_200)  # 2001
    ticker.tick()
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG].endswith("in/late.csv")
    assert ticker.state()["files"]["in/late.csv"] == [30, 978_307_200.0, True]


def test_growing_file_is_taken_only_once_it_stops_growing(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed")
    ticker.tick()
    growing = landing / "big.csv"
    put(growing, "id\n")
    for row in range(3):  # a partner uploading slowly, straight under the final name
        assert ticker.tick().run_requests == []
        with open(growing, "a") as handle:
            handle.write(f"{row}\n")
        assert ticker.state()["files"]["in/big.csv"][2] is False
    assert ticker.tick().run_requests == []  # first look at the final size
    [request] = ticker.tick().run_requests  # the same size twice: complete
    assert ticker.state()["files"]["in/big.csv"][:2] == [9, growing.stat().st_mtime]
    assert "in/big.csv" in request.tags[TRIGGER_TAG]
    assert ticker.tick().run_requests == []


def test_restart_with_the_stored_cursor_does_not_fire_again(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    workflow = write_spec(tmp_path, "", FILES)
    ticker = Ticker(workflow, "landed")
    ticker.tick()
    put(landing / "new.csv", "1\n")
    ticker.tick()
    before_run = ticker.cursor
    [request] = ticker.tick().run_requests
    stored = ticker.cursor

    # A new daemon process: the sensor is built afresh and gets only the stored cursor.
    restarted = Ticker(workflow, "landed")
    assert restarted.tick(stored).run_requests == []
    assert restarted.cursor == stored
    # A tick retried from the cursor before the run (the daemon died before storing the new
    # one) asks again with the same run_key, which Dagster drops as a duplicate.
    [retried] = restarted.tick(before_run).run_requests
    assert retried.run_key == request.run_key


def test_file_that_disappears_leaves_the_cursor_and_is_new_when_back(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    put(landing / "a.csv", "1\n")
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed")
    ticker.tick()
    (landing / "a.csv").unlink()
    assert ticker.tick().run_requests == [] and ticker.state()["files"] == {}
    put(landing / "a.csv", "22\n")
    ticker.tick()
    assert len(ticker.tick().run_requests) == 1


def test_editing_the_watched_path_starts_with_a_first_look(tmp_path: Path):
    landing = tmp_path / "landing"
    put(landing / "in" / "a.csv", "1\n")
    put(landing / "archive" / "b.csv", "2\n")
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed")
    ticker.tick()
    edited = Ticker(write_spec(tmp_path, "", FILES.replace("in/*.csv", "archive/*.csv")),
                    "landed")
    first = edited.tick(ticker.cursor)  # the stored cursor was about another path
    assert first.run_requests == [] and "first look" in first.skip_message
    assert edited.tick().run_requests == []


def test_dated_path_is_rendered_for_today_in_the_workflows_time_zone(tmp_path: Path):
    trigger = """\
  landed:
    job: load
    when: {kind: file_change, connection: landing, path: "{{ params.region }}/{{ ds }}/*.csv"}
"""
    ticker = Ticker(write_spec(tmp_path, "", trigger), "landed")
    today = datetime.now(ZoneInfo("Pacific/Auckland")).date().isoformat()
    ticker.tick()
    put(tmp_path / "landing" / "eu" / today / "orders.csv", "1\n")
    ticker.tick()
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG] == f"landed: 1 new or changed file(s): eu/{today}/orders.csv"


def test_listing_error_fails_the_tick_naming_the_connection(tmp_path: Path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    connection = (f"  partner: {{kind: sftp, host: 127.0.0.1, port: {free_port()}, "
                  f"username: nobody, known_hosts: {known_hosts}, timeout_seconds: 3}}")
    trigger = """\
  partner_files:
    job: load
    when: {kind: file_change, connection: partner, path: "out/*.csv"}
"""
    ticker = Ticker(write_spec(tmp_path, connection, trigger), "partner_files")
    with pytest.raises(TriggerError, match=r"trigger partner_files: cannot list 'out/\*\.csv' "
                                           r"on connection 'partner': sftp nobody@127\.0\.0\.1"):
        ticker.tick()
    assert ticker.cursor is None  # nothing recorded: the next tick looks again


def test_concurrency_skip_drops_the_change_while_a_run_is_going(tmp_path: Path):
    landing = tmp_path / "landing" / "in"
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed", concurrency="skip")
    going = ticker.instance.add_run(dg.DagsterRun(
        job_name=JOB, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED))
    ticker.tick()
    put(landing / "new.csv", "1\n")
    ticker.tick()
    skipped = ticker.tick()
    assert skipped.run_requests == []
    assert skipped.skip_message.startswith(f"{JOB} is still queued or running ({going.run_id} "
                                           "(started))")
    assert ticker.state()["files"]["in/new.csv"][2] is True  # dropped, not retried later
    assert ticker.tick().run_requests == []

    ticker.instance.report_run_failed(going)
    put(landing / "next.csv", "2\n")
    ticker.tick()
    [request] = ticker.tick().run_requests
    assert SERIAL_TAG not in request.tags  # only `queue` runs wait in line


def test_concurrency_cancel_running_cancels_then_requests(tmp_path: Path):
    ticker = Ticker(write_spec(tmp_path, "", FILES), "landed", concurrency="cancel_running")
    going = ticker.instance.add_run(dg.DagsterRun(
        job_name=JOB, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED))
    ticker.tick()
    put(tmp_path / "landing" / "in" / "new.csv", "1\n")
    ticker.tick()
    assert len(ticker.tick().run_requests) == 1
    status = ticker.instance.get_run_by_id(going.run_id).status
    assert status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


# ---------------------------------------------------------------- table_change, sql_change (DuckDB)

MART = "databases:\n  mart:\n    tables:\n      totals: {sql: 'select 1 as n'}"
TABLE = "  mart_changed:\n    job: workflow\n    when: {kind: table_change, table: mart.totals}"


@pytest.fixture
def duckdb_warehouse(stagecoach_env: Path) -> WarehouseResource:
    return WarehouseResource(url=settings.default_warehouse_url())


def _today_utc() -> str:
    """Today in the test workflow's time zone (Auckland)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo("Pacific/Auckland")).date().isoformat()


def test_table_change_on_duckdb_fires_after_a_change_only(tmp_path: Path,
                                                          duckdb_warehouse: WarehouseResource):
    wh = duckdb_warehouse
    ticker = Ticker(write_spec(tmp_path, "", TABLE, extra=MART), "mart_changed",
                    resources={WAREHOUSE_KEY: wh})

    assert "absent" in ticker.tick().skip_message  # not built yet: recorded as absent
    assert ticker.state()["fingerprint"] == "absent"
    # A column named `t` (or `b`) must not stand in for the whole row in the fingerprint.
    wh.execute("create", ("CREATE SCHEMA mart", None),
               ("CREATE TABLE mart.totals (region TEXT, n BIGINT, t TEXT, b TEXT)", None),
               ("INSERT INTO mart.totals VALUES ('eu', 1, 'x', 'y'), ('us', 2, 'x', 'y')",
                None))
    [created] = ticker.tick().run_requests
    # An undated job: the day of the change is today (the one rule, assets/run_day.py).
    assert created.tags == {TRIGGER_TAG: "mart_changed: table mart.totals changed",
                            SERIAL_TAG: "tg_job", RUN_DAY_TAG: _today_utc(),
                            "dagster/sensor_name": "tg_mart_changed_sensor"}
    assert ticker.tick().run_requests == []

    wh.execute("insert", ("INSERT INTO mart.totals VALUES ('apac', 3, 'x', 'y')", None))
    [inserted] = ticker.tick().run_requests
    assert inserted.run_key != created.run_key
    assert ticker.state()["changes"] == 2
    assert ticker.tick().run_requests == []

    wh.execute("update", ("UPDATE mart.totals SET n = 4 WHERE region = 'apac'", None))
    assert len(ticker.tick().run_requests) == 1  # same row count, other content
    wh.execute("rebuild", ("CREATE OR REPLACE TABLE mart.totals AS SELECT * FROM mart.totals "
                           "ORDER BY region DESC", None))
    assert ticker.tick().run_requests == []  # same rows in another order: no change
    wh.execute("revert", ("UPDATE mart.totals SET n = 3 WHERE region = 'apac'", None))
    [back] = ticker.tick().run_requests  # back to an earlier content: still a new change
    assert back.run_key not in (created.run_key, inserted.run_key)


def test_table_change_first_tick_records_without_firing(tmp_path: Path,
                                                         duckdb_warehouse: WarehouseResource):
    duckdb_warehouse.replace_table("mart", "totals", "SELECT 1 AS n")
    ticker = Ticker(write_spec(tmp_path, "", TABLE, extra=MART), "mart_changed",
                    resources={WAREHOUSE_KEY: duckdb_warehouse})
    first = ticker.tick()
    assert first.run_requests == [] and "first look" in first.skip_message
    assert ticker.state()["changes"] == 0 and ticker.state()["fingerprint"].startswith("1:")


def test_sql_change_on_the_duckdb_warehouse(tmp_path: Path,
                                            duckdb_warehouse: WarehouseResource):
    wh = duckdb_warehouse
    wh.replace_table("ops", "batches", "SELECT 1 AS id, 'done' AS status")
    trigger = """\
  batch_ready:
    job: load
    when:
      kind: sql_change
      query: "select id from ops.batches where status = 'ready'"
"""
    ticker = Ticker(write_spec(tmp_path, "", trigger), "batch_ready",
                    resources={WAREHOUSE_KEY: wh})
    assert ticker.tick().run_requests == []
    wh.execute("ready", ("INSERT INTO ops.batches VALUES (2, 'ready')", None))
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG] == "batch_ready: the query on the warehouse changed"
    assert ticker.tick().run_requests == []
    wh.execute("done", ("UPDATE ops.batches SET status = 'done' WHERE id = 2", None))
    assert len(ticker.tick().run_requests) == 1  # the result went back to empty: a change


def test_sql_change_query_error_fails_the_tick(tmp_path: Path,
                                               duckdb_warehouse: WarehouseResource):
    trigger = """\
  batch_ready:
    job: load
    when: {kind: sql_change, query: "select id from ops.missing"}
"""
    ticker = Ticker(write_spec(tmp_path, "", trigger), "batch_ready",
                    resources={WAREHOUSE_KEY: duckdb_warehouse})
    with pytest.raises(TriggerError, match=r"trigger batch_ready: the query on the warehouse "
                                           r"failed: .*missing"):
        ticker.tick()


# ---------------------------------------------------------------- python


@pytest.fixture
def hook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module with `decide(ctx)`, returning what the test puts in `decide.answer`."""
    name = f"tg_hooks_{uuid.uuid4().hex[:8]}"
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / f"{name}.py").write_text(
        "calls = []\n\n"
        "def decide(ctx):\n"
        "    calls.append(ctx)\n"
        "    if isinstance(decide.answer, Exception):\n"
        "        raise decide.answer\n"
        "    return decide.answer\n\n"
        "decide.answer = False\n")
    monkeypatch.syspath_prepend(str(tmp_path / "hooks"))
    yield name
    sys.modules.pop(name, None)


def python_ticker(tmp_path: Path, module: str) -> tuple[Ticker, object]:
    trigger = f"""\
  asked:
    job: load
    when: {{kind: python, callable: "{module}:decide"}}
"""
    ticker = Ticker(write_spec(tmp_path, "", trigger), "asked")
    return ticker, sys.modules[module]


def test_python_trigger_true_dict_and_false(tmp_path: Path, hook_module: str):
    ticker, hooks = python_ticker(tmp_path, hook_module)
    assert ticker.sensor.required_resource_keys == set()

    hooks.decide.answer = False
    quiet = ticker.tick()
    assert quiet.run_requests == [] and "returned False" in quiet.skip_message
    hooks.decide.answer = None
    assert ticker.tick().run_requests == []

    hooks.decide.answer = True
    [plain] = ticker.tick().run_requests
    assert plain.tags[TRIGGER_TAG] == f"asked: {hook_module}:decide returned True"
    assert plain.run_config == {}
    assert ticker.state()["runs"] == 1 and ticker.state()["last_run_at"]

    config = {"ops": {"courier__orders": {"config": {"day": "2026-11-02"}}}}
    hooks.decide.answer = config
    before = ticker.cursor
    [configured] = ticker.tick().run_requests
    assert configured.run_config == config
    assert configured.run_key != plain.run_key
    assert configured.tags[TRIGGER_TAG] == f"asked: {hook_module}:decide returned a run config"
    # A retried tick (same stored cursor) repeats the run_key: Dagster drops the duplicate.
    [retried] = ticker.tick(before).run_requests
    assert retried.run_key == configured.run_key

    ctx = hooks.calls[-1]
    assert (ctx.workflow, ctx.trigger, ctx.params) == ("tg", "asked", {"region": "eu"})
    assert ctx.cursor["runs"] == 1
    assert isinstance(ctx.sensor, dg.SensorEvaluationContext)


def test_python_trigger_error_is_the_ticks_error(tmp_path: Path, hook_module: str):
    ticker, hooks = python_ticker(tmp_path, hook_module)
    hooks.decide.answer = ConnectionError("the API said 503")
    with pytest.raises(TriggerError, match=rf"trigger asked: {hook_module}:decide raised "
                                           r"ConnectionError: the API said 503") as raised:
        ticker.tick()
    assert isinstance(raised.value.__cause__, ConnectionError)

    hooks.decide.answer = "yes"
    with pytest.raises(TriggerError, match=r"returned str; return True, False, None or a run "
                                           r"config dict"):
        ticker.tick()


DATED = """
workflow: {{name: tg, timezone: Pacific/Auckland, start_date: 2026-01-01}}
connections:
  landing: {{kind: folder, path: {landing}}}
couriers:
  orders: {{from: landing, path: "in/orders_{{{{ ds_nodash }}}}.csv"}}
courier_groups:
  load: {{couriers: [orders]}}
triggers:
  landed:
    job: load
    when: {{kind: file_change, connection: landing, path: "in/*.csv"}}
{rule}"""


def _dated(root: Path, rule: str = "") -> spec.Workflow:
    (root / "landing" / "in").mkdir(parents=True, exist_ok=True)
    (root / "workflows").mkdir(exist_ok=True)
    (root / "workflows" / "tg.yaml").write_text(DATED.format(landing=root / "landing",
                                                             rule=rule), encoding="utf-8")
    [loaded] = load_workflows(root / "workflows")
    return loaded.spec


def _definitions(root: Path) -> dg.Definitions:
    from orchestration.definitions import build_definitions

    return build_definitions(root / "workflows")


def test_a_dated_job_runs_each_arrived_files_day(tmp_path: Path):
    """Two days' files land together: one run per day, each on its own partition."""
    ticker = Ticker(_dated(tmp_path), "landed", definitions=_definitions(tmp_path))
    ticker.tick()
    put(tmp_path / "landing" / "in" / "orders_20261105.csv", "a\n1\n")
    put(tmp_path / "landing" / "in" / "orders_20261106.csv", "a\n2\n")
    ticker.tick()
    requests = ticker.tick().run_requests
    assert [(r.partition_key, r.tags[RUN_DAY_TAG], r.tags[PARTITION_TAG]) for r in requests] == [
        ("2026-11-05", "2026-11-05", "2026-11-05"), ("2026-11-06", "2026-11-06", "2026-11-06")]
    assert len({r.run_key for r in requests}) == 2


def test_a_trigger_can_ask_for_the_last_complete_day(tmp_path: Path):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    ticker = Ticker(_dated(tmp_path, "    partition: last_complete_day\n"), "landed",
                    definitions=_definitions(tmp_path))
    ticker.tick()
    put(tmp_path / "landing" / "in" / "orders_20261105.csv", "a\n1\n")
    ticker.tick()
    [request] = ticker.tick().run_requests
    yesterday = datetime.now(ZoneInfo("Pacific/Auckland")).date() - timedelta(days=1)
    assert request.partition_key == yesterday.isoformat()
    assert request.tags[RUN_DAY_TAG] == yesterday.isoformat()
