"""Whole runs through connection faults: the courier's download and the activation's upload are
cut mid-transfer and the run still succeeds; with the source gone for good the run fails naming
the connection and the operation, and the domain table keeps its previous rows.

Both connections reach the same sshd, each through its own FaultProxy (see proxy.py), so one
can be cut on the way in and the other on the way out within one run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from resources.connections.files import is_partial
from resources.warehouse import WarehouseResource
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.timeout(180), pytest.mark.fault]

ROWS = 120_000


def members_csv(rows: int, domain: str) -> str:
    return "member_id,email\n" + "".join(f"{i},user{i}@{domain}\n" for i in range(1, rows + 1))


@pytest.fixture
def proxies(sshd) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    inbound, outbound = FaultProxy(sshd.port), FaultProxy(sshd.port)
    yield inbound, outbound
    inbound.close()
    outbound.close()


def write_spec(root: Path, sshd, base: Path, inbound: FaultProxy, outbound: FaultProxy) -> Path:
    host_key = (sshd.config_dir / "hostkey.pub").read_text().split()
    common = (f"host: 127.0.0.1, username: {sshd.username}, private_key_path: "
              f"{sshd.private_key_path}, host_key: '{host_key[0]} {host_key[1]}', base_path: "
              f"{base}, timeout_seconds: 5, retries: 4, backoff_seconds: 0.1")
    folder = root / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / "cut.yaml").write_text(f"""
workflow:
  name: cut
  owners: [team:data]
  start_date: 2026-11-01
connections:
  vendor_in: {{kind: sftp, port: {inbound.port}, {common}}}
  vendor_out: {{kind: sftp, port: {outbound.port}, {common}}}
couriers:
  members: {{from: vendor_in, path: inbound/members.csv}}
domain_tables:
  members:
    from: members
    columns:
      member_id: {{tag: id, required: true, not_null: true}}
      email: {{tag: email}}
queries:
  everyone:
    sql: "select member_id, email from domain.members order by member_id"
activations:
  partner:
    query: everyone
    to: vendor_out
    path: outbound
    file: {{type: psv, name: members.txt}}
""")
    return folder


def fingerprint(root: Path) -> tuple[int, int, str]:
    warehouse = WarehouseResource(url=f"duckdb:///{root / 'data' / 'warehouse.duckdb'}")
    [(count, distinct, domains)] = warehouse.fetch(
        "SELECT count(*), count(DISTINCT member_id), string_agg(DISTINCT split_part(email, "
        "'@', 2), ',') FROM domain.members")
    return count, distinct, domains


def test_run_survives_cuts_in_the_courier_and_the_delivery(
        sshd, proxies, stagecoach_env: Path, workflow_runner, tmp_path_factory, reliability):
    inbound, outbound = proxies
    base = sshd.root / f"cut-{tmp_path_factory.mktemp('x').name}"
    (base / "inbound").mkdir(parents=True)
    source = members_csv(ROWS, "example.com")
    (base / "inbound" / "members.csv").write_text(source)
    workflows = write_spec(stagecoach_env, sshd, base, inbound, outbound)
    inbound.cut_after("down", len(source) // 2, down_for=0.3)  # mid-download
    outbound.cut_after("up", len(source) // 3, down_for=0.3)  # mid-upload of a similar file

    run = workflow_runner(workflows, "cut")

    assert run.success, run.failures()
    assert (inbound.cuts, outbound.cuts) == (1, 1)  # both transfers really were cut
    loaded = fingerprint(stagecoach_env)
    reliability.rows_checked("domain.members after the courier's download was cut", ROWS,
                             loaded[0])
    assert loaded == (ROWS, ROWS, "example.com")
    sent = base / "outbound" / "members.txt"
    meta = run.metadata("activation", "partner")
    assert hashlib.md5(sent.read_bytes(), usedforsecurity=False).hexdigest() == meta["md5"]
    lines = sent.read_text().splitlines()
    reliability.rows_checked("file delivered after its upload was cut", ROWS, len(lines) - 1)
    assert len(lines) == ROWS + 1 and len(set(lines)) == ROWS + 1  # header + every row once
    assert sorted(p.name for p in (base / "outbound").iterdir()) == ["members.txt"]


def test_source_down_for_good_fails_the_run_and_keeps_the_table(
        sshd, proxies, stagecoach_env: Path, workflow_runner, tmp_path_factory, reliability):
    inbound, outbound = proxies
    base = sshd.root / f"down-{tmp_path_factory.mktemp('x').name}"
    (base / "inbound").mkdir(parents=True)
    (base / "inbound" / "members.csv").write_text(members_csv(ROWS, "example.com"))
    workflows = write_spec(stagecoach_env, sshd, base, inbound, outbound)
    instance = dg.DagsterInstance.ephemeral()
    assert workflow_runner(workflows, "cut", instance=instance).success
    before = fingerprint(stagecoach_env)
    newer = members_csv(ROWS // 2, "example.org")
    (base / "inbound" / "members.csv").write_text(newer)
    (base / "outbound" / "members.txt").unlink()
    inbound.cut_after("down", len(newer) // 2, down_for=None)  # killed mid-download, stays down

    run = workflow_runner(workflows, "cut", instance=instance)

    assert not run.success
    failures = run.failures()  # one run of the step: its RetryPolicy does not retry the
    # connection's spent retries (docs/retries.md), so the download's own failure is the last
    assert "connection `vendor_in` download failed after 5 attempts" in failures, failures
    assert "not retried by the step: the connection's own retries were spent" in failures
    after = fingerprint(stagecoach_env)
    reliability.rows_checked("domain.members after its source went down", ROWS, after[0])
    assert after == before == (ROWS, ROWS, "example.com")
    assert not (base / "outbound").exists() or not [
        p for p in (base / "outbound").iterdir() if not is_partial(p.name)]
