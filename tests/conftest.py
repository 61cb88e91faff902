"""Real servers on loopback for the integration tests, and the helpers every test shares.

Each server fixture is session-scoped: it starts its server on a free port in a temporary folder
and stops it by its own process id (or thread) when the session ends. Outside CI a server that
cannot start skips the tests that need it; in CI (`CI=true`) it fails them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.servers_ssh import (  # noqa: F401 (re-exported)
    SSHD,
    free_port,
    start_sshd,
    wait_for_port,
)
from tests.servers_ssh import stop as _stop

# The reliability/security suite's report (markers fault, bad_input, security; `make reliability`).
pytest_plugins = ["tests.reliability_report"]

POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def need_server(name: str, reason: str) -> None:
    """Skip a test whose server is missing; in CI a missing server is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- sshd


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    username: str
    private_key_path: Path
    known_hosts_path: Path
    root: Path  # a folder for test files; SFTP paths are absolute server paths
    pid: int
    config_dir: Path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not os.access(SSHD, os.X_OK):
        need_server("sshd", f"{SSHD} is not installed (apt-get install openssh-server)")
    folder = tmp_path_factory.mktemp("sshd")
    root = tmp_path_factory.mktemp("sftp_root")
    try:
        process, port = start_sshd(folder)
    except (OSError, subprocess.SubprocessError, RuntimeError) as failed:
        need_server("sshd", f"cannot start sshd: {failed}")
    try:
        yield SshServer(host="127.0.0.1", port=port, username=getpass.getuser(),
                        private_key_path=folder / "userkey",
                        known_hosts_path=folder / "known_hosts", root=root, pid=process.pid,
                        config_dir=folder)
    finally:
        _stop(process)


@dataclass(frozen=True)
class PasswordAccount:
    username: str
    password: str
    folder: Path  # a folder that account may read and write


@pytest.fixture(scope="session")
def sftp_password_account(sshd: SshServer) -> Iterator[PasswordAccount]:
    """A throwaway system account with a password, for SFTP password authentication."""
    if os.geteuid() != 0:
        need_server("sftp password account", "creating a system account needs root")
    username, password = f"sc{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    subprocess.run(["useradd", "-M", "-d", "/", "-s", "/usr/sbin/nologin", username],
                   check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(["chpasswd"], input=f"{username}:{password}\n", text=True, check=True,
                       capture_output=True, timeout=30)
        folder = Path(f"/tmp/{username}-sftp")
        folder.mkdir(mode=0o755)
        shutil.chown(folder, user=username)
        yield PasswordAccount(username, password, folder)
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        subprocess.run(["userdel", username], capture_output=True, timeout=30)


# ---------------------------------------------------------------- S3 (moto)

AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": None,
                "AWS_PROFILE": None, "AWS_SECURITY_TOKEN": None}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as missing:
        need_server("moto", f"moto[server] is not installed: {missing}")
    with pytest.MonkeyPatch.context() as env:
        for name, value in AWS_TEST_ENV.items():
            if value is None:
                env.delenv(name, raising=False)
            else:
                env.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


# ---------------------------------------------------------------- PostgreSQL


def drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": name})
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database `<prefix>_<random>`; drop it on the
    way out. (The session's `postgres_url` is one; a Dagster instance needs its own, since its
    tables, runs and cursors must start empty.)"""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as failed:
        admin.dispose()
        need_server("postgres", f"PostgreSQL at 127.0.0.1:5432 is unreachable: "
                                f"{str(failed.orig).strip().splitlines()[0]}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_database(admin, name)
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with fresh_database("stagecoach_test") as url:
        yield url


# ---------------------------------------------------------------- Stagecoach


@pytest.fixture(autouse=True, scope="session")
def no_stale_defs_state_storage() -> Iterator[None]:
    """Dagster keeps the current instance's defs-state storage in a context variable. In a test
    process that opens and closes hundreds of instances, a closed one can still be current when
    a later test resolves Definitions, which then fails with "undefined DagsterInstance
    weakref" (it depends on when the garbage collector runs). A storage whose instance is gone
    is treated as no storage: what a fresh code-location process sees."""
    from dagster._core.storage.defs_state.base import DefsStateStorage

    original = DefsStateStorage.get.__func__

    def current_if_alive(cls: type) -> object:
        storage = original(cls)
        weakref = getattr(storage, "_instance_weakref", None)
        return None if weakref is not None and weakref() is None else storage

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DefsStateStorage, "get", classmethod(current_if_alive))
        yield



@pytest.fixture(autouse=True, scope="session")
def private_dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`make` exports DAGSTER_HOME (the checkout's data/dagster_home, for `make dev` and the
    demo). A test that opens $DAGSTER_HOME's instance without setting its own gets an empty one
    of its pytest process instead: under pytest-xdist two workers would otherwise share one
    SQLite instance, and no test should write into the developer's runs. Left unset when the
    environment does not set it (the code's "no DAGSTER_HOME" path)."""
    if not os.environ.get("DAGSTER_HOME"):
        yield
        return
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster_home")))
        yield


@pytest.fixture
def stagecoach_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data folder and the default (DuckDB) warehouse for one test."""
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    yield tmp_path


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, stagecoach_env: Path,
                  monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The test once on the default DuckDB warehouse (None) and once on PostgreSQL (its URL,
    set as STAGECOACH_WAREHOUSE_URL)."""
    if request.param == "duckdb":
        return None
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", url)
    return url


@dataclass
class WorkflowRun:
    result: dg.ExecuteInProcessResult
    instance: dg.DagsterInstance

    @property
    def success(self) -> bool:
        return self.result.success

    def metadata(self, *key: str) -> dict[str, Any]:
        """The latest materialization's metadata values of an asset, e.g. ('activation', 'x')."""
        event = self.instance.get_latest_materialization_event(dg.AssetKey(list(key)))
        assert event is not None and event.asset_materialization is not None, \
            f"{'/'.join(key)} was not materialized"
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    def failures(self) -> str:
        """Every step and run failure of the run, with causes, as one text."""
        texts = []
        for event in self.result.all_events:
            if event.is_step_failure or event.is_run_failure or event.is_resource_init_failure:
                data = event.event_specific_data
                error = getattr(data, "error", None)
                texts.append(error.to_string() if error is not None else
                             str(event.message or ""))
        return "\n".join(texts)


def run_workflow(workflows: Path, name: str, partition_key: str | None = None,
                 asset_selection: list[dg.AssetKey] | None = None,
                 instance: dg.DagsterInstance | None = None) -> WorkflowRun:
    """Build the code location from a workflows folder (env is read now) and run one job."""
    from orchestration.definitions import build_definitions

    defs = build_definitions(workflows)
    job = defs.resolve_job_def(f"{name}_job")
    instance = instance or dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, partition_key=partition_key,
                                    asset_selection=asset_selection, raise_on_error=False)
    return WorkflowRun(result, instance)


@pytest.fixture
def workflow_runner() -> Callable[..., WorkflowRun]:
    """`run_workflow(workflows_folder, workflow_name, partition_key=..., ...)`."""
    return run_workflow


# ---------------------------------------------------------------- file-connection endpoints

from tests.endpoints.ftp import ftp_files, ftp_server, ftps_files, ftps_server  # noqa: E402, F401
from tests.endpoints.kinds import folder_files, s3_files, sftp_files  # noqa: E402, F401
from tests.endpoints.smb import smb_files, smbd  # noqa: E402, F401
