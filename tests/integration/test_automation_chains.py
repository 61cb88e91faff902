"""Chains of automations (in series and in parallel), run-as profiles on a real PostgreSQL,
and cancel-retry of a step waiting for its retry, from the CLI and from the UI's job."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from assets.automations import request_cancel_retry
from assets.names import CANCEL_RETRY_TAG, RUN_AS_TAG
from tests.integration.test_automations import (
    failure_message,
    run,
    step_statuses,
    warehouse,
    write_spec,
)

pytestmark = pytest.mark.timeout(180)
WF = "auto"
STEPS = """
  load:
    steps:
      - {name: numbers, kind: sql, into: work.numbers,
         sql: "select range as n, {{ params.region }} as region from range(3)"}
  broken:
    steps:
      - {name: bad, kind: sql, sql: "insert into work.numbers select * from work.nope"}
  publish:
    params: {region: us}
    steps:
      - {name: copy, kind: sql, into: work.published,
         sql: "select n, {{ params.region }} as region from work.numbers"}
"""


def tables(root: Path) -> set[str]:
    return {name for (name,) in warehouse(root, "select table_name from "
                                                "information_schema.tables where "
                                                "table_schema = 'work'")}


def test_a_series_chain_stops_at_its_failed_child(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, STEPS + """
  nightly:
    chain: [load, broken, publish]
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "nightly", instance)
    assert not result.success
    assert step_statuses(result) == {"load__numbers": "success", "broken__bad": "failure"}
    assert tables(stagecoach_env) == {"numbers"}  # publish never ran
    dg.Definitions.validate_loadable(defs)  # op, graph and job names unique in the location
    job = defs.resolve_job_def(f"{WF}_nightly_job")
    assert job.metadata["children"].value == ["load", "broken", "publish"]
    assert "load → broken → publish" in (job.description or "")


