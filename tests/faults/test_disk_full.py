"""Disk full at the archive or at an activation's output folder: the step fails clearly (naming
the place and "no space") and leaves nothing partial there; the ledger never says delivered.

Each test mounts a 1 MiB tmpfs (the test runs as root; without permission to mount it skips
with the reason) and has an activation write a ~2 MB file into it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from resources.bookkeeping.ledger import DeliveryLedger
from resources.warehouse import WarehouseResource
from tests.specs import EVERYONE_QUERY, people_spec, write_workflow

pytestmark = [pytest.mark.timeout(180), pytest.mark.fault]

ROWS = 40_000  # ~2 MB of pipe-separated text: twice the tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def workflow(root: Path, outbox: Path, archive: Path | None) -> Path:
    """A query of ROWS people delivered as one psv file to the `outbox` folder."""
    landing = root / "landing"
    landing.mkdir()
    with open(landing / "people.csv", "w", encoding="utf-8") as out:
        out.write("id,name,city\n")
        for i in range(ROWS):
            out.write(f"{i},person number {i},City {i % 97}\n")
    archive_connection = f"  vault: {{kind: folder, path: {archive}}}" if archive else ""
    return write_workflow(root, "full_disk", people_spec(
        "full_disk", landing,
        workflow="  start_date: 2026-11-01\n" + ("  archive: vault" if archive else ""),
        connections=f"  outbox: {{kind: folder, path: {outbox}}}\n{archive_connection}",
        rest=EVERYONE_QUERY + """
activations:
  partner:
    query: everyone
    to: [outbox]
    file: {type: psv, name: people.txt}"""))


def activation_failure(run) -> str:
    """The activation's own Failure message (the step is retried by its policy first, so the
    last failure wraps it as "Exceeded max_retries")."""
    failures = [e for e in run.result.all_events
                if e.is_step_failure and e.step_key == "activation__partner"]
    assert len(failures) == 1, run.failures()
    error = failures[0].step_failure_data.error
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause or error.context
    messages = [e.message for e in chain if e.cls_name == "Failure"]
    assert messages, [e.to_string() for e in chain]
    return messages[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def ledger_statuses(root: Path) -> list[str]:
    ledger = DeliveryLedger(WarehouseResource(
        url=f"duckdb:///{root / 'data' / 'warehouse.duckdb'}"))
    return [e.status for e in ledger.find(workflow="full_disk")]


def test_output_folder_full(small_disk: Path, stagecoach_env: Path, workflow_runner) -> None:
    root = stagecoach_env
    run = workflow_runner(workflow(root, small_disk, archive=None), "full_disk")
    assert not run.success
    message = activation_failure(run)
    assert str(small_disk / "people.txt") in message, message
    assert "no space" in message.lower(), message
    # Nothing under the final name, no hidden partial left beside it.
    assert files_under(small_disk) == [], files_under(small_disk)
    # The archive (on the ordinary disk) kept the file; the ledger says failed, not delivered.
    statuses = ledger_statuses(root)
    assert statuses and set(statuses) == {"failed"}, statuses


def test_archive_full(small_disk: Path, stagecoach_env: Path, workflow_runner) -> None:
    root = stagecoach_env
    outbox = root / "outbox"
    run = workflow_runner(workflow(root, outbox, archive=small_disk), "full_disk")
    assert not run.success
    message = activation_failure(run)
    assert "could not be archived, so it was not sent" in message, message
    assert str(small_disk) in message, message
    assert "no space" in message.lower(), message
    assert files_under(small_disk) == [], files_under(small_disk)
    # Not archived, so not sent: nothing at the destination, no delivered row.
    assert not outbox.exists() or files_under(outbox) == []
    assert "delivered" not in ledger_statuses(root)
    # The courier and the domain table went through: only the activation failed.
    failed_steps = {e.step_key for e in run.result.all_events if e.is_step_failure}
    assert failed_steps == {"activation__partner"}
    assert run.instance.get_latest_materialization_event(
        dg.AssetKey(["domain", "people"])) is not None
