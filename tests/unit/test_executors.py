"""The executor every job gets, chosen by STAGECOACH_EXECUTOR, and the settings it refuses.

Steps really running on Celery workers is tests/e2e/test_celery_workers.py; here the choice,
the config passed to dagster-celery, and the refusal of a warehouse file.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from orchestration import executors
from orchestration.definitions import build_definitions

DEMO = Path(__file__).resolve().parents[2] / "workflows"
PG_URL = "postgresql+psycopg2://stagecoach:not-shown@db.internal:5432/warehouse"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (executors.EXECUTOR_ENV, executors.CELERY_BROKER_ENV,
                 executors.CELERY_BACKEND_ENV, executors.CELERY_QUEUE_ENV,
                 "STAGECOACH_WAREHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))


def executor_of_every_job(defs: dg.Definitions) -> set[str]:
    jobs = defs.resolve_all_job_defs()
    assert len(jobs) > 3
    return {job.executor_def.name for job in jobs}


@pytest.mark.parametrize(("setting", "expected"), [
    (None, "in_process"), ("in_process", "in_process"), ("MultiProcess", "multiprocess"),
    (" multiprocess ", "multiprocess")])
def test_every_job_gets_the_chosen_executor(monkeypatch: pytest.MonkeyPatch,
                                            setting: str | None, expected: str):
    if setting is not None:
        monkeypatch.setenv(executors.EXECUTOR_ENV, setting)
    assert executor_of_every_job(build_definitions(DEMO)) == {expected}


def test_celery_with_a_database_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", PG_URL)
    defs = build_definitions(DEMO)
    assert executor_of_every_job(defs) == {"celery"}
    # Unset broker/backend/queue: the documented defaults, the same for the worker's YAML.
    config = executors.celery_worker_config()["execution"]["config"]
    assert config == {"broker": "redis://127.0.0.1:6379/0",
                      "backend": "redis://127.0.0.1:6379/0",
                      "config_source": {"task_default_queue": "dagster"}}


def test_celery_urls_are_env_references_never_values(monkeypatch: pytest.MonkeyPatch):
    """A broker URL may hold a password: the config names the variable, not its value."""
    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", PG_URL)
    monkeypatch.setenv(executors.CELERY_BROKER_ENV, "redis://:broker-secret@mq:6379/2")
    monkeypatch.setenv(executors.CELERY_BACKEND_ENV, "redis://:backend-secret@mq:6379/3")
    monkeypatch.setenv(executors.CELERY_QUEUE_ENV, "stagecoach_prod")
    config = executors.celery_worker_config()["execution"]["config"]
    assert config == {"broker": {"env": executors.CELERY_BROKER_ENV},
                      "backend": {"env": executors.CELERY_BACKEND_ENV},
                      "config_source": {"task_default_queue": "stagecoach_prod"}}
    job = build_definitions(DEMO).resolve_job_def("acme_retail_job")
    assert job.executor_def.name == "celery"
    # What the job hands dagster-celery (resolved only where a run executes).
    passed = job.executor_def.config_schema._config_fn({})
    assert passed == config and "secret" not in repr(passed)


@pytest.mark.parametrize("warehouse", [None, "duckdb:////srv/stagecoach/warehouse.duckdb",
                                       "sqlite:////srv/stagecoach/warehouse.db"])
def test_celery_refuses_a_warehouse_file(monkeypatch: pytest.MonkeyPatch,
                                         warehouse: str | None):
    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    if warehouse:
        monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", warehouse)
    with pytest.raises(executors.ExecutorSettingsInvalid) as refused:
        build_definitions(DEMO)
    message = str(refused.value)
    assert "STAGECOACH_EXECUTOR=celery" in message
    assert "set STAGECOACH_WAREHOUSE_URL to a database server every worker reaches" in \
        message.replace("Set", "set")
    kind = warehouse.split(":")[0] if warehouse else "duckdb"
    assert f"the warehouse is a {kind} file" in message
    # The URL from the environment is named by its variable, the default by its path.
    assert ("$STAGECOACH_WAREHOUSE_URL" in message) == bool(warehouse)


def test_multiprocess_keeps_a_duckdb_warehouse():
    """One machine: DuckDB's writers queue for the file's lock instead of failing."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(executors.EXECUTOR_ENV, "multiprocess")
        assert executor_of_every_job(build_definitions(DEMO)) == {"multiprocess"}


def test_an_unknown_executor_names_the_choices(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(executors.EXECUTOR_ENV, "kubernetes")
    with pytest.raises(executors.ExecutorSettingsInvalid) as refused:
        build_definitions(DEMO)
    assert str(refused.value) == (
        "STAGECOACH_EXECUTOR='kubernetes' is not an executor: set it to one of in_process, "
        "multiprocess, celery (or unset it for in_process)")
