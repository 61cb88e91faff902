"""Steps on Celery workers: a workflow run whose every step executes in one of two
`dagster-celery` worker processes, not in the process that launched the run.

What a deployment shares, set up as it would be: a persistent Dagster instance (PostgreSQL
storage, a database created for the test), a PostgreSQL warehouse (another database), one
STAGECOACH_DATA_DIR and the Redis broker on 127.0.0.1:6379. The test uses Redis database
REDIS_DB and a queue of its own, so it neither sees nor takes another run's tasks. The
workers are started in their own sessions and stopped by ending their process groups.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import POSTGRES_ADMIN_URL, drop_database, need_server
from tests.e2e.dagster_dev import REPO, process_tree, stop_group

pytestmark = pytest.mark.timeout(600)
WORKFLOW = "celery_e2e"
REDIS_DB = 11  # the tests' own Redis database: nothing else on the machine uses it
WORKER_START_TIMEOUT, RUN_TIMEOUT = 120.0, 300.0
VENV_BIN = REPO / ".venv" / "bin"

CUSTOMERS = "id,name\n1,ada lovelace\n2,grace hopper\n3,alan turing\n"
PRODUCTS = "id,title\np1,Lamp\np2,Desk\n"
ORDERS = ("order_id,customer_id,product_id,amount\n"
          "o1,1,p1,10.50\no2,1,p2,20.00\no3,2,p1,5.25\no4,3,p2,7.00\n")


def spec(root: Path) -> str:
    # Three couriers and three feeds with no dependency between them: the executor submits
    # them together, so both workers get steps.
    return f"""
workflow:
  name: {WORKFLOW}
  owners: [team:data]
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
  outbox: {{kind: folder, path: {root / 'outbox'}}}
couriers:
  customers: {{from: landing, path: customers.csv}}
  products: {{from: landing, path: products.csv}}
  orders: {{from: landing, path: orders.csv}}
domain_tables:
  customers:
    from: customers
    primary_key: [customer_id]
    columns:
      customer_id: {{source: id, tag: id}}
      name: {{tag: name}}
  products:
    from: products
    columns:
      product_id: {{source: id, tag: id}}
      title: {{tag: text}}
  orders:
    from: orders
    columns:
      order_id: {{tag: id}}
      customer_id: {{tag: id}}
      product_id: {{tag: id}}
      amount: {{tag: decimal}}
queries:
  spend:
    sql: >-
      select c.customer_id, c.name, count(distinct p.product_id) as products,
             sum(o.amount) as total
      from domain.customers c
      join domain.orders o on o.customer_id = c.customer_id
      join domain.products p on p.product_id = o.product_id
      group by c.customer_id, c.name order by c.customer_id
    checks: {{min_rows: 1}}
activations:
  partner:
    query: spend
    to: outbox
    file: {{name: spend.csv}}
