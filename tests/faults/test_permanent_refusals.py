"""Refusals a retry cannot fix fail at once: ONE attempt at the connection (counted on the
server's side, by a FaultProxy in front of the real sshd or PostgreSQL) and ONE run of the
Dagster step, whose RetryPolicy (2 retries) must not fire.

Each case is what an attacker or a wrong setting produces: an unknown, changed or revoked host
key, a refused login, a database or role that does not exist, a URL that does not parse, a
folder link out of the base, a corrupt xlsx.
"""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from openpyxl import Workbook

from resources.connections.files import TransferError
from resources.connections.sftp import SftpResource
from resources.warehouse import WarehouseResource
from tests.conftest import WorkflowRun
from tests.faults.proxy import FaultProxy
from tests.specs import write_workflow

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

RETRIES, BACKOFF = 3, 0.05  # a retried refusal would show as 4 connections at the proxy
NOT_RETRIED = "(not retried: a retry cannot fix this)"


@pytest.fixture
def sshd_proxy(sshd) -> Iterator[FaultProxy]:
    proxy = FaultProxy(sshd.port)
    yield proxy
    proxy.close()


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(5432)
    yield proxy
    proxy.close()


def host_key(sshd) -> str:
    return " ".join((sshd.config_dir / "hostkey.pub").read_text().split()[:2])


def new_key(folder: Path, name: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                   check=True, capture_output=True, timeout=30)
    return folder / name


def known_hosts(folder: Path, text: str) -> Path:
    path = folder / "known_hosts"
    path.write_text(text)
    return path


def ssh_case(case: str, sshd, proxy: FaultProxy, folder: Path) -> tuple[dict, str]:
    """(SftpResource settings through the proxy, the message the refusal must hold)."""
    entry = f"[127.0.0.1]:{proxy.port}"
    settings = {"host": "127.0.0.1", "port": proxy.port, "username": sshd.username,
                "private_key_path": str(sshd.private_key_path), "base_path": str(sshd.root),
                "timeout_seconds": 10}
    if case == "unknown host key":
        return {**settings, "known_hosts": str(known_hosts(folder, ""))}, "is unknown"
    if case == "changed host key":
        impostor = (new_key(folder, "impostor").with_suffix(".pub")).read_text().split()[:2]
        return ({**settings, "known_hosts": str(known_hosts(folder, f"{entry} "
                                                            f"{' '.join(impostor)}\n"))},
                "host key CHANGED")
    if case == "revoked host key":
        text = f"{entry} {host_key(sshd)}\n@revoked * {host_key(sshd)}\n"
        return {**settings, "known_hosts": str(known_hosts(folder, text))}, "is REVOKED"
    assert case == "login refused"
    return ({**settings, "known_hosts": str(known_hosts(folder, f"{entry} {host_key(sshd)}\n")),
             "private_key_path": str(new_key(folder, "stranger"))},
            "The server refused the login: check `username`")


SSH_CASES = ["unknown host key", "changed host key", "revoked host key", "login refused"]


@pytest.mark.parametrize("case", SSH_CASES)
def test_an_ssh_refusal_is_one_connection(case: str, sshd, sshd_proxy: FaultProxy,
                                          tmp_path: Path):
    settings, expected = ssh_case(case, sshd, sshd_proxy, tmp_path)
    conn = SftpResource(**settings, connection_name="vendor", retries=RETRIES,
                        backoff_seconds=BACKOFF)
    with pytest.raises(TransferError) as refused:
        conn.list_files("*.csv")
    assert expected in str(refused.value)
    assert str(refused.value).startswith("connection `vendor` list: ")
    assert refused.value.permanent
    assert sshd_proxy.connections == 1


def test_the_refusals_are_not_something_the_proxy_hides(sshd, sshd_proxy: FaultProxy,
                                                        tmp_path: Path):
    """The counting works: the same settings with the right key list through the proxy, and
    a transient fault (the proxy down) is retried, RETRIES + 1 attempts."""
    settings, _ = ssh_case("login refused", sshd, sshd_proxy, tmp_path)
    good = SftpResource(**{**settings, "private_key_path": str(sshd.private_key_path)},
                        connection_name="vendor", retries=RETRIES, backoff_seconds=BACKOFF)
    assert good.list_files("no-such-folder/*.csv") == []
    assert sshd_proxy.connections == 1
    sshd_proxy.reset_counts()
    sshd_proxy.down()
    with pytest.raises(TransferError, match=f"failed after {RETRIES + 1} attempts") as down:
        good.list_files("*.csv")
    assert not down.value.permanent


