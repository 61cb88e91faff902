"""Delivery end to end: file options, sealing, several destinations, the ledger, the archive,
re-send and download — checked with independent tools (gpg, unzip, md5sum, the file system)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from resources.bookkeeping.ledger import DeliveryLedger, LedgerEntry
from resources.warehouse import WarehouseResource
from tests.conftest import need_server
from tests.gpg_keys import GpgRecipient, make_recipient
from tests.specs import people_spec, write_workflow

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
ACTIVATION = dg.AssetKey(["activation", "partner"])

PEOPLE = ("id,name,city\n"
          "1,ada lovelace,London\n"
          "2,grace hopper,\"Arlington, VA\"\n"
          "3,rené descartes,La Haye\n")
EXPECTED_ROWS = ['"customer_id"|"name"|"city"', '"1"|"Ada Lovelace"|"London"',
                 '"2"|"Grace Hopper"|"Arlington, VA"', '"3"|"René Descartes"|"La Haye"']


@pytest.fixture(scope="session")
def recipient(tmp_path_factory: pytest.TempPathFactory) -> GpgRecipient:
    made = make_recipient(tmp_path_factory.mktemp("gpg"))
    if made is None:
        need_server("gpg", "GnuPG is not installed (apt-get install gnupg)")
    return made


def md5sum(path: Path) -> str:
    """The coreutils program, not Python's hashlib: an independent witness."""
    return subprocess.run(["md5sum", str(path)], check=True, capture_output=True,
                          text=True).stdout.split()[0]


def spec(root: Path, activation: str, extra_connections: str = "",
         where: str = "") -> str:
    (root / "landing").mkdir(exist_ok=True)
    (root / "landing" / "people.csv").write_text(PEOPLE, encoding="utf-8")
    return people_spec(
        "deliv", root / "landing", workflow="  owners: [team:data]\n  start_date: 2026-11-01",
        connections=(f"  outbox: {{kind: folder, path: {root / 'outbox'}}}\n"
                     f"  mirror: {{kind: folder, path: {root / 'mirror'}}}\n{extra_connections}"),
        rest=f"""queries:
  everyone:
    sql: "select customer_id, name, city from domain.people {where} order by customer_id"
activations:
  partner:
    query: everyone
{activation}""")


def write_spec(root: Path, text: str) -> Path:
    return write_workflow(root, "deliv", text)


def ledger(root: Path) -> DeliveryLedger:
    return DeliveryLedger(WarehouseResource(url=f"duckdb:///{root / 'data' / 'warehouse.duckdb'}"))


def rows(root: Path) -> list[LedgerEntry]:
    return sorted(ledger(root).find(workflow="deliv"), key=lambda e: (e.created_at, e.id))


SEALED = """\
    to: [outbox, mirror]
    path: "out/{{{{ ds }}}}"
    file: {{type: psv, name: "people_{{{{ ds_nodash }}}}.txt", quoting: all, line_ending: crlf,
            line_suffix: "|", encoding: latin-1}}
    seal:
      gpg: {{recipients: [{key}]}}
      zip: true
"""


def test_sealed_file_reaches_every_destination_and_the_ledger(
        stagecoach_env: Path, workflow_runner, recipient: GpgRecipient):
    root = stagecoach_env
    workflows = write_spec(root, spec(root, SEALED.format(key=recipient.public_key)))

    run = workflow_runner(workflows, "deliv", partition_key=None)
    assert run.success, run.failures()

    day = run.metadata("activation", "partner")
    [delivered] = (root / "outbox" / "out").rglob("*.zip")
    name = delivered.name
    assert name.startswith("people_") and name.endswith(".txt.gpg.zip")
    # unzip (the program) lists one member: the encrypted file, named like the text + .gpg
    listing = subprocess.run(["unzip", "-Z1", str(delivered)], check=True, capture_output=True,
                             text=True).stdout.split()
    assert listing == [name.removesuffix(".zip")]
    member = root / "member.gpg"
    member.write_bytes(subprocess.run(["unzip", "-p", str(delivered)], check=True,
                                      capture_output=True).stdout)
    plain = recipient.decrypt(member)
    # latin-1, CRLF, a '|' appended to every line, every field quoted
    assert plain.decode("latin-1").split("|\r\n") == [*EXPECTED_ROWS, ""]
    assert "René".encode("latin-1") in plain

    # Both destinations got the same bytes; the ledger's md5 is md5sum's.
    mirrored = root / "mirror" / delivered.relative_to(root / "outbox")
    assert mirrored.read_bytes() == delivered.read_bytes()
    entries = rows(root)
    assert [(e.destination, e.status) for e in entries] == [("outbox", "delivered"),
                                                           ("mirror", "delivered")]
    assert {e.md5 for e in entries} == {md5sum(delivered)}
    assert {e.file_name for e in entries} == {name}
    assert entries[0].row_count == 3 and entries[0].size == delivered.stat().st_size
    assert entries[0].file_id == entries[1].file_id and entries[0].delivered_at is not None
    # The archived copy is the sent file.
    archived = Path(entries[0].archive_uri)
    assert archived.is_file() and md5sum(archived) == md5sum(delivered)
    # The materialization tells the same story in the UI.
    assert day["md5"] == entries[0].md5 and day["file_name"] == name
    assert day["sealed"] == "gpg, zip" and day["status"] == "delivered"
    assert day["dagster/row_count"] == 3
    assert set(day["ledger_ids"].split(", ")) == {e.id for e in entries}


