"""Where a run's steps execute: in the run's process, in one process each, or on Celery workers.

Chosen by `STAGECOACH_EXECUTOR` when the code location loads, so one deployment can move steps
to Celery workers without touching a spec. In-process stays the default: a step costs ~70 ms
instead of ~3 s, and DuckDB allows one writing process.

Celery workers may sit on other machines, so what a step reads and writes must be reachable
from all of them: the Dagster instance (PostgreSQL storage), the warehouse (a database server,
never a DuckDB or SQLite file: refused here) and `STAGECOACH_DATA_DIR` (courier manifests and
downloads, produced files, the archive: one shared folder). Stagecoach's steps return
`MaterializeResult`s and check results, never values, so no IO manager moves data between steps.
"""

import os

import dagster as dg

from resources import settings

EXECUTOR_ENV = "STAGECOACH_EXECUTOR"
CELERY_BROKER_ENV = "STAGECOACH_CELERY_BROKER"
CELERY_BACKEND_ENV = "STAGECOACH_CELERY_BACKEND"
CELERY_QUEUE_ENV = "STAGECOACH_CELERY_QUEUE"

IN_PROCESS, MULTIPROCESS, CELERY = "in_process", "multiprocess", "celery"
EXECUTORS = (IN_PROCESS, MULTIPROCESS, CELERY)
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_BACKEND = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_QUEUE = "dagster"  # dagster-celery's own default queue
# Warehouses that live in a file one machine holds, which one process writes at a time.
FILE_WAREHOUSES = ("duckdb", "sqlite")


class ExecutorSettingsInvalid(ValueError):
    """The executor settings cannot work; the message names the variable and the fix."""


def executor_name() -> str:
    """The value of STAGECOACH_EXECUTOR (default in_process), checked."""
    name = os.environ.get(EXECUTOR_ENV, "").strip().lower() or IN_PROCESS
    if name not in EXECUTORS:
        raise ExecutorSettingsInvalid(
            f"{EXECUTOR_ENV}={os.environ[EXECUTOR_ENV]!r} is not an executor: set it to one of "
            f"{', '.join(EXECUTORS)} (or unset it for {IN_PROCESS})")
    return name


def executor_from_settings() -> dg.ExecutorDefinition:
    """The executor every job of the code location uses."""
    name = executor_name()
    if name == IN_PROCESS:
        return dg.in_process_executor
    if name == MULTIPROCESS:
        # One machine: a DuckDB warehouse still works, its writers queue for the file's lock.
        return dg.multiprocess_executor
    refuse_file_warehouse()
    return celery_executor()


def refuse_file_warehouse() -> None:
    """Celery workers on other machines cannot reach a warehouse file, and even on one machine
    parallel steps would queue for its one writer: refuse rather than fail runs later."""
    kind = settings.warehouse_kind()
    if kind in FILE_WAREHOUSES:
        where = (f"${settings.WAREHOUSE_URL_ENV}" if settings.warehouse_url_from_env()
                 else settings.default_warehouse_url())
        raise ExecutorSettingsInvalid(
            f"{EXECUTOR_ENV}=celery runs steps on Celery workers, possibly on other machines, "
            f"but the warehouse is a {kind} file ({where}): one process writes it at a time "
            "and other machines cannot reach it. Set "
            f"{settings.WAREHOUSE_URL_ENV} to a database server every worker reaches "
            "(e.g. postgresql+psycopg2://user@db-host:5432/warehouse), or unset "
            f"{EXECUTOR_ENV} to run steps in process.")


def celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor. Broker and backend are passed as env references when set, so
    a password in their URL never shows in the run's config."""
    from dagster_celery import celery_executor as dagster_celery_executor

    config = {
        "broker": _env_or_default(CELERY_BROKER_ENV, DEFAULT_CELERY_BROKER),
        "backend": _env_or_default(CELERY_BACKEND_ENV, DEFAULT_CELERY_BACKEND),
        "config_source": {"task_default_queue": celery_queue()},
    }
    return dagster_celery_executor.configured(config, name="celery")


def celery_queue() -> str:
    """The queue steps are sent to; start the workers with `-q` this name."""
    return os.environ.get(CELERY_QUEUE_ENV, "").strip() or DEFAULT_CELERY_QUEUE


def celery_worker_config() -> dict:
    """The worker side's YAML (`dagster-celery worker start -y`): the same broker, backend and
    queue as the executor, read from the same variables on the worker's machine."""
    return {"execution": {"config": {
        "broker": _env_or_default(CELERY_BROKER_ENV, DEFAULT_CELERY_BROKER),
        "backend": _env_or_default(CELERY_BACKEND_ENV, DEFAULT_CELERY_BACKEND),
        "config_source": {"task_default_queue": celery_queue()},
    }}}


def _env_or_default(env: str, default: str) -> str | dict[str, str]:
    return {"env": env} if os.environ.get(env, "").strip() else default