# ---------------------------------------------------------------- PostgreSQL


def proxied(postgres_url: str, proxy: FaultProxy, database: str | None = None,
            user: str | None = None) -> str:
    url = postgres_url.replace(":5432/", f":{proxy.port}/")
    if database:
        url = url.rsplit("/", 1)[0] + f"/{database}"
    if user:
        url = url.replace("://postgres@", f"://{user}@")
    return url


@pytest.mark.parametrize(("missing", "expected"), [
    ("database", 'database "stagecoach_no_such_db" does not exist'),
    ("role", 'role "stagecoach_no_such_role" does not exist'),
])
def test_a_missing_database_or_role_is_one_connection(missing: str, expected: str,
                                                      postgres_url: str,
                                                      postgres_proxy: FaultProxy,
                                                      tmp_path: Path):
    url = proxied(postgres_url, postgres_proxy, **(
        {"database": "stagecoach_no_such_db"} if missing == "database"
        else {"user": "stagecoach_no_such_role"}))
    source = WarehouseResource(url=url, connection_name="crm", retries=RETRIES,
                               backoff_seconds=BACKOFF)
    with pytest.raises(TransferError) as refused:
        source.query_to_parquet("select 1 as x", None, tmp_path / "out.parquet")
    assert expected in str(refused.value) and refused.value.permanent
    assert postgres_proxy.connections == 1
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the Dagster step


def step_attempts(run: WorkflowRun, step: str) -> int:
    """How many times the step started (its first start and each retry's restart)."""
    kinds = [e.event_type for e in run.result.all_events if e.step_key == step]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in kinds
    return sum(k in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED)
               for k in kinds)


def people_workflow(root: Path, connection: str, courier: str) -> Path:
    return write_workflow(root, "refusals", f"""
workflow: {{name: refusals}}
connections:
  source: {connection}
couriers:
  people: {{from: source, {courier}}}
domain_tables:
  people:
    from: people
    columns:
      id: {{tag: id}}
""")


@pytest.mark.parametrize("case", ["unknown host key", "revoked host key", "login refused"])
def test_an_ssh_refusal_runs_the_courier_step_once(case: str, sshd, sshd_proxy: FaultProxy,
                                                   stagecoach_env: Path, workflow_runner):
    settings, expected = ssh_case(case, sshd, sshd_proxy, stagecoach_env)
    connection = ("{kind: sftp, " + ", ".join(f"{k}: '{v}'" for k, v in settings.items())
                  + f", retries: {RETRIES}, backoff_seconds: {BACKOFF}}}")
    run = workflow_runner(people_workflow(stagecoach_env, connection, "path: '*.csv'"),
                          "refusals")
    assert not run.success
    assert step_attempts(run, "courier__people_file") == 1
    assert sshd_proxy.connections == 1
    assert expected in run.failures() and NOT_RETRIED in run.failures()


@pytest.mark.parametrize(("case", "expected"), [
    ("missing database", 'database "stagecoach_no_such_db" does not exist'),
    ("missing role", 'role "stagecoach_no_such_role" does not exist'),
    ("malformed URL", "the database URL cannot be parsed"),
])
def test_a_sql_refusal_runs_the_courier_step_once(case: str, expected: str, postgres_url: str,
                                                  postgres_proxy: FaultProxy,
                                                  stagecoach_env: Path, workflow_runner,
                                                  monkeypatch: pytest.MonkeyPatch):
    url = {"missing database": proxied(postgres_url, postgres_proxy, "stagecoach_no_such_db"),
           "missing role": proxied(postgres_url, postgres_proxy, user="stagecoach_no_such_role"),
           "malformed URL": f"postgresql+psycopg2://u@127.0.0.1:{postgres_proxy.port}x/db"}[case]
    monkeypatch.setenv("REFUSALS_DB_URL", url)
    connection = (f"{{kind: sql, url: {{env: REFUSALS_DB_URL}}, retries: {RETRIES}, "
                  f"backoff_seconds: {BACKOFF}}}")
    run = workflow_runner(people_workflow(stagecoach_env, connection, "query: 'select 1 as id'"),
                          "refusals")
    assert not run.success
    assert step_attempts(run, "courier__people_file") == 1
    assert postgres_proxy.connections == (0 if case == "malformed URL" else 1)
    assert expected in run.failures() and NOT_RETRIED in run.failures()
    assert "u@127.0.0.1" not in run.failures()  # an unparseable URL is not echoed