def test_a_disabled_automation_says_so_and_its_schedule_is_stopped(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, STEPS.replace("  publish:\n", """  publish:
    enabled: false
    schedule: {cron: "0 6 * * *"}
"""))
    job = defs.resolve_job_def(f"{WF}_publish_job")
    assert job.metadata["enabled"].value is False
    assert (job.description or "").startswith("Disabled (its schedule is stopped")
    schedule = defs.resolve_schedule_def(f"{WF}_publish_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert "enabled" not in defs.resolve_job_def(f"{WF}_load_job").metadata


def test_a_parallel_chain_runs_every_child_and_fails_if_one_does(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, STEPS + """
  side_by_side:
    chain: [load, broken]
    mode: parallel
  after_load:
    chain: [load, publish]
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "side_by_side", instance)
        assert not result.success
        assert step_statuses(result) == {"load__numbers": "success", "broken__bad": "failure"}
        # A child automation is still a job of its own; the chain reuses its ops.
        assert run(defs, "after_load", instance).success
    assert warehouse(stagecoach_env, "select n, region from work.published order by n") == [
        (0, "us"), (1, "us"), (2, "us")]


def test_chains_nest_and_each_chains_params_override_what_it_runs(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, STEPS + """
  inner:
    params: {region: emea}
    mutex: warehouse_writes
    chain: [load, publish]
  outer:
    chain: [inner]
  top:
    params: {region: apac}
    chain: [outer]
""")
    # The inner chain's mutex is held by every job that runs it, however deep.
    assert {defs.resolve_job_def(f"{WF}_{name}_job").tags.get("stagecoach/mutex")
            for name in ("inner", "outer", "top")} == {"warehouse_writes"}
    regions = "select distinct region from work.{} order by 1"
    with dg.instance_for_test() as instance:
        assert run(defs, "outer", instance).success  # no params of its own: inner's apply
        assert warehouse(stagecoach_env, regions.format("numbers")) == [("emea",)]
        assert warehouse(stagecoach_env, regions.format("published")) == [("emea",)]
        assert run(defs, "top", instance).success  # the outermost chain wins
        assert warehouse(stagecoach_env, regions.format("published")) == [("apac",)]
        assert run(defs, "publish", instance).success  # alone: its own defaults
    assert warehouse(stagecoach_env, regions.format("published")) == [("us",)]


@pytest.fixture
def batch_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A second PostgreSQL login (the run-as account) and a table both accounts write to."""
    role = f"stagecoach_batch_{secrets.token_hex(3)}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("drop table if exists whoami"))
        conn.execute(sa.text("create table whoami (who text, run text)"))
        conn.execute(sa.text(f'create role "{role}" login'))
        conn.execute(sa.text(f'grant insert, select on whoami to "{role}"'))
    batch_url = sa.make_url(postgres_url).set(username=role).render_as_string(
        hide_password=False)
    yield role, batch_url
    with engine.connect() as conn:
        conn.execute(sa.text("drop table whoami"))
        conn.execute(sa.text(f'drop role "{role}"'))
    engine.dispose()


def test_scheduled_runs_use_the_run_as_profiles_connections(
        stagecoach_env: Path, postgres_url: str, batch_role: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch):
    role, batch_url = batch_role
    monkeypatch.setenv("CRM_DB_URL", postgres_url)
    monkeypatch.setenv("CRM_BATCH_DB_URL", batch_url)
    defs = write_spec(stagecoach_env, """
  stamp:
    run_as: batch
    schedule: {cron: "0 3 * * *"}
    steps:
      - {kind: sql, connection: crm,
         sql: "insert into whoami values (current_user, {{ params.label }})"}
    params: {label: manual}
  plain_stamp:
    steps:
      - {kind: sql, connection: crm,
         sql: "insert into whoami values (current_user, {{ params.label }})"}
    params: {label: chained}
  as_batch:
    run_as: batch
    chain: [plain_stamp]
""", extra="""
  crm_batch: {kind: sql, url: {env: CRM_BATCH_DB_URL}}
profiles:
  batch:
    description: The nightly batch account.
    connections: {crm: crm_batch}
""")
    schedule = defs.resolve_schedule_def(f"{WF}_stamp_schedule")
    with dg.build_schedule_context(scheduled_execution_time=None) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.tags[RUN_AS_TAG] == "batch"
    assert request.tags["stagecoach/triggered_by"] == f"schedule:{WF}_stamp_schedule"
    job = defs.resolve_job_def(f"{WF}_stamp_job")
    assert job.metadata["run_as"].value == "batch"
    with dg.instance_for_test() as instance:
        scheduled = job.execute_in_process(
            instance=instance, tags=request.tags,
            run_config={"ops": {"stamp__step1_sql": {"config": {"params": {
                "label": "scheduled"}}}}})
        assert scheduled.success
        assert run(defs, "stamp", instance).success  # a manual launch: the usual account
        # A profile only a chain names is the chain's: the step's own job may not borrow it.
        borrowed = defs.resolve_job_def(f"{WF}_plain_stamp_job").execute_in_process(
            instance=instance, tags={RUN_AS_TAG: "batch"}, raise_on_error=False)
        assert run(defs, "as_batch", instance, tags={RUN_AS_TAG: "batch"}).success
    assert not borrowed.success
    message = failure_message(borrowed)
    assert ("run as profile 'batch', which automation `plain_stamp` does not name for this "
            "step (run_as: none)") in message
    with sa.create_engine(postgres_url).connect() as conn:
        rows = set(conn.execute(sa.text("select who, run from whoami")).fetchall())
    assert rows == {(role, "scheduled"), ("postgres", "manual"), (role, "chained")}


RETRYING_SCRIPT = """\
import pathlib, sys
attempts = pathlib.Path(sys.argv[1])
attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
sys.exit(75)  # EX_TEMPFAIL: ask for a retry
"""


@pytest.mark.parametrize("how", ["cli", "ui_job"])
def test_cancel_retry_ends_the_run_as_failed_without_another_attempt(
        stagecoach_env: Path, tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch):
    script = stagecoach_env / "workflows" / "flaky.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(RETRYING_SCRIPT, encoding="utf-8")
    attempts = tmp_path / "attempts.txt"
    defs = write_spec(stagecoach_env, f"""
  flaky:
    # The cancel (a CLI process importing Dagster) must land within the delay, even on a
    # loaded machine: 10 s was once too short there.
    retry: {{count: 5, delay: 20s, backoff: constant}}
    steps:
      - {{kind: python, script: flaky.py, args: ["{attempts}"]}}
""")
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        results: list[dg.ExecuteInProcessResult] = []
        runner = threading.Thread(target=lambda: results.append(run(defs, "flaky", instance)))
        runner.start()
        run_id = _wait_for_retry(instance)
        if how == "cli":
            cancel = subprocess.run(
                [sys.executable, "-m", "orchestration", "cancel-retry", run_id, "--by", "ops"],
                capture_output=True, text=True, timeout=60, check=False)
            assert cancel.returncode == 0, cancel.stderr
            assert f"run {run_id} ({WF}_flaky_job): retries cancelled" in cancel.stdout
        else:
            assert defs.resolve_job_def(f"{WF}_cancel_retry_job").execute_in_process(
                instance=instance, run_config={"ops": {f"{WF}_cancel_retry": {"config": {
                    "run_id": run_id, "by": "ops"}}}}).success
        runner.join(timeout=60)
        [result] = results
        assert not result.success
        assert attempts.read_text() == "x"  # the cancelled retry never ran the script
        failures = [e for e in result.all_events if e.is_step_failure]
        assert len(failures) == 1
        message = failures[0].event_specific_data.error.message
        assert "retry 1 not run: the retries were cancelled (by ops at" in message
        assert instance.get_run_by_id(run_id).tags[CANCEL_RETRY_TAG].startswith("by ops at")
        with pytest.raises(ValueError, match="already ended \\(FAILURE\\)"):
            request_cancel_retry(instance, run_id, "ops")
        late = subprocess.run(
            [sys.executable, "-m", "orchestration", "cancel-retry", run_id],
            capture_output=True, text=True, timeout=60, check=False)
        assert late.returncode == 1
        assert "already ended (FAILURE)" in late.stderr


def _wait_for_retry(instance: dg.DagsterInstance) -> str:
    """The run id, once its step has failed and waits for a retry."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for record in instance.get_run_records():
            if record.dagster_run.job_name != f"{WF}_flaky_job":
                continue
            events = instance.all_logs(record.dagster_run.run_id,
                                       of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            if events:
                return record.dagster_run.run_id
        time.sleep(0.2)
    raise AssertionError("the step never asked for a retry")


CONNECTION_SCRIPT = """\
import os, pathlib, sys
pathlib.Path(sys.argv[1]).write_text(os.environ["STAGECOACH_CONN_CRM_URL"])
print("connecting to", os.environ["STAGECOACH_CONN_CRM_URL"])
"""


@pytest.mark.security
def test_scripts_get_connection_details_and_the_run_as_swap(
        stagecoach_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    usual, batch = "postgresql://usual:s3cr3t-usual@db.invalid/crm", \
        "postgresql://batch:s3cr3t-batch@db.invalid/crm"
    monkeypatch.setenv("CRM_DB_URL", usual)
    monkeypatch.setenv("CRM_BATCH_DB_URL", batch)
    (stagecoach_env / "workflows").mkdir(exist_ok=True)
    (stagecoach_env / "workflows" / "connect.py").write_text(CONNECTION_SCRIPT)
    seen = tmp_path / "seen.txt"
    defs = write_spec(stagecoach_env, f"""
  export:
    run_as: batch
    steps:
      - {{kind: python, script: connect.py, args: ["{seen}"], connections: [crm]}}
""", extra="""
  crm_batch: {kind: sql, url: {env: CRM_BATCH_DB_URL}}
profiles:
  batch: {connections: {crm: crm_batch}}
""")
    job = defs.resolve_job_def(f"{WF}_export_job")
    with dg.instance_for_test() as instance:
        for tags, expected in (({}, usual), ({RUN_AS_TAG: "batch"}, batch)):
            result = job.execute_in_process(instance=instance, tags=tags)
            assert result.success
            assert seen.read_text() == expected
            logs = " ".join(e.user_message for e in instance.all_logs(result.run_id))
            assert "connecting to ***" in logs
            assert "s3cr3t" not in logs
        monkeypatch.delenv("CRM_BATCH_DB_URL")
        unset = job.execute_in_process(instance=instance, tags={RUN_AS_TAG: "batch"},
                                       raise_on_error=False)
    message = failure_message(unset)
    assert ("environment variable CRM_BATCH_DB_URL (for connection crm_batch: url) is not set"
            in message)