"""


def _redis_or_skip(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as failed:
        need_server("redis", f"Redis at 127.0.0.1:6379 is unreachable: {failed}")


def _create_database(admin: sa.Engine, purpose: str) -> str:
    name = f"stagecoach_{purpose}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as failed:
        need_server("postgres", f"PostgreSQL at 127.0.0.1:5432 is unreachable: "
                                f"{str(failed.orig).strip().splitlines()[0]}")
    return name


@dataclass
class CeleryDeployment:
    root: Path
    env: dict[str, str]
    dagster_home: Path
    warehouse_url: str
    queue: str
    broker: str
    worker_yaml: Path
    run_ids: list[str]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[CeleryDeployment]:
    """Everything the launching process and the workers share, as environment and files."""
    if not os.access(VENV_BIN / "dagster-celery", os.X_OK):
        need_server("dagster-celery", "dagster-celery is not installed (pip install -e .)")
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    _redis_or_skip(broker)
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    databases: list[str] = []
    queue = f"stagecoach_test_{secrets.token_hex(4)}"
    run_ids: list[str] = []  # filled by the test, for the clean-up
    try:
        databases.append(_create_database(admin, "instance"))
        databases.append(_create_database(admin, "warehouse"))
        instance_url, warehouse_url = (
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}" for name in databases)
        for folder in ("landing", "outbox", "workflows", "data", "dagster_home"):
            (tmp_path / folder).mkdir()
        for name, text in (("customers", CUSTOMERS), ("products", PRODUCTS),
                           ("orders", ORDERS)):
            (tmp_path / "landing" / f"{name}.csv").write_text(text)
        (tmp_path / "workflows" / f"{WORKFLOW}.yaml").write_text(spec(tmp_path))
        dagster_home = tmp_path / "dagster_home"
        (dagster_home / "dagster.yaml").write_text(yaml.safe_dump({
            "storage": {"postgres": {"postgres_url": instance_url}},
            "telemetry": {"enabled": False}}))
        # The instance's tables are created once, as a deployment's `dagster instance
        # migrate` would: two workers starting together would otherwise race to create them.
        with dg.DagsterInstance.from_config(str(dagster_home)):
            pass
        env = {**os.environ,
               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "DAGSTER_HOME": str(dagster_home),
               "STAGECOACH_WORKFLOWS_DIR": str(tmp_path / "workflows"),
               "STAGECOACH_DATA_DIR": str(tmp_path / "data"),
               "STAGECOACH_WAREHOUSE_URL": warehouse_url,
               "STAGECOACH_EXECUTOR": "celery",
               "STAGECOACH_CELERY_BROKER": broker,
               "STAGECOACH_CELERY_BACKEND": broker,
               "STAGECOACH_CELERY_QUEUE": queue}
        worker_yaml = tmp_path / "celery_worker.yaml"
        worker_yaml.write_text(_worker_yaml(env))
        yield CeleryDeployment(tmp_path, env, dagster_home, warehouse_url, queue, broker,
                               worker_yaml, run_ids)
    finally:
        for name in databases:
            drop_database(admin, name)
        admin.dispose()
        _forget_queue(broker, queue, run_ids)


def _worker_yaml(env: dict[str, str]) -> str:
    """The worker side's config, built by Stagecoach from the same variables as the executor."""
    script = ("import yaml; from orchestration.executors import celery_worker_config; "
              "print(yaml.safe_dump(celery_worker_config()))")
    made = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return made.stdout


def _forget_queue(broker: str, queue: str, run_ids: list[str]) -> None:
    """Delete this test's keys from the tests' Redis database: its queue, its bindings and the
    results of its run's tasks."""
    import redis

    client = redis.Redis.from_url(broker, socket_connect_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*"))
        for key in client.scan_iter(match="celery-task-meta-*"):
            value = client.get(key) or b""
            if any(run_id.encode() in value for run_id in run_ids):
                keys.append(key)
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        client.close()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start_worker(deployment: CeleryDeployment, name: str) -> Worker:
    log = deployment.root / f"worker_{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
             "-y", str(deployment.worker_yaml), "-q", deployment.queue, "-n", name,
             "-l", "INFO", "--", "--concurrency=1", "--without-gossip", "--without-mingle"],
            cwd=REPO, env=deployment.env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    return Worker(name, process, log)


def _wait_ready(workers: list[Worker]) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while time.monotonic() < deadline:
        if any(w.process.poll() is not None for w in workers):
            break
        if all(" ready." in w.text() for w in workers):
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {w.name} (exit {w.process.poll()}):\n{w.text()[-3000:]}"
                     for w in workers)
    pytest.fail(f"the Celery workers did not become ready:\n{logs}", pytrace=False)


def _pids(workers: list[Worker]) -> dict[int, str]:
    """Every process of each worker's tree (dagster-celery, celery, its pool) → worker name."""
    return {p.pid: w.name for w in workers for p in process_tree(w.process)}


STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
               dg.DagsterEventType.ASSET_MATERIALIZATION,
               dg.DagsterEventType.ASSET_CHECK_EVALUATION}
IO_MANAGER_EVENTS = {dg.DagsterEventType.HANDLED_OUTPUT, dg.DagsterEventType.LOADED_INPUT}


