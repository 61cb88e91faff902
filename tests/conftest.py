"""Real servers on loopback for the integration tests, and the helpers every test shares.

Each server fixture is session-scoped: it starts its server on a free port in a temporary folder
and stops it by its own process id (or thread) when the session ends. Outside CI a server that
cannot start skips the tests that need it; in CI (`CI=true`) it fails them.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

# The reliability/security suite's report (markers fault, bad_input, security; `make reliability`).
pytest_plugins = ["tests.reliability_report"]

SSHD = "/usr/sbin/sshd"
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def need_server(name: str, reason: str) -> None:
    """Skip a test whose server is missing; in CI a missing server is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None,
                  timeout: float = 10.0) -> bool:
    """True once 127.0.0.1:port accepts a connection; False if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


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


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def known_hosts_line(port: int, public_key_file: Path) -> str:
    key_type, key = public_key_file.read_text().split()[:2]
    return f"[127.0.0.1]:{port} {key_type} {key}\n"


def _start_sshd(folder: Path) -> tuple[subprocess.Popen, int]:
    config = folder / "sshd_config"
    log = folder / "sshd.log"
    for _ in range(3):  # another process may take the free port before sshd binds it
        port = free_port()
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {folder / 'hostkey'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            f"PidFile {folder / 'sshd.pid'}\n"
            "Subsystem sftp internal-sftp\n"
        )
        with open(log, "ab") as err:
            process = subprocess.Popen([SSHD, "-f", str(config), "-D", "-e"],
                                       stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if wait_for_port(port, process):
            return process, port
        _stop(process)
    raise RuntimeError(f"sshd did not start; its log:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not os.access(SSHD, os.X_OK):
        need_server("sshd", f"{SSHD} is not installed (apt-get install openssh-server)")
    folder = tmp_path_factory.mktemp("sshd")
    root = tmp_path_factory.mktemp("sftp_root")
    try:
        _keygen(folder / "hostkey")
        _keygen(folder / "userkey")
        (folder / "authorized_keys").write_text((folder / "userkey.pub").read_text())
        (folder / "authorized_keys").chmod(0o600)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        process, port = _start_sshd(folder)
    except (OSError, subprocess.SubprocessError, RuntimeError) as failed:
        need_server("sshd", f"cannot start sshd: {failed}")
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(known_hosts_line(port, folder / "hostkey.pub"))
    try:
        yield SshServer(host="127.0.0.1", port=port, username=getpass.getuser(),
                        private_key_path=folder / "userkey", known_hosts_path=known_hosts,
                        root=root, pid=process.pid, config_dir=folder)
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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    name = f"stagecoach_test_{secrets.token_hex(4)}"
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



@pytest.fixture
def stagecoach_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data folder and the default (DuckDB) warehouse for one test."""
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    yield tmp_path


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
