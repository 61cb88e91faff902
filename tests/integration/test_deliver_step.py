"""The automation `deliver` step on real servers: a report's PDF mailed (read back from the SMTP
server, parsed with pypdf), a script's two files zipped to SFTP (checked with md5sum, listed by
`history`, one re-sent byte for byte), an empty file left unsent (or sent, or failing the step)
as the spec says, an existing file refused with `overwrite: false`, and the README's example."""

from __future__ import annotations

import email
import email.policy
import io
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import dagster as dg
import pypdf
import pytest

from assets.delivery import deliverables
from orchestration.spec_loader import load_workflow_text
from resources.bookkeeping.ledger import DeliveryLedger, LedgerEntry
from resources.warehouse import WarehouseResource
from tests import servers_mail
from tests.conftest import SshServer, need_server
from tests.gpg_keys import make_recipient
from tests.integration.test_automation_steps import failures
from tests.integration.test_automations import WF, run, write_spec

pytestmark = pytest.mark.timeout(240)
smtp_plain = servers_mail.smtp_plain
REPO = Path(__file__).resolve().parents[2]
DAY = {"dagster/scheduled_execution_time": "2026-12-07T04:00:00+00:00"}

TWO_FILES = """
import os, pathlib
out = pathlib.Path(os.environ["WORK"])
(out / "orders.csv").write_text("id,amount\\n1,9.5\\n2,7.25\\n")
(out / "returns.csv").write_text("id\\n7\\n")
(out / "empty.csv").write_text(os.environ.get("EMPTY", ""))
for name in os.environ["FILES"].split(","):
    print(f"STAGECOACH_OUTPUT_FILE={out / name}")
"""


def ledger_rows(root: Path, name: str | None = None) -> list[LedgerEntry]:
    found = DeliveryLedger(WarehouseResource(
        url=f"duckdb:///{root / 'data' / 'warehouse.duckdb'}")).find(workflow=WF,
                                                                    activation=name)
    return sorted(found, key=lambda e: (e.created_at, e.id))


def md5sum(path: Path) -> str:
    """The coreutils program, an independent witness of what arrived."""
    return subprocess.run(["md5sum", str(path)], check=True, capture_output=True,
                          text=True).stdout.split()[0]


def sftp_connection(sshd: SshServer, folder: Path) -> str:
    return f"""  vendor_sftp:
    kind: sftp
    host: {sshd.host}
    port: {sshd.port}
    username: {sshd.username}
    private_key_path: {sshd.private_key_path}
    known_hosts: {sshd.known_hosts_path}
    base_path: {folder}
    retries: 0"""


def script_spec(root: Path, deliver: str, extra: str, files: str = "orders.csv,returns.csv,"
                "empty.csv", params: str = "{}") -> dg.Definitions:
    scripts = root / "workflows" / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "two_files.py").write_text(TWO_FILES, encoding="utf-8")
    (root / "work").mkdir(exist_ok=True)
    return write_spec(root, f"""  export:
    params: {params}
    steps:
      - {{name: extract, kind: python, script: scripts/two_files.py,
         env: {{WORK: "{root / 'work'}", FILES: "{files}"}}}}
{deliver}""", extra=extra)


def test_a_report_is_mailed_as_a_pdf_attachment(stagecoach_env: Path,
                                                smtp_plain: servers_mail.SmtpServer):
    recipient = f"board-{uuid.uuid4().hex[:8]}@example.com"
    defs = write_spec(stagecoach_env, f"""  monthly:
    steps:
      - {{name: sales, kind: sql, into: rep.sales, sql: "
          select 'north' as region, 12.5 as revenue union all select 'south', 7.0"}}
      - {{name: report, kind: report, title: Monthly sales,
         file_name: "sales_{{{{ ds_nodash }}}}.pdf",
         tables: [{{title: By region, sql: "select * from rep.sales order by revenue desc"}}]}}
      - name: send
        kind: deliver
        to: mailer
        mail:
          to: [{recipient}]
          subject: "Sales {{{{ ds }}}}: {{{{ file_name }}}}"
          body: "md5 {{{{ md5 }}}}, {{{{ size }}}} bytes, from {{{{ activation }}}}"
""", extra=f"""  mailer: {{kind: smtp, host: 127.0.0.1, port: {smtp_plain.port}, security: none,
            from_address: stagecoach@example.com}}""")
    with dg.instance_for_test() as instance:
        result = run(defs, "monthly", instance, tags=DAY)
    assert result.success, failures(result)

    [entry] = ledger_rows(stagecoach_env)
    assert (entry.activation, entry.file_name, entry.status, entry.destination_uri) == (
        "monthly__send", "sales_20261207.pdf", "delivered", f"mailto:{recipient}")
    [received] = [m for m in smtp_plain.all_received() if recipient in m.rcpt_tos]
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    assert message["Subject"] == "Sales 2026-12-07: sales_20261207.pdf"
    body = message.get_body(("plain",)).get_content()
    assert f"md5 {entry.md5}, {entry.size} bytes, from monthly__send" in body
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "sales_20261207.pdf"
    assert attachment.get_content_type() == "application/pdf"
    pdf = pypdf.PdfReader(io.BytesIO(attachment.get_content()))
    lines = "\n".join(page.extract_text() for page in pdf.pages).splitlines()
    assert "Monthly sales" in lines and "By region" in lines
    assert "north" in lines and "12.5" in lines and "south" in lines
    # the archived copy is the very PDF that was mailed
    assert Path(entry.archive_uri).read_bytes() == attachment.get_content()


def cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "STAGECOACH_DATA_DIR": str(root / "data"),
           "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows")}
    return subprocess.run([sys.executable, "-m", "orchestration", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_two_script_files_zipped_to_sftp_listed_downloaded_and_one_resent(
        stagecoach_env: Path, sshd: SshServer):
    root = stagecoach_env
    drop = sshd.root / f"drop-{uuid.uuid4().hex[:8]}"
    drop.mkdir()
    defs = script_spec(root, """      - name: send
        kind: deliver
        to: [vendor_sftp]
        path: "in/{{ ds }}"
        file: {name: "acme_{{ ds_nodash }}_{{ source_name }}"}
        seal: {zip: true}
""", sftp_connection(sshd, drop))
    with dg.instance_for_test() as instance:
        result = run(defs, "export", instance, tags=DAY)
        assert result.success, failures(result)
        folder = drop / "in" / "2026-12-07"
        names = ["acme_20261207_orders.csv.zip", "acme_20261207_returns.csv.zip"]
        assert sorted(p.name for p in folder.iterdir()) == names  # the empty file was not sent
        rows = ledger_rows(root, "export__send")
        sent = {e.file_name: e for e in rows if e.status == "delivered"}
        assert sorted(sent) == names
        for name, entry in sent.items():
            assert md5sum(folder / name) == entry.md5  # the recorded md5 is what arrived
            assert entry.destination == "vendor_sftp" and entry.day == "2026-12-07"
        [empty] = [e for e in rows if e.status == "empty_not_sent"]
        assert empty.file_name == "acme_20261207_empty.csv"

        listed = cli("history", "--workflow", WF, "--activation", "export__send", root=root)
        assert listed.returncode == 0, listed.stderr
        for entry in sent.values():
            assert entry.id in listed.stdout
            assert f"{WF}/export__send: {entry.file_name} -> " in listed.stdout

        downloads = root / "downloads"  # the archived file, as `download` gives it back
        downloads.mkdir()
        fetched = cli("download", sent[names[1]].id, "--to", str(downloads), root=root)
        assert fetched.returncode == 0, fetched.stderr
        assert [p.name for p in downloads.iterdir()] == [names[1]]
        assert md5sum(downloads / names[1]) == md5sum(folder / names[1])

        lost = folder / names[0]
        original = md5sum(lost)
        lost.unlink()  # the partner lost one file
        resend = defs.resolve_job_def(f"{WF}_resend_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config={"ops": {
                f"{WF}_resend_file": {"config": {"ledger_id": sent[names[0]].id}}}})
    assert resend.success, failures(resend)
    assert md5sum(lost) == original  # the archived bytes, not a re-made zip
    [again] = [e for e in ledger_rows(root, "export__send") if e.kind == "resend"]
    assert (again.file_name, again.status, again.resent_from) == (
        names[0], "delivered", sent[names[0]].id)


def test_an_empty_file_is_sent_only_when_the_spec_says_so(stagecoach_env: Path,
                                                          sshd: SshServer):
    root = stagecoach_env
    drop = sshd.root / f"drop-{uuid.uuid4().hex[:8]}"
    drop.mkdir()
    defs = script_spec(root, """      - {name: skip, kind: deliver, to: vendor_sftp, path: skipped}
      - {name: send, kind: deliver, to: vendor_sftp, path: sent, empty: send}
""", sftp_connection(sshd, drop))
    with dg.instance_for_test() as instance:
        result = run(defs, "export", instance, tags=DAY)
    assert result.success, failures(result)
    # each deliver step got the script's three files: the second step had the same ones
    assert sorted(p.name for p in (drop / "skipped").iterdir()) == ["orders.csv", "returns.csv"]
    assert sorted(p.name for p in (drop / "sent").iterdir()) == [
        "empty.csv", "orders.csv", "returns.csv"]
    assert (drop / "sent" / "empty.csv").stat().st_size == 0
    statuses = {(e.activation, e.file_name): e.status for e in ledger_rows(root)
                if e.status != "sending"}
    assert statuses[("export__skip", "empty.csv")] == "empty_not_sent"
    assert statuses[("export__send", "empty.csv")] == "delivered"


