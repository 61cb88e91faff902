"""Automations end to end on a real instance: chained SQL steps on the DuckDB warehouse and a
PostgreSQL connection, parameters from run config, alarms through the alert sensors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from orchestration.definitions import build_definitions
from tests import servers_http
from tests.servers_http import HttpRecorder

pytestmark = pytest.mark.timeout(180)
http_recorder = servers_http.http_recorder
WF = "auto"


def write_spec(root: Path, automations: str, extra: str = "") -> dg.Definitions:
    (root / "workflows").mkdir(exist_ok=True)
    (root / "workflows" / f"{WF}.yaml").write_text(f"""
workflow: {{name: {WF}, params: {{region: eu}}}}
connections:
  crm: {{kind: sql, url: {{env: CRM_DB_URL}}}}
{extra}
automations:
{automations}
""", encoding="utf-8")
    return build_definitions(root / "workflows")


def run(defs: dg.Definitions, name: str, instance: dg.DagsterInstance,
        run_config: dict | None = None, tags: dict | None = None
        ) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(f"{WF}_{name}_job").execute_in_process(
        instance=instance, run_config=run_config, tags=tags, raise_on_error=False)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The message of the run's one failed step (a second failure fails the unpacking)."""
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.event_specific_data.error.message


def warehouse(root: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def step_statuses(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Op name → what happened to it: success, failure, or not run."""
    statuses = {}
    for event in result.all_events:
        if event.is_step_success:
            statuses[event.step_key] = "success"
        elif event.is_step_failure:
            statuses[event.step_key] = "failure"
        elif event.is_step_skipped:
            statuses[event.step_key] = "not run"
    return statuses


def test_a_chain_stops_at_its_first_failure(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, """
  nightly_scores:
    description: Score customers, then publish.
    steps:
      - {name: numbers, kind: sql, into: work.numbers,
         sql: "select range as n from range(5)"}
      - {name: broken, kind: sql, sql: "insert into work.numbers select * from work.nope"}
      - {name: publish, kind: sql, into: work.published, sql: "select * from work.numbers"}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "nightly_scores", instance)
    assert not result.success
    assert step_statuses(result) == {"nightly_scores__numbers": "success",
                                     "nightly_scores__broken": "failure"}
    message = failure_message(result)
    assert "step nightly_scores__broken: the query failed" in message
    assert "work.nope" in message or "nope" in message
    assert warehouse(stagecoach_env, "select count(*) from work.numbers") == [(5,)]
    tables = warehouse(stagecoach_env, "select table_name from information_schema.tables "
                                       "where table_schema = 'work'")
    assert tables == [("numbers",)]  # publish never ran


def test_params_are_bound_and_a_launch_overrides_them(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, """
  top_values:
    params: {minimum: 3}
    steps:
      - {kind: sql, into: work.top,
         sql: "select range as n, {{ params.region }} as region from range(10)
               where range >= {{ params.minimum }}"}
""")
    with dg.instance_for_test() as instance:
        assert run(defs, "top_values", instance).success
        assert warehouse(stagecoach_env, "select count(*), min(region) from work.top") == [
            (7, "eu")]
        config = {"ops": {"top_values__step1_sql": {"config": {"params": {
            "minimum": 8, "region": "'; drop table work.top; --"}}}}}
        assert run(defs, "top_values", instance, config).success
    assert warehouse(stagecoach_env, "select count(*), min(region) from work.top") == [
        (2, "'; drop table work.top; --")]  # a bound value, never SQL


def test_sql_steps_on_a_postgresql_connection(stagecoach_env: Path, postgres_url: str,
                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CRM_DB_URL", postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("drop table if exists auto_accounts"))
        conn.execute(sa.text("create table auto_accounts (id int, active bool)"))
        conn.execute(sa.text("insert into auto_accounts values (1, true), (2, false)"))
    defs = write_spec(stagecoach_env, """
  deactivate:
    steps:
      - {kind: sql, connection: crm, sql: "update auto_accounts set active = false"}
      - name: check
        kind: alarm
        connection: crm
        query: "select count(*) from auto_accounts where active"
        condition: ">"
        threshold: 0
        stop: true
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "deactivate", instance)
    assert result.success, result
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from auto_accounts where active")
                            ).scalar() == 0
    engine.dispose()


def test_an_alarm_goes_to_the_reporters_and_may_stop_the_chain(
        stagecoach_env: Path, http_recorder: HttpRecorder, monkeypatch: pytest.MonkeyPatch):
    path = http_recorder.unique_path("alarm")
    monkeypatch.setenv("OPS_URL", f"{http_recorder.url}{path}")
    defs = write_spec(stagecoach_env, """
  watch_orders:
    steps:
      - {kind: sql, into: work.orders, sql: "select range as id from range(3)"}
      - name: too_few_orders
        kind: alarm
        query: "select count(*) from work.orders"
        condition: "<"
        threshold: 100
        stop: true
      - {name: after, kind: sql, into: work.after, sql: "select 1 as x"}
""", extra="""alerts:
  ops: {kind: webhook, url: {env: OPS_URL}, send_on: [alarm, failure]}""")
    sensor = defs.resolve_sensor_def(f"{WF}_run_failure_alert_sensor")
    with dg.instance_for_test() as instance:
        cursor = sensor.evaluate_tick(dg.build_sensor_context(instance=instance,
                                                              definitions=defs)).cursor
        result = run(defs, "watch_orders", instance)
        sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                     cursor=cursor))
    assert step_statuses(result) == {"watch_orders__step1_sql": "success",
                                     "watch_orders__too_few_orders": "failure"}
    alarm, failure = sorted((r.json() for r in http_recorder.requests(path)),
                            key=lambda b: b["event"])
    assert (alarm["event"], alarm["details"]["alarm"]) == ("alarm",
                                                          "watch_orders__too_few_orders")
    assert (alarm["details"]["value"], alarm["details"]["threshold"]) == (3, 100)
    assert "alarm watch_orders__too_few_orders: 3 < 100" in alarm["text"]
    assert failure["event"] == "failure"
    assert "the chain stops here" in failure["error"]


def test_ssh_steps_run_on_the_host_and_stop_the_chain_on_a_bad_exit(stagecoach_env: Path,
                                                                    sshd):
    marker = sshd.root / f"published_{stagecoach_env.name}.txt"
    defs = write_spec(stagecoach_env, f"""
  publish:
    params: {{label: "a b; echo INJECTED"}}
    steps:
      - name: publish
        kind: ssh
        connection: batch
        command: |
          echo "publishing $STAGECOACH_PARAM_LABEL for $STAGECOACH_DS"
          printf '%s' "$STAGECOACH_PARAM_LABEL" > {marker}
      - {{name: verify, kind: ssh, connection: batch, command: "echo checking; exit 3"}}
      - {{name: never, kind: ssh, connection: batch, command: "touch {marker}.never"}}
""", extra=f"""  batch:
    kind: sftp
    host: {sshd.host}
    port: {sshd.port}
    username: {sshd.username}
    private_key_path: {sshd.private_key_path}
    known_hosts: {sshd.known_hosts_path}""")
    with dg.instance_for_test() as instance:
        result = run(defs, "publish", instance)
        logs = [e.message for e in instance.all_logs(result.run_id)]
    assert step_statuses(result) == {"publish__publish": "success",
                                     "publish__verify": "failure"}
    assert marker.read_text() == "a b; echo INJECTED"  # a value, never shell text
    assert any(m.startswith("publishing a b; echo INJECTED for 20") for m in logs), logs
    assert "INJECTED" not in [m.strip() for m in logs]
    assert "checking" in logs
    message = failure_message(result)
    assert "the command exited with 3" in message
    assert not Path(f"{marker}.never").exists()


EXTRACT = """
import os, sys
out = os.path.join(os.environ["WORK"], "extract.csv")
open(out, "w").write("id\\n1\\n2\\n3\\n")
print("extracted for", os.environ["STAGECOACH_DS"], "by", os.environ["STAGECOACH_TRIGGERED_BY"])
print("STAGECOACH_OUTPUT_FILE=" + out)
"""
COUNT = """
import os, sys
rows = open(sys.argv[1]).read().splitlines()[1:]
marker = os.path.join(os.environ["WORK"], "attempts")
attempts = int(open(marker).read()) + 1 if os.path.exists(marker) else 1
open(marker, "w").write(str(attempts))
if attempts == 1:
    print("the API is not answering yet")
    sys.exit(75)  # EX_TEMPFAIL: retry me
name, token = os.path.basename(sys.argv[1]), os.environ["API_TOKEN"]
print(f"counted {len(rows)} rows from {name}; token {token}")
"""


def test_python_steps_chain_files_and_retry_only_when_asked(
        stagecoach_env: Path, monkeypatch: pytest.MonkeyPatch):
    scripts = stagecoach_env / "workflows" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "extract.py").write_text(EXTRACT)
    (scripts / "count.py").write_text(COUNT)
    (scripts / "broken.py").write_text("raise SystemExit('the model file is missing')\n")
    monkeypatch.setenv("SCORE_API_TOKEN", "tok-5f1c2a9e0b7d")
    work = stagecoach_env / "work"
    work.mkdir()
    defs = write_spec(stagecoach_env, f"""
  scoring:
    retry: {{count: 2, delay: 1s, backoff: constant}}
    steps:
      - {{name: extract, kind: python, script: scripts/extract.py, env: {{WORK: {work}}}}}
      - name: count
        kind: python
        script: scripts/count.py
        env: {{WORK: {work}, API_TOKEN: {{env: SCORE_API_TOKEN}}}}
      - {{name: broken, kind: python, script: scripts/broken.py}}
      - {{name: never, kind: sql, into: work.never, sql: "select 1 as x"}}
""")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(f"{WF}_scoring_job").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"stagecoach/triggered_by": "ops@acme.test"})
        logs = "\n".join(e.message for e in instance.all_logs(result.run_id))
    assert step_statuses(result) == {"scoring__extract": "success", "scoring__count": "success",
                                     "scoring__broken": "failure"}
    assert (work / "attempts").read_text() == "2"  # exit 75 was retried, once
    assert "extracted for 20" in logs and "by ops@acme.test" in logs
    assert "counted 3 rows from extract.csv" in logs  # argv[1]: the previous step's output
    assert "tok-5f1c2a9e0b7d" not in logs  # the secret is masked in the run log
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["scoring__count"]  # a bad script is not retried
    message = failure_message(result)
    assert "the model file is missing" in message


def test_pivot_and_concatenate_on_each_warehouse(stagecoach_env: Path,
                                                 warehouse_url: str | None):
    url = warehouse_url
    defs = write_spec(stagecoach_env, """
  regional:
    steps:
      - {name: sales, kind: sql, into: pv.sales, sql: "
          select 'north' as region, 'jan' as month, 10 as amount union all
          select 'north', 'feb', 5 union all select 'north', 'feb', 7 union all
          select 'south', 'jan', 3 union all select 'south', 'Mar 2026', 4"}
      - {name: by_month, kind: pivot, from: pv.sales, into: pv.by_month, index: [region],
         columns: month, values: amount, aggregate: sum}
      - {name: shop, kind: sql, into: pv.shop, sql: "select 'east' as region, 1 as stores"}
      - {name: stacked, kind: concat, sources: [pv.by_month, pv.shop], into: pv.all_regions,
         source_column: source}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "regional", instance)
    assert result.success, [e.event_specific_data.error.message for e in result.all_events
                            if e.is_step_failure]
    query = ("select region, feb, jan, mar_2026, stores, source from pv.all_regions "
             "order by region")
    if url:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.text(query))]
            conn.execute(sa.text("drop schema pv cascade"))
            conn.commit()
        engine.dispose()
    else:
        rows = warehouse(stagecoach_env, query)
    assert [(r[0], *(None if v is None else int(v) for v in r[1:5]), r[5]) for r in rows] == [
        ("east", None, None, None, 1, "pv.shop"),
        ("north", 12, 10, None, None, "pv.by_month"),
        ("south", None, 3, 4, None, "pv.by_month")]
