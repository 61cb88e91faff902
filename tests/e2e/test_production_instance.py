"""The demo workflow on the production setup, as deploy/production describes it: the production
dagster.yaml (PostgreSQL runs, events and schedules; the queued run coordinator) and a
PostgreSQL warehouse, served by three real processes - a gRPC code server
(`dagster code-server start`), `dagster-webserver` and `dagster-daemon run` - reading
deploy/production/workspace.yaml. Two runs are launched over GraphQL; they share a
`stagecoach/mutex`, so the daemon's queue must start the second only after the first ended.

Each process runs in its own session on a free loopback port and is stopped by ending its
process group.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from orchestration.cli.demo_data import generate
from tests.conftest import free_port, fresh_database, need_server, wait_for_port
from tests.e2e.dagster_dev import (
    LOCATION,
    REPOSITORY,
    DagsterDev,
    http_ok,
    location_state,
    run_details,
    stop_group,
    wait_for_run,
)
from tests.integration.test_postgres import delivered, demo_workflows
from tests.integration.test_production_config import install_home, instance_env

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
WORKSPACE = REPO / "deploy" / "production" / "workspace.yaml"
DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
START_TIMEOUT, RUN_TIMEOUT = 180.0, 420.0
MUTEX = {"stagecoach/mutex": "acme_warehouse"}


@dataclass
class Stack:
    """The three processes and what they share."""

    web: DagsterDev
    home: Path
    instance_url: str
    warehouse_url: str
    outbox: Path
    logs: dict[str, Path]

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name}\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:])
            for name, path in self.logs.items() if path.exists())


def start(name: str, command: list[str], env: dict[str, str], root: Path
          ) -> tuple[subprocess.Popen, Path]:
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, log


@pytest.fixture
def production_stack(tmp_path: Path) -> Iterator[Stack]:
    for program in ("dagster", "dagster-webserver", "dagster-daemon"):
        if not os.access(BIN / program, os.X_OK):
            need_server(program, f"{BIN / program} is missing (pip install -e '.[dev]')")
    landing, outbox = tmp_path / "landing", tmp_path / "outbox"
    generate(landing, DAYS)
    workflows = demo_workflows(tmp_path / "workflows", landing, outbox)
    with fresh_database("stagecoach_instance") as instance_url, \
            fresh_database("stagecoach_warehouse") as warehouse_url:
        home = install_home(tmp_path / "dagster_home")
        code_port, web_port = free_port(), free_port()
        env = {**os.environ, **instance_env(instance_url, tmp_path / "compute_logs"),
               "DAGSTER_HOME": str(home),
               "STAGECOACH_CODE_SERVER_HOST": "127.0.0.1",
               "STAGECOACH_CODE_SERVER_PORT": str(code_port),
               "STAGECOACH_WORKFLOWS_DIR": str(workflows),
               "STAGECOACH_DATA_DIR": str(tmp_path / "data"),
               "STAGECOACH_WAREHOUSE_URL": warehouse_url}
        env.pop("STAGECOACH_EXECUTOR", None)  # the default: steps in each run's process
        processes: dict[str, subprocess.Popen] = {}
        logs: dict[str, Path] = {}
        try:
            processes["code"], logs["code"] = start("code_server", [
                str(BIN / "dagster"), "code-server", "start", "-m", "orchestration.definitions",
                "-h", "127.0.0.1", "-p", str(code_port), "--location-name", LOCATION],
                env, tmp_path)
            if not wait_for_port(code_port, processes["code"], timeout=START_TIMEOUT):
                pytest.fail(f"the code server did not start:\n{logs['code'].read_text()}",
                            pytrace=False)
            processes["web"], logs["web"] = start("webserver", [
                str(BIN / "dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1",
                "-p", str(web_port)], env, tmp_path)
            processes["daemon"], logs["daemon"] = start("daemon", [
                str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)], env, tmp_path)
            web = DagsterDev(web_port, tmp_path, workflows, outbox, "", logs["web"])
            stack = Stack(web, home, instance_url, warehouse_url, outbox, logs)
            state, error, deadline = "LOADING", "", time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and processes["web"].poll() is None:
                if http_ok(f"{web.url}/server_info"):
                    state, error = location_state(web)
                    if state != "LOADING":
                        break
                time.sleep(1)
            assert state == "LOADED", (state, error, stack.log_tails())
            yield stack
        finally:
            survivors = [s for p in processes.values() for s in stop_group(p)]
        assert not survivors, f"processes outlived their group: {survivors}"


def fetch(url: str, sql: str, **params) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(sql).bindparams(*(sa.bindparam(name, expanding=True)
                                              for name, value in params.items()
                                              if isinstance(value, tuple)))
            return [tuple(row) for row in conn.execute(query, params)]
    finally:
        engine.dispose()


def test_demo_runs_end_to_end_on_the_production_instance(production_stack: Stack):
    stack, client = production_stack, production_stack.web.client()
    started = time.monotonic()
    run_ids = [client.submit_job_execution(
        "acme_retail_job", repository_location_name=LOCATION, repository_name=REPOSITORY,
        tags={"dagster/partition": day.isoformat(), **MUTEX}) for day in DAYS]
    for run_id in run_ids:
        status = wait_for_run(stack.web, run_id, timeout=RUN_TIMEOUT)
        details = run_details(stack.web, run_id)
        assert status == "SUCCESS", (status, details["failures"], stack.log_tails())
    print(f"two demo runs through the queue in {time.monotonic() - started:.1f} s",
          file=sys.stderr)

    # Runs and their events are in the instance's PostgreSQL database, and nowhere else.
    runs = dict(fetch(stack.instance_url, "SELECT run_id, status FROM runs"))
    assert runs == dict.fromkeys(run_ids, "SUCCESS")
    kinds = {k: k.value for k in (dg.DagsterEventType.RUN_ENQUEUED,  # stored as PIPELINE_*
                                  dg.DagsterEventType.RUN_START,
                                  dg.DagsterEventType.RUN_SUCCESS,
                                  dg.DagsterEventType.ASSET_MATERIALIZATION)}
    events = fetch(stack.instance_url, "SELECT run_id, dagster_event_type, timestamp "
                   "FROM event_logs WHERE dagster_event_type IN :kinds",
                   kinds=tuple(kinds.values()))
    at = {(run, dg.DagsterEventType(kind)): stamp for run, kind, stamp in events}
    enqueued, begun, succeeded = (dg.DagsterEventType.RUN_ENQUEUED,
                                  dg.DagsterEventType.RUN_START,
                                  dg.DagsterEventType.RUN_SUCCESS)
    first, second = run_ids
    for run_id in run_ids:  # both went through the queue
        assert (run_id, enqueued) in at and (run_id, begun) in at, at
    # Same stagecoach/mutex: the daemon held the second run until the first had ended.
    assert at[(second, begun)] >= at[(first, succeeded)], at
    materialized = [run for run, kind, _ in events
                    if kind == dg.DagsterEventType.ASSET_MATERIALIZATION.value]
    assert materialized.count(first) == materialized.count(second) == 17  # every asset
    assert not list(stack.home.rglob("*.db")), "an instance store fell back to SQLite"

    # The warehouse tables are in the PostgreSQL warehouse.
    wh = stack.warehouse_url
    assert fetch(wh, 'SELECT "_partition", count(*) FROM "domain"."orders" GROUP BY 1 '
                     "ORDER BY 1") == [("2026-11-01", 400), ("2026-11-02", 400)]
    assert fetch(wh, 'SELECT count(*) FROM "domain"."customers"') == [(2000,)]
    # Identity resolution ran in the PostgreSQL warehouse too, keeping its ids on day two.
    assert fetch(wh, 'SELECT count(*) FROM "identity"."customers_map"') == fetch(
        wh, 'SELECT (SELECT count(*) FROM "domain"."customers") + (SELECT count(*) FROM '
            '"domain"."loyalty_members")')
    assert fetch(wh, 'SELECT count(*) FROM "identity"."customers_id_changes"') == [(0,)]
    segment = fetch(wh, 'SELECT count(*) FROM "query"."high_value_customers"')[0][0]
    assert segment > 0

    # Both days' files were delivered, and the ledger in the warehouse has their md5s.
    files = delivered(stack.outbox)
    assert sorted(files) == [
        "crm/high_value_customers_2026-11-01.csv", "crm/high_value_customers_2026-11-02.csv",
        "partner/acme_high_value_20261101.txt", "partner/acme_high_value_20261102.txt"]
    ledger = {(name, status, md5) for name, status, md5 in fetch(
        wh, "SELECT file_name, status, md5 FROM stagecoach.file_history")}
    assert ledger == {(Path(name).name, "delivered", hashlib.md5(body).hexdigest())
                      for name, body in files.items()}
    assert len(fetch(wh, "SELECT 1 FROM stagecoach.file_history")) == 4
