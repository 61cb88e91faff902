"""Secrets only through environment variables: named when missing, never shown."""

import socket
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import build_definitions
from resources.warehouse import WarehouseError, WarehouseResource

pytestmark = pytest.mark.security

SENTINEL = "pa55-SENTINEL-never-shown"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sftp_workflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "workflows" / "vendor.yaml").write_text(f"""\
workflow: {{name: vendor}}
connections:
  vendor_sftp:
    kind: sftp
    host: 127.0.0.1
    port: {closed_port()}
    username: acme
    password: {{env: VENDOR_SFTP_PASSWORD}}
    timeout_seconds: 2
    known_hosts: {tmp_path / "known_hosts"}
couriers:
  orders: {{from: vendor_sftp, path: orders.csv}}
""")
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    return tmp_path / "workflows"


def run_vendor(workflows: Path) -> tuple[dg.ExecuteInProcessResult, str]:
    defs = build_definitions(workflows)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("vendor_job").execute_in_process(
            instance=instance, raise_on_error=False)
        records = instance.get_records_for_run(result.run_id).records
        text = "\n".join(str(r.event_log_entry) for r in records)
    return result, text


def test_a_missing_variable_is_named_at_run_time(sftp_workflow: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VENDOR_SFTP_PASSWORD", raising=False)
    with pytest.raises(dg.DagsterInvalidConfigError) as raised:
        run_vendor(sftp_workflow)
    assert 'environment variable "VENDOR_SFTP_PASSWORD" which is not set' in str(raised.value)


def test_a_secret_never_reaches_the_event_log(sftp_workflow: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENDOR_SFTP_PASSWORD", SENTINEL)
    result, log = run_vendor(sftp_workflow)
    assert not result.success  # nothing listens on that port
    assert "sftp acme@127.0.0.1" in log  # the failure names the connection and operation
    assert SENTINEL not in log
    assert SENTINEL not in str(result.dagster_run.run_config)


def test_a_malformed_database_url_is_never_echoed() -> None:
    warehouse = WarehouseResource(url="postgresql://user:TOPSECRET@host:notaport/db")
    with pytest.raises(WarehouseError) as raised:
        list(warehouse.batches("select 1"))
    assert "TOPSECRET" not in str(raised.value)
    assert "TOPSECRET" not in warehouse.safe_url


def test_metadata_urls_hide_passwords_in_every_place() -> None:
    warehouse = WarehouseResource(
        url="postgresql+psycopg2://app:PW1@db:5432/wh?sslpassword=PW2&application_name=sc")
    assert warehouse.safe_url == ("postgresql+psycopg2://app:***@db:5432/wh?"
                                  "application_name=sc&sslpassword=%2A%2A%2A")