def test_an_empty_result_is_not_sent(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    activation = """\
    to: outbox
    file: {name: "people.csv"}
    seal: {zip: true}
"""
    workflows = write_spec(root, spec(root, activation, where="where customer_id = '0'"))
    run = workflow_runner(workflows, "deliv")
    assert run.success, run.failures()
    assert not (root / "outbox").exists() or not any((root / "outbox").rglob("*"))
    [entry] = rows(root)
    assert (entry.status, entry.row_count, entry.archive_path) == ("empty_not_sent", 0, None)
    metadata = run.metadata("activation", "partner")
    assert metadata["status"] == "empty_not_sent" and metadata["dagster/row_count"] == 0
    logs = [e.user_message for e in run.instance.all_logs(run.result.run_id)]
    assert any("has no rows; nothing is sealed or sent" in m for m in logs), logs


def test_empty_send_delivers_the_header_only_file(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    activation = """\
    to: outbox
    empty: send
    file: {name: "people.csv"}
"""
    workflows = write_spec(root, spec(root, activation, where="where customer_id = '0'"))
    assert workflow_runner(workflows, "deliv").success
    assert (root / "outbox" / "people.csv").read_text() == "customer_id,name,city\n"


@pytest.mark.fault
def test_rerun_does_not_send_twice_unless_asked(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    workflows = write_spec(root, spec(root, "    to: outbox\n    file: {name: people.csv}\n"))
    instance = dg.DagsterInstance.ephemeral()
    assert workflow_runner(workflows, "deliv", instance=instance).success
    target = root / "outbox" / "people.csv"
    first = target.stat().st_mtime_ns
    again = workflow_runner(workflows, "deliv", instance=instance,
                            asset_selection=[ACTIVATION])
    assert again.success, again.failures()
    assert target.stat().st_mtime_ns == first  # not re-sent
    assert [e.status for e in rows(root)] == ["delivered", "already_delivered"]
    archived = list((root / "data" / "archive").rglob("people.csv"))
    assert len(archived) == 1  # nothing new was sent, so nothing new was kept
    assert {e.archive_path for e in rows(root)} == {
        archived[0].relative_to(root / "data" / "archive").as_posix()}

    from orchestration.definitions import build_definitions

    job = build_definitions(workflows).resolve_job_def("deliv_job")
    forced = job.execute_in_process(instance=instance, asset_selection=[ACTIVATION],
                                    tags={"stagecoach/redeliver": "true"})
    assert forced.success
    assert [e.status for e in rows(root)] == ["delivered", "already_delivered", "delivered"]
    assert len(list((root / "data" / "archive").rglob("people.csv"))) == 2


def test_a_missing_file_or_another_day_is_sent_again(stagecoach_env: Path, workflow_runner):
    """The ledger skips only what the destination still holds, for the same day."""
    root = stagecoach_env
    workflows = write_spec(root, spec(root, "    to: outbox\n    file: {name: people.csv}\n"))
    instance = dg.DagsterInstance.ephemeral()
    from orchestration.definitions import build_definitions

    job = build_definitions(workflows).resolve_job_def("deliv_job")

    def run_for(day: str) -> None:
        result = job.execute_in_process(instance=instance, tags={
            "dagster/scheduled_execution_time": f"{day}T06:00:00+00:00"})
        assert result.success

    run_for("2026-11-05")
    (root / "outbox" / "people.csv").unlink()  # someone cleaned the folder
    run_for("2026-11-05")
    assert (root / "outbox" / "people.csv").read_text().startswith("customer_id,")
    run_for("2026-11-06")  # the same content, a fixed name, the next day: a new delivery
    assert [(e.day, e.status) for e in rows(root)] == [
        ("2026-11-05", "delivered"), ("2026-11-05", "delivered"), ("2026-11-06", "delivered")]


@pytest.mark.fault
def test_one_failed_destination_fails_the_run_but_not_the_others(
        stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    (root / "blocked").write_text("a file where the destination folder should be")
    activation = "    to: [outbox, blocked]\n    file: {name: people.csv}\n"
    extra = f"  blocked: {{kind: folder, path: {root / 'blocked'}}}\n"
    workflows = write_spec(root, spec(root, activation, extra_connections=extra))
    run = workflow_runner(workflows, "deliv")
    assert not run.success
    # A file where the folder should be is refused for good: the step is not retried.
    assert "1 delivery refused (not retried: a retry cannot fix this; the others went " \
        "through)" in run.failures()
    assert (root / "outbox" / "people.csv").is_file()
    statuses = {e.destination: e.status for e in rows(root) if e.status != "sending"}
    assert statuses["outbox"] == "delivered"
    assert [e.status for e in rows(root) if e.destination == "outbox"].count("delivered") == 1
    assert {e.status for e in rows(root) if e.destination == "blocked"} == {"failed"}
    assert all(e.error for e in rows(root) if e.destination == "blocked")


def resend(workflows: Path, instance: dg.DagsterInstance, **config: str
           ) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import build_definitions

    job = build_definitions(workflows).resolve_job_def("deliv_resend_job")
    return job.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"deliv_resend_file": {"config": config}}})


def test_resend_delivers_the_identical_bytes(stagecoach_env: Path, workflow_runner,
                                             recipient: GpgRecipient):
    root = stagecoach_env
    workflows = write_spec(root, spec(root, SEALED.format(key=recipient.public_key)))
    instance = dg.DagsterInstance.ephemeral()
    assert workflow_runner(workflows, "deliv", instance=instance).success
    [sent] = (root / "outbox" / "out").rglob("*.zip")
    original = md5sum(sent)
    sent.unlink()  # the partner lost it
    (root / "mirror").rename(root / "mirror-old")
    first = rows(root)[0]

    result = resend(workflows, instance, ledger_id=first.id)
    assert result.success
    assert md5sum(sent) == original  # same bytes (GPG output is never re-made)
    assert md5sum(root / "mirror" / sent.relative_to(root / "outbox")) == original
    again = [e for e in rows(root) if e.kind == "resend"]
    assert [(e.destination, e.status, e.resent_from, e.md5) for e in again] == [
        ("outbox", "delivered", first.id, original), ("mirror", "delivered", first.id, original)]
    observed = instance.fetch_observations(ACTIVATION, limit=5).records
    assert observed and observed[0].asset_observation.metadata["resent_from"].value == first.id

    # By activation and day too; an unknown id is a clear failure.
    assert resend(workflows, instance, activation="partner",
                  day=first.created_at.date().isoformat()).success
    missing = resend(workflows, instance, ledger_id="nope")
    assert not missing.success
    assert "no file_history row 'nope'" in str(
        next(e for e in missing.all_events if e.is_step_failure).step_failure_data.error)


def test_resend_goes_to_the_original_days_folder(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    activation = '    to: outbox\n    path: "out/{{ ds }}"\n    file: {name: people.csv}\n'
    workflows = write_spec(root, spec(root, activation))
    instance = dg.DagsterInstance.ephemeral()
    from orchestration.definitions import build_definitions

    backfill = build_definitions(workflows).resolve_job_def("deliv_job").execute_in_process(
        instance=instance, tags={"dagster/scheduled_execution_time": "2026-11-03T06:00:00Z"})
    assert backfill.success
    sent = root / "outbox" / "out" / "2026-11-03" / "people.csv"
    original = md5sum(sent)
    sent.unlink()
    assert resend(workflows, instance, activation="partner", day="2026-11-03").success
    assert md5sum(sent) == original
    assert [e.day for e in rows(root)] == ["2026-11-03", "2026-11-03"]


@pytest.mark.fault
def test_resend_refuses_a_damaged_archive(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    workflows = write_spec(root, spec(root, "    to: outbox\n    file: {name: people.csv}\n"))
    instance = dg.DagsterInstance.ephemeral()
    assert workflow_runner(workflows, "deliv", instance=instance).success
    entry = rows(root)[0]
    Path(entry.archive_uri).write_text("tampered\n")
    (root / "outbox" / "people.csv").unlink()
    result = resend(workflows, instance, ledger_id=entry.id)
    assert not result.success
    error = str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)
    assert f"has md5 {md5sum(Path(entry.archive_uri))}, not the {entry.md5} that was sent" in error
    assert not (root / "outbox" / "people.csv").exists()
    assert not list((root / "data" / "deliv" / "resend").rglob("*.csv"))  # nothing left behind


def cli(*args: str, env_root: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "STAGECOACH_DATA_DIR": str(env_root / "data"),
           "STAGECOACH_WORKFLOWS_DIR": str(env_root / "workflows")}
    return subprocess.run([sys.executable, "-m", "orchestration", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_history_and_download_commands(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    workflows = write_spec(root, spec(root, "    to: outbox\n    file: {name: people.csv}\n"))
    assert workflow_runner(workflows, "deliv").success
    entry = rows(root)[0]

    listed = cli("history", "--workflow", "deliv", env_root=root)
    assert listed.returncode == 0, listed.stderr
    assert entry.id in listed.stdout and "people.csv" in listed.stdout

    out = root / "downloads"
    out.mkdir()
    fetched = cli("download", entry.id, "--to", str(out), env_root=root)
    assert fetched.returncode == 0, fetched.stderr
    assert md5sum(out / "people.csv") == entry.md5
    assert sorted(p.name for p in out.iterdir()) == ["people.csv"]

    Path(entry.archive_uri).write_text("bit rot\n")
    (out / "people.csv").unlink()
    damaged = cli("download", entry.id, "--to", str(out), env_root=root)
    assert damaged.returncode == 1 and "it is damaged; nothing was copied" in damaged.stderr
    assert list(out.iterdir()) == []
    unknown = cli("download", "0000", env_root=root)
    assert unknown.returncode == 1 and "no file_history row '0000'" in unknown.stderr


def test_forwarding_a_couriers_files_keeps_their_names(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    text = spec(root, "    to: outbox\n    file: {name: people.csv}\n").replace(
        "  partner:\n    query: everyone\n    to: outbox\n    file: {name: people.csv}\n",
        "  partner:\n    courier: people\n    to: outbox\n    path: raw\n    seal: {zip: true}\n")
    workflows = write_spec(root, text)
    run = workflow_runner(workflows, "deliv")
    assert run.success, run.failures()
    packed = root / "outbox" / "raw" / "people.csv.zip"
    with zipfile.ZipFile(packed) as archive:
        assert archive.namelist() == ["people.csv"]
        assert archive.read("people.csv").decode() == PEOPLE  # the file as it arrived
    assert (root / "landing" / "people.csv").read_text() == PEOPLE  # source untouched
    assert sorted(p.name for p in (root / "landing").iterdir()) == ["people.csv"]


def test_forwarding_several_files_and_skipping_empty_ones(stagecoach_env: Path,
                                                        workflow_runner):
    root = stagecoach_env
    text = spec(root, "    to: outbox\n    file: {name: people.csv}\n").replace(
        "  people: {from: landing, path: people.csv}",
        "  people: {from: landing, path: people.csv}\n"
        "  drops: {from: landing, path: \"drop_*.txt\", required: false}").replace(
        "  partner:\n    query: everyone\n    to: outbox\n    file: {name: people.csv}\n",
        "  partner:\n    courier: drops\n    to: outbox\n"
        "    file: {name: \"acme_{{ source_name }}\"}\n")
    (root / "landing" / "drop_a.txt").write_text("a\n")
    (root / "landing" / "drop_b.txt").write_text("bb\n")
    (root / "landing" / "drop_empty.txt").write_text("")
    run = workflow_runner(write_spec(root, text), "deliv")
    assert run.success, run.failures()
    assert sorted(p.name for p in (root / "outbox").iterdir()) == ["acme_drop_a.txt",
                                                                  "acme_drop_b.txt"]
    assert (root / "outbox" / "acme_drop_b.txt").read_text() == "bb\n"
    statuses = {e.file_name: e.status for e in rows(root)}
    assert statuses == {"acme_drop_a.txt": "delivered", "acme_drop_b.txt": "delivered",
                        "acme_drop_empty.txt": "empty_not_sent"}
    assert run.metadata("activation", "partner")["file_count"] == 3


def test_unencodable_value_names_row_and_column(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    activation = "    to: outbox\n    file: {name: people.csv, encoding: ascii}\n"
    workflows = write_spec(root, spec(root, activation))
    run = workflow_runner(workflows, "deliv")
    assert not run.success
    assert "row 3, column 'name': 'é' cannot be written in ascii" in run.failures()
    assert not (root / "outbox").exists() or not any((root / "outbox").rglob("*"))