def test_a_folder_link_out_of_the_base_runs_the_courier_step_once(stagecoach_env: Path,
                                                                  workflow_runner):
    landing, outside = stagecoach_env / "landing", stagecoach_env / "outside"
    landing.mkdir()
    outside.mkdir()
    (outside / "people.csv").write_text("id\n1\n")
    (landing / "drop").symlink_to(outside)
    run = workflow_runner(people_workflow(stagecoach_env, f"{{kind: folder, path: {landing}}}",
                                          "path: 'drop/*.csv'"), "refusals")
    assert not run.success
    assert step_attempts(run, "courier__people_file") == 1
    assert f"{landing / 'drop'} is a symbolic link to {outside}, outside the connection's " \
           f"base folder {landing}" in run.failures()


def corrupt_xlsx(path: Path) -> None:
    """A real workbook whose sheet XML is cut short: a zip that passes the archive checks."""
    book = Workbook()
    book.active.append(["id"])
    book.active.append([1])
    book.save(path.with_suffix(".good"))
    with zipfile.ZipFile(path.with_suffix(".good")) as good, zipfile.ZipFile(path, "w") as bad:
        for member in good.infolist():
            data = good.read(member)
            bad.writestr(member, data[:len(data) // 2] if "worksheets/" in member.filename
                         else data)
    path.with_suffix(".good").unlink()


def test_a_corrupt_xlsx_runs_the_courier_step_once(stagecoach_env: Path, workflow_runner):
    landing = stagecoach_env / "landing"
    landing.mkdir()
    corrupt_xlsx(landing / "people.xlsx")
    run = workflow_runner(people_workflow(
        stagecoach_env, f"{{kind: folder, path: {landing}}}",
        "path: people.xlsx, format: {type: xlsx}"), "refusals")
    assert not run.success
    assert step_attempts(run, "courier__people_file") == 1
    assert f"{landing / 'people.xlsx'} is a zip archive but not a readable xlsx workbook " \
           "(ParseError: " in run.failures()
    assert "ask the sender for the file again" in run.failures()


@pytest.mark.parametrize("case", ["unknown host key", "login refused"])
def test_an_ssh_step_refusal_runs_the_automation_step_once(case: str, sshd,
                                                          sshd_proxy: FaultProxy,
                                                          stagecoach_env: Path):
    """An automation's SSH step with `retry: {count: 2}`: a host key or login refusal is
    one connection and one run of the step, not three."""
    from orchestration.definitions import build_definitions

    settings, expected = ssh_case(case, sshd, sshd_proxy, stagecoach_env)
    settings.pop("base_path")
    connection = "{kind: sftp, " + ", ".join(f"{k}: '{v}'" for k, v in settings.items()) + "}"
    (stagecoach_env / "workflows").mkdir(exist_ok=True)
    (stagecoach_env / "workflows" / "remote.yaml").write_text(f"""
workflow: {{name: remote}}
connections:
  batch: {connection}
automations:
  publish:
    retry: {{count: 2, delay: 1s, backoff: constant}}
    steps:
      - {{name: publish, kind: ssh, connection: batch, command: "echo hello"}}
""", encoding="utf-8")
    defs = build_definitions(stagecoach_env / "workflows")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("remote_publish_job").execute_in_process(
            instance=instance, raise_on_error=False)
    assert not result.success
    kinds = [e.event_type for e in result.all_events if e.step_key == "publish__publish"]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in kinds
    assert kinds.count(dg.DagsterEventType.STEP_START) == 1
    assert sshd_proxy.connections == 1
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert expected in failure.event_specific_data.error.message
