"""A chain whose children include courier groups' jobs, under a real `dagster dev`: the chain's
run launches each group's run over GraphQL, waits for it, and goes on only after a success."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from tests.e2e.dagster_dev import (
    LOCATION,
    REPO,
    REPOSITORY,
    DagsterDev,
    run_details,
    running_dagster_dev,
    wait_for_run,
)

pytestmark = pytest.mark.timeout(600)
WF = "chn"
PEOPLE = "id,name\n1,Ada\n2,Grace\n3,Linus\n"

RUNS = """
query ($tag: String!) { runsOrError(filter: {tags: [{key: "stagecoach/parent_run",
    value: $tag}]}) { ... on Runs { results { runId jobName status startTime endTime
    tags { key value } } } } }
"""
STEP_TIMES = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run {
    stepStats { stepKey status startTime endTime } } } }
"""


def spec(root) -> str:
    return f"""
workflow: {{name: {WF}}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
  pg: {{kind: sql, url: {{env: SLOW_DB_URL}}}}
couriers:
  people: {{from: landing, path: people.csv}}
  absent: {{from: landing, path: absent.csv}}
  slow: {{from: pg, query: "select 1 as id from pg_sleep(45)"}}
domain_tables:
  people:
    from: people
    columns:
      customer_id: {{source: id, tag: id}}
      name: {{tag: name}}
courier_groups:
  intake: {{couriers: [people], run: load_and_build}}
  broken_intake: {{couriers: [absent], run: load}}
  slow_intake: {{couriers: [slow], run: load}}
automations:
  count_people:
    steps:
      - {{kind: sql, into: work.people_count, sql: "select count(*) as n from domain.people"}}
  nightly:
    chain: [intake, count_people]
  stops_early:
    chain: [broken_intake, count_people]
  waits:
    chain: [slow_intake, count_people]
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[DagsterDev]:
    root = tmp_path_factory.mktemp("chain_jobs")
    for folder in ("landing", "workflows", "data", "dagster_home"):
        (root / folder).mkdir()
    (root / "landing" / "people.csv").write_text(PEOPLE)
    (root / "workflows" / f"{WF}.yaml").write_text(spec(root))
    (root / "dagster_home" / "dagster.yaml").write_text(
        (REPO / "deploy" / "dagster.yaml").read_text() + "telemetry:\n  enabled: false\n")
    port = free_port()
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           "STAGECOACH_DAGSTER_URL": f"http://127.0.0.1:{port}", "SLOW_DB_URL": postgres_url}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    with running_dagster_dev(root, root / "workflows", env, port=port) as dagster:
        yield dagster


def launch(dev: DagsterDev, chain: str) -> str:
    return dev.client().submit_job_execution(
        f"{WF}_{chain}_job", repository_location_name=LOCATION, repository_name=REPOSITORY)


def children(dev: DagsterDev, run_id: str) -> list[dict]:
    return dev.graphql(RUNS, {"tag": run_id})["runsOrError"]["results"]


def test_a_chain_runs_a_groups_job_then_its_next_child(dev: DagsterDev):
    run_id = launch(dev, "nightly")
    assert wait_for_run(dev, run_id) == "SUCCESS", run_details(dev, run_id)
    [child] = children(dev, run_id)
    assert child["jobName"] == f"{WF}_intake_job"
    assert child["status"] == "SUCCESS"
    tags = {t["key"]: t["value"] for t in child["tags"]}
    assert tags["stagecoach/triggered_by"] == "chain:nightly"
    steps = {s["stepKey"]: s for s in dev.graphql(STEP_TIMES, {"runId": run_id})[
        "runOrError"]["stepStats"]}
    # The next child started only after the group's run had ended.
    assert steps["count_people__step1_sql"]["startTime"] >= child["endTime"]
    import duckdb

    with duckdb.connect(str(dev.root / "data" / "warehouse.duckdb"), read_only=True) as db:
        assert db.execute("select n from work.people_count").fetchall() == [(3,)]


def test_a_failed_group_run_stops_the_chain(dev: DagsterDev):
    run_id = launch(dev, "stops_early")
    assert wait_for_run(dev, run_id) == "FAILURE"
    [child] = children(dev, run_id)
    assert (child["jobName"], child["status"]) == (f"{WF}_broken_intake_job", "FAILURE")
    details = run_details(dev, run_id)
    failures = " ".join(details["failures"])
    assert f"`{WF}_broken_intake_job` run {child['runId']} ended FAILURE; the chain stops" \
        in failures
    steps = {s["stepKey"]: s["status"] for s in dev.graphql(STEP_TIMES, {"runId": run_id})[
        "runOrError"]["stepStats"]}
    assert "count_people__step1_sql" not in steps or steps["count_people__step1_sql"] in (
        None, "SKIPPED")


def test_terminating_a_chain_terminates_the_group_run_it_waits_for(dev: DagsterDev):
    run_id = launch(dev, "waits")
    deadline, child = time.monotonic() + 120, None
    while time.monotonic() < deadline and not child:
        started = [c for c in children(dev, run_id) if c["status"] == "STARTED"]
        child = started[0] if started else None
        time.sleep(1)
    assert child, f"the group's run never started: {children(dev, run_id)}"
    dev.client().terminate_run(run_id)
    assert wait_for_run(dev, run_id) == "CANCELED"
    assert wait_for_run(dev, child["runId"]) == "CANCELED"