def test_an_empty_file_fails_the_step_with_empty_fail(stagecoach_env: Path):
    root = stagecoach_env
    defs = script_spec(root, """      - {name: send, kind: deliver, to: outbox, empty: fail}
""", f"  outbox: {{kind: folder, path: {root / 'outbox'}}}")
    with dg.instance_for_test() as instance:
        result = run(defs, "export", instance, tags=DAY)
    assert not result.success
    assert failures(result) == ["empty.csv: the result has no rows and `empty: fail` is set"]
    assert not (root / "outbox").exists() or not list((root / "outbox").iterdir())  # none sent
    assert ledger_rows(root) == []


def readme_yaml(containing: str) -> str:
    readme = (REPO / "docs" / "spec-reference.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if containing in b]
    return block


def test_the_readme_deliver_example_loads_with_the_readme_connections(tmp_path: Path):
    text = ("workflow: {name: acme}\n" + readme_yaml("connections:\n  landing:")
            + readme_yaml("kind: deliver"))
    workflow = load_workflow_text(text, "acme.yaml", tmp_path)
    pdf, mail, backup = workflow.automations["board_pack"].steps
    assert (pdf.kind, mail.kind, backup.kind) == ("report", "deliver", "deliver")
    assert mail.destinations == ["mailer"] and mail.mail.max_attachment_mb == 10
    assert backup.destinations == ["vendor_sftp", "lake"] and backup.seal.zip
    assert not backup.overwrite and backup.empty == "skip"
    assert set(deliverables(workflow)) == {"board_pack__mail", "board_pack__backup"}


def test_overwrite_false_refuses_a_file_already_there_and_sends_the_others(
        stagecoach_env: Path):
    root = stagecoach_env
    (root / "outbox").mkdir()
    (root / "outbox" / "orders.csv").write_text("the partner's own file\n")
    defs = script_spec(root, """      - {name: send, kind: deliver, to: outbox, overwrite: false,
         retry: {count: 2, delay: 1s}}
""", f"  outbox: {{kind: folder, path: {root / 'outbox'}}}")
    with dg.instance_for_test() as instance:
        result = run(defs, "export", instance, tags=DAY)
    assert not result.success
    [message] = failures(result)  # refused for good: the step's retries did not run it again
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert message.startswith("step export__send: 1 delivery refused (not retried")
    assert "orders.csv" in message
    assert (root / "outbox" / "orders.csv").read_text() == "the partner's own file\n"
    assert (root / "outbox" / "returns.csv").read_text() == "id\n7\n"
    statuses = {e.file_name: e.status for e in ledger_rows(root, "export__send")}
    assert statuses == {"orders.csv": "failed", "returns.csv": "delivered",
                        "empty.csv": "empty_not_sent"}


def test_gpg_then_zip_with_a_key_beside_the_spec_and_a_resend_to_the_same_folder(
        stagecoach_env: Path, tmp_path_factory: pytest.TempPathFactory):
    recipient = make_recipient(tmp_path_factory.mktemp("gpg"))
    if recipient is None:
        need_server("gpg", "GnuPG is not installed (apt-get install gnupg)")
    root = stagecoach_env
    (root / "workflows" / "keys").mkdir(parents=True)
    shutil.copy(recipient.public_key, root / "workflows" / "keys" / "partner.asc")
    defs = script_spec(root, """      - {name: send, kind: deliver, to: outbox,
         path: "{{ params.region }}/{{ params.zone }}",
         seal: {gpg: {recipients: [keys/partner.asc]}, zip: true}}
""", f"  outbox: {{kind: folder, path: {root / 'outbox'}}}", files="orders.csv",
                       params="{zone: north}")
    with dg.instance_for_test() as instance:
        result = run(defs, "export", instance, tags=DAY)
        assert result.success, failures(result)
        packed = root / "outbox" / "eu" / "north" / "orders.csv.gpg.zip"
        with zipfile.ZipFile(packed) as archive:
            assert archive.namelist() == ["orders.csv.gpg"]
            (root / "member.gpg").write_bytes(archive.read("orders.csv.gpg"))
        assert recipient.decrypt(root / "member.gpg") == b"id,amount\n1,9.5\n2,7.25\n"
        original = md5sum(packed)
        packed.unlink()
        entry = next(e for e in ledger_rows(root, "export__send")
                     if e.file_name == packed.name and e.status == "delivered")
        resend = defs.resolve_job_def(f"{WF}_resend_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config={"ops": {
                f"{WF}_resend_file": {"config": {"activation": "export__send",
                                                 "day": "2026-12-07"}}}})
    assert resend.success, failures(resend)
    [again] = [e for e in ledger_rows(root) if e.kind == "resend"]
    assert (again.resent_from, again.status) == (entry.id, "delivered")
    assert md5sum(packed) == original  # back in the folder the automation's params rendered
