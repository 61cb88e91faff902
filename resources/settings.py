"""Every environment switch of the code location, read in one place."""

import os
from pathlib import Path

DAGSTER_URL_ENV = "STAGECOACH_DAGSTER_URL"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"  # what `dagster dev` serves by default
DATA_DIR_ENV = "STAGECOACH_DATA_DIR"
WAREHOUSE_URL_ENV = "STAGECOACH_WAREHOUSE_URL"
WORKFLOWS_DIR_ENV = "STAGECOACH_WORKFLOWS_DIR"
UI_URL_ENV = "STAGECOACH_UI_URL"
SCRIPT_UIDS_ENV = "STAGECOACH_SCRIPT_UIDS"
SCRIPT_USER_ENV = "STAGECOACH_SCRIPT_USER"  # replaced by SCRIPT_UIDS_ENV: refused if set


def workflows_dir() -> Path:
    """Where the workflow specs are read from."""
    return Path(os.environ.get(WORKFLOWS_DIR_ENV, "workflows"))


def dagster_url() -> str:
    """The Dagster webserver whose GraphQL API the webhook launches runs through."""
    return os.environ.get(DAGSTER_URL_ENV, DEFAULT_DAGSTER_URL)


def ui_url() -> str:
    """The Dagster UI as people reach it (behind a proxy, say), for the run links in alerts."""
    return os.environ.get(UI_URL_ENV) or dagster_url()


def run_url(run_id: str) -> str:
    """A run's page in the UI, for alerts."""
    return f"{ui_url().rstrip('/')}/runs/{run_id}"


def script_uids() -> str | None:
    """The uids Python steps' scripts run as, one of its own per step (`200000-265535`; None:
    the worker's own user). The shared STAGECOACH_SCRIPT_USER it replaces is an error: one
    user for every run let a script read another run's secrets."""
    if os.environ.get(SCRIPT_USER_ENV):
        raise ValueError(f"{SCRIPT_USER_ENV} is no longer supported (one user shared by every "
                         f"run lets a script read another run's secrets); set "
                         f"{SCRIPT_UIDS_ENV}=200000-265535 instead (see docs/operations.md, "
                         "'The script user')")
    return os.environ.get(SCRIPT_UIDS_ENV) or None


def warehouse_url() -> str:
    """The warehouse's URL, read now (for what runs outside a Dagster resource)."""
    return os.environ.get(WAREHOUSE_URL_ENV) or default_warehouse_url()


def warehouse_url_from_env() -> bool:
    """True when the warehouse is set by STAGECOACH_WAREHOUSE_URL (read via dg.EnvVar)."""
    return bool(os.environ.get(WAREHOUSE_URL_ENV))


def warehouse_display() -> str:
    """Where the demo's tables went, without credentials."""
    if warehouse_url_from_env():
        return f"the database in ${WAREHOUSE_URL_ENV}"
    return str(data_dir() / "warehouse.duckdb")


def data_dir() -> Path:
    """Stagecoach's data folder: staging, archive and the default warehouse."""
    return Path(os.environ.get(DATA_DIR_ENV, "data")).resolve()


def archive_dir() -> Path:
    """The default archive of delivered files (a workflow can name its own connection)."""
    return data_dir() / "archive"


def default_warehouse_url() -> str:
    """The DuckDB file used when no warehouse is set."""
    return f"duckdb:///{data_dir() / 'warehouse.duckdb'}"


def warehouse_kind() -> str:
    """What the UI shows as the tables' kind: the warehouse's database."""
    url = os.environ.get(WAREHOUSE_URL_ENV, "")
    if url.startswith("postgresql"):
        return "postgres"
    return url.split(":", 1)[0].split("+", 1)[0] if url else "duckdb"
