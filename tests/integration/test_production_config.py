"""deploy/production: the production dagster.yaml loads on a fresh PostgreSQL database with its
settings as written, the gRPC workspace finds the code server, and the paper configs (Procfile,
systemd units, Helm values) say the same thing as the files Dagster reads."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from tests.conftest import fresh_database

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "deploy" / "production"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME",
          "DAGSTER_PG_PASSWORD")


def instance_env(url: str, compute_logs: Path) -> dict[str, str]:
    """The variables deploy/production/dagster.yaml reads, for the database at `url`."""
    parsed = make_url(url)
    return {"DAGSTER_PG_HOST": parsed.host or "", "DAGSTER_PG_PORT": str(parsed.port or 5432),
            "DAGSTER_PG_DB": parsed.database or "", "DAGSTER_PG_USERNAME": parsed.username or "",
            "DAGSTER_PG_PASSWORD": parsed.password or "",
            "DAGSTER_COMPUTE_LOGS_DIR": str(compute_logs)}


def install_home(folder: Path) -> Path:
    """A DAGSTER_HOME holding the production dagster.yaml, as an operator installs it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PRODUCTION / "dagster.yaml", folder / "dagster.yaml")
    return folder


@pytest.fixture
def instance_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """(DAGSTER_HOME, database URL): a fresh database and the variables pointing at it."""
    with fresh_database("stagecoach_instance") as url:
        for name, value in instance_env(url, tmp_path / "compute_logs").items():
            monkeypatch.setenv(name, value)
        yield install_home(tmp_path / "dagster_home"), url


def test_production_instance_loads_on_postgres(instance_db: tuple[Path, str]):
    home, url = instance_db
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Runs, events and schedules all in PostgreSQL, through psycopg2.
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.run_storage.postgres_url.startswith(
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{make_url(url).database}?")
        # Dagster's queue, which also gives a bare GraphQL launch of a dated job its day.
        assert type(instance.run_coordinator).__name__ == "DatedRunCoordinator"
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # runs start within 1 s
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"

        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 10
        limits = {limit["key"]: limit for limit in queue.tag_concurrency_limits}
        for key in ("stagecoach/serial", "stagecoach/mutex"):
            assert limits[key] == {"key": key, "value": {"applyLimitPerUniqueValue": True},
                                   "limit": 1}
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"

        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 300
        assert instance.run_monitoring_max_runtime_seconds == 0  # no instance-wide kill
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.telemetry_enabled is False
        assert instance.compute_log_manager._base_dir == str(home.parent / "compute_logs")

        # What the instance writes lands in that database.
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(),
                                          tags={"stagecoach/test": "production"})
        instance.report_engine_event("written by the production config test", run)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT run_id, pipeline_name FROM runs")).all()
            events = conn.execute(sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"),
                                  {"r": run.run_id}).scalar()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert [tuple(r) for r in runs] == [(run.run_id, "noop")]
    assert events >= 1
    assert {"runs", "event_logs", "instigators", "job_ticks", "concurrency_limits"} <= tables


def test_local_instance_limits_are_kept_in_production():
    """Every run-queue limit of the local instance (deploy/dagster.yaml) is in production."""
    local = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    production = yaml.safe_load((PRODUCTION / "dagster.yaml").read_text())
    kept = production["concurrency"]["runs"]["tag_concurrency_limits"]
    for limit in local["concurrency"]["runs"]["tag_concurrency_limits"]:
        assert limit in kept, f"deploy/production/dagster.yaml lost the limit {limit}"


@pytest.mark.parametrize("missing", ["DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"])
def test_a_missing_variable_is_named_and_no_secret_shown(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          missing: str):
    secret = "not-a-real-password-5f1c"
    for name, value in instance_env("postgresql+psycopg2://postgres@127.0.0.1:5432/nowhere",
                                    tmp_path / "logs").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", secret)
    monkeypatch.delenv(missing)
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.DagsterInstance.from_config(str(install_home(tmp_path / "home")))
    message = str(refused.value)
    assert f'"{missing}" which is not set' in message, message
    assert secret not in message


def test_workspace_points_at_the_code_server(monkeypatch: pytest.MonkeyPatch):
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    monkeypatch.setenv("STAGECOACH_CODE_SERVER_HOST", "10.1.2.3")
    monkeypatch.setenv("STAGECOACH_CODE_SERVER_PORT", "4123")
    [origin] = location_origins_from_yaml_paths([str(PRODUCTION / "workspace.yaml")])
    assert (type(origin).__name__, origin.host, origin.port, origin.location_name) == (
        "GrpcServerCodeLocationOrigin", "10.1.2.3", 4123, "stagecoach")


def procfile() -> dict[str, str]:
    lines = (PRODUCTION / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_procfile_and_systemd_units_run_the_same_commands():
    processes = procfile()
    assert set(processes) == {"code", "web", "daemon", "webhook", "worker"}
    # The code server serves the location the workspace names, on the port the example
    # environment gives the webserver and the daemon.
    assert "-m orchestration.definitions" in processes["code"]
    assert "--location-name stagecoach" in processes["code"]
    example = dict(line.split("=", 1) for line in
                   (PRODUCTION / "stagecoach.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert f"-p {example['STAGECOACH_CODE_SERVER_PORT']}" in processes["code"]
    assert set(PG_ENV) <= set(example) and "DAGSTER_COMPUTE_LOGS_DIR" in example
    for name in ("web", "daemon"):
        assert "-w deploy/production/workspace.yaml" in processes[name]
    units = {"code": "stagecoach-code", "web": "stagecoach-webserver",
             "daemon": "stagecoach-daemon", "webhook": "stagecoach-webhook",
             "worker": "stagecoach-worker@"}
    for process, unit in units.items():
        text = (PRODUCTION / "systemd" / f"{unit}.service").read_text()
        [command] = re.findall(r"^ExecStart=/opt/stagecoach/\.venv/bin/(.+)$", text, re.M)
        assert command == processes[process], (unit, command, processes[process])
        assert "EnvironmentFile=/etc/stagecoach/stagecoach.env" in text


def test_helm_values_carry_the_same_run_limits():
    helm = yaml.safe_load((PRODUCTION / "helm-values.yaml").read_text())
    production = yaml.safe_load((PRODUCTION / "dagster.yaml").read_text())
    runs = production["concurrency"]["runs"]
    assert helm["concurrency"]["enabled"] is True
    assert helm["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert helm["concurrency"]["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    retries = helm["dagsterDaemon"]["runRetries"]
    assert (retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (
        production["run_retries"]["max_retries"],
        production["run_retries"]["retry_on_asset_or_op_failure"])
    assert helm["telemetry"]["enabled"] is False
    assert helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"][
        "dequeueIntervalSeconds"] == production["run_coordinator"]["config"][
        "dequeue_interval_seconds"]