def test_steps_run_on_two_celery_workers(deployment: CeleryDeployment):
    started = time.monotonic()
    workers = [_start_worker(deployment, f"{deployment.queue}_{n}") for n in ("a", "b")]
    worker_pids: dict[int, str] = {}
    try:
        _wait_ready(workers)
        ready = time.monotonic()
        run_log = deployment.root / "run.log"
        with open(run_log, "wb") as out:
            launcher = subprocess.Popen(
                [str(VENV_BIN / "dagster"), "job", "execute", "-m", "orchestration.definitions",
                 "-a", "defs", "-j", f"{WORKFLOW}_job"],
                cwd=REPO, env=deployment.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            launcher.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_group(launcher)
        ran = time.monotonic()
        worker_pids = _pids(workers)
    finally:
        survivors = [s for w in workers for s in stop_group(w.process)]
    worker_logs = "\n".join(f"--- {w.name}:\n{w.text()[-4000:]}" for w in workers)
    run_output = run_log.read_text(errors="replace")[-6000:]
    assert launcher.returncode == 0, f"{run_output}\n{worker_logs}"
    print(f"workers ready in {ready - started:.1f} s; run on Celery took {ran - ready:.1f} s",
          file=sys.stderr)

    with dg.DagsterInstance.from_config(str(deployment.dagster_home)) as instance:
        runs = instance.get_runs()
        deployment.run_ids.extend(r.run_id for r in runs)
        assert len(runs) == 1, [r.run_id for r in runs]
        run = runs[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS, run_output
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
        plan = {e.step_key for e in events
                if e.event_type == dg.DagsterEventType.STEP_SUCCESS}
        engine = [e for e in events if e.event_type == dg.DagsterEventType.ENGINE_EVENT]

    # Every step of the workflow succeeded, and the checks (evaluated in their assets' steps)
    # passed: the primary key of domain.customers, the query's row count.
    assert plan == {*(f"{layer}__{name}" for layer, suffix in (("courier", "_file"),
                                                               ("domain", ""))
                      for name in ("customers" + suffix, "products" + suffix,
                                   "orders" + suffix)),
                    "query__spend", "activation__partner"}, sorted(plan)
    checks = {(e.event_specific_data.asset_check_key.name, e.event_specific_data.passed)
              for e in events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    assert len(checks) == 2 and all(passed for _, passed in checks), checks
    # The launching process coordinated (the run's own events carry its pid) ...
    run_start = [e for e in events if e.event_type == dg.DagsterEventType.RUN_START]
    assert [e.pid for e in run_start] == [launcher.pid]
    # ... and every step event came from a worker's process, never the launcher's.
    step_events = [e for e in events if e.event_type in STEP_EVENTS]
    assert step_events
    assert launcher.pid not in worker_pids
    outside = sorted({(e.step_key, e.pid) for e in step_events if e.pid not in worker_pids})
    assert not outside, (outside, worker_pids)
    steps_by_worker: dict[str, set[str]] = {}
    for event in step_events:
        steps_by_worker.setdefault(worker_pids[event.pid], set()).add(event.step_key)
    assert len(steps_by_worker) == 2, steps_by_worker
    # dagster-celery's own record agrees: each step says which worker took it.
    hostnames = {str(e.event_specific_data.metadata["Celery worker"].value).split("@")[0]
                 for e in engine if e.event_specific_data and "Celery worker" in
                 (e.event_specific_data.metadata or {})}
    assert hostnames == {w.name for w in workers}, hostnames
    print("steps per worker: " + "; ".join(f"{w}: {sorted(s)}"
                                           for w, s in sorted(steps_by_worker.items())),
          file=sys.stderr)
    # No IO manager moved a value between steps (they would need storage shared by workers).
    assert not [e for e in events if e.event_type in IO_MANAGER_EVENTS]

    # What the steps did landed where every worker reaches it: the warehouse and the outbox.
    engine_wh = sa.create_engine(deployment.warehouse_url)
    try:
        with engine_wh.connect() as conn:
            rows = conn.execute(sa.text(
                "select customer_id, products, total from query.spend order by customer_id"
            )).all()
    finally:
        engine_wh.dispose()
    assert [(r[0], r[1], float(r[2])) for r in rows] == [
        ("1", 2, 30.5), ("2", 1, 5.25), ("3", 1, 7.0)]
    delivered = (deployment.root / "outbox" / "spend.csv").read_text().splitlines()
    assert delivered[0] == "customer_id,name,products,total" and len(delivered) == 4, delivered
    assert not survivors, f"processes outlived the workers' groups: {survivors}"
