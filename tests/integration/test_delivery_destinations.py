"""One workflow delivers a sealed file to every destination kind (SFTP, FTP, FTPS, SMB, S3) and
by mail; what arrived is read back by each server's independent witness and compared with the
ledger and the archive."""

from __future__ import annotations

import email
import email.policy
import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from assets import spec as spec_models
from resources.bookkeeping.ledger import DeliveryLedger
from resources.warehouse import WarehouseResource
from tests import servers_mail
from tests.endpoints import Endpoint

pytestmark = pytest.mark.timeout(300)

smtp_tls_files = servers_mail.smtp_tls_files
smtp_starttls = servers_mail.smtp_starttls

KINDS = ["sftp", "ftp", "ftps", "smb", "s3"]
RENAMED = {"region_name": "region", "aws_access_key_id": "access_key_id",
           "aws_secret_access_key": "secret_access_key"}
SECRETS = {"password", "access_key_id", "secret_access_key"}
CONNECTION_MODELS = {"sftp": spec_models.SftpConnection, "ftp": spec_models.FtpConnection,
                     "ftps": spec_models.FtpConnection, "smb": spec_models.SmbConnection,
                     "s3": spec_models.S3Connection}


def connection_yaml(endpoint: Endpoint, kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The endpoint's settings as a spec connection; secrets go through environment variables."""
    _, settings = endpoint.rebuild
    fields = CONNECTION_MODELS[kind].model_fields
    lines = [f"    kind: {'ftp' if kind == 'ftps' else kind}"]
    for key, value in settings.items():
        key = RENAMED.get(key, key)
        if key not in fields or value is None:
            continue
        if key in SECRETS:
            variable = f"TEST_{kind.upper()}_{key.upper()}"
            monkeypatch.setenv(variable, str(value))
            lines.append(f"    {key}: {{env: {variable}}}")
        else:
            lines.append(f"    {key}: {value!r}" if isinstance(value, str) else
                         f"    {key}: {str(value).lower() if isinstance(value, bool) else value}")
    return "\n".join(lines)


def workflow(root: Path, destination: str, activation_extra: str = "") -> Path:
    (root / "landing").mkdir()
    (root / "landing" / "people.csv").write_text("id,name\n1,ada\n2,grace\n")
    folder = root / "workflows"
    folder.mkdir()
    (folder / "kinds.yaml").write_text(f"""
workflow: {{name: kinds, owners: [team:data]}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
  partner:
{destination}
couriers:
  people: {{from: landing, path: people.csv}}
domain_tables:
  people: {{from: people, columns: {{id: {{tag: id}}, name: {{tag: name}}}}}}
queries:
  everyone: {{sql: "select id, name from domain.people order by id"}}
activations:
  partner:
    query: everyone
    to: partner
    path: "drop/{{{{ ds }}}}"
    file: {{name: "people_{{{{ ds_nodash }}}}.csv"}}
    seal: {{zip: true}}
{activation_extra}""")
    return folder


def ledger_rows(root: Path) -> list:
    warehouse = WarehouseResource(url=f"duckdb:///{root / 'data' / 'warehouse.duckdb'}")
    return DeliveryLedger(warehouse).find(workflow="kinds")


@pytest.mark.parametrize("kind", KINDS)
def test_a_sealed_file_reaches_each_kind(kind: str, request: pytest.FixtureRequest,
                                         stagecoach_env: Path, workflow_runner,
                                         monkeypatch: pytest.MonkeyPatch):
    endpoint: Endpoint = request.getfixturevalue(f"{kind}_files")
    root = stagecoach_env
    folder = workflow(root, connection_yaml(endpoint, kind, monkeypatch))

    run = workflow_runner(folder, "kinds")
    assert run.success, run.failures()

    [entry] = ledger_rows(root)
    assert entry.status == "delivered"
    remote = entry.destination_uri.split(f"/{entry.file_name}")[0].rsplit("/drop/", 1)[1]
    arrived = endpoint.read(f"drop/{remote}/{entry.file_name}")
    assert hashlib.md5(arrived, usedforsecurity=False).hexdigest() == entry.md5
    assert Path(entry.archive_uri).read_bytes() == arrived
    assert not [n for n in endpoint.listing(f"drop/{remote}") if n != entry.file_name]
    assert run.metadata("activation", "partner")["destination"] == entry.destination_uri


def test_mail_destination_attaches_the_file(stagecoach_env: Path, workflow_runner,
                                            smtp_starttls: servers_mail.SmtpServer,
                                            monkeypatch: pytest.MonkeyPatch):
    root = stagecoach_env
    monkeypatch.setenv("TEST_SMTP_PASSWORD", smtp_starttls.password or "")
    recipient = f"crm-{uuid.uuid4().hex[:6]}@example.com"
    destination = f"""    kind: smtp
    host: 127.0.0.1
    port: {smtp_starttls.port}
    username: {smtp_starttls.username}
    password: {{env: TEST_SMTP_PASSWORD}}
    ca_file: {smtp_starttls.ca_file}
    from_address: stagecoach@example.com"""
    extra = (f"    mail: {{to: [{recipient}], subject: 'Audience {{{{ ds }}}}: {{{{ rows }}}} "
             "rows'}\n")
    run = workflow_runner(workflow(root, destination, extra), "kinds")
    assert run.success, run.failures()

    [entry] = ledger_rows(root)
    assert (entry.status, entry.destination_uri) == ("delivered", f"mailto:{recipient}")
    [received] = [m for m in smtp_starttls.all_received() if recipient in m.rcpt_tos]
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    assert message["Subject"].endswith(": 2 rows")
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == entry.file_name
    content: Any = attachment.get_content()
    assert hashlib.md5(content, usedforsecurity=False).hexdigest() == entry.md5
    assert smtp_starttls.password not in str(run.metadata("activation", "partner"))


def test_archive_on_s3_then_download_and_resend(stagecoach_env: Path, workflow_runner,
                                               s3_files: Endpoint, sftp_files: Endpoint,
                                               monkeypatch: pytest.MonkeyPatch):
    """`workflow.archive` names an S3 connection: the copy goes there, and the history
    commands and the re-send job read it back from there."""
    import os
    import subprocess
    import sys

    import dagster as dg

    root = stagecoach_env
    folder = workflow(root, connection_yaml(sftp_files, "sftp", monkeypatch))
    spec_file = folder / "kinds.yaml"
    spec_file.write_text(spec_file.read_text().replace(
        "workflow: {name: kinds, owners: [team:data]}",
        "workflow: {name: kinds, owners: [team:data], archive: vault}").replace(
        "  partner:\n", "  vault:\n" + connection_yaml(s3_files, "s3", monkeypatch).replace(
            "prefix: 'base'", "prefix: 'archive'") + "\n  partner:\n", 1))
    instance = dg.DagsterInstance.ephemeral()
    run = workflow_runner(folder, "kinds", instance=instance)
    assert run.success, run.failures()
    [entry] = ledger_rows(root)
    assert entry.archive_uri.startswith(f"s3://{s3_files.rebuild[1]['bucket']}/archive/kinds/")
    sent = sftp_files.read(f"drop/{entry.destination_uri.rsplit('/drop/', 1)[1]}")

    env = {**os.environ, "STAGECOACH_DATA_DIR": str(root / "data"),
           "STAGECOACH_WORKFLOWS_DIR": str(folder)}
    out = root / "copy"
    out.mkdir()
    done = subprocess.run([sys.executable, "-m", "orchestration", "download", entry.id, "--to",
                           str(out)], cwd=Path(__file__).parents[2], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / entry.file_name).read_bytes() == sent

    from orchestration.definitions import build_definitions

    job = build_definitions(folder).resolve_job_def("kinds_resend_job")
    resent = job.execute_in_process(instance=instance, run_config={
        "ops": {"kinds_resend_file": {"config": {"ledger_id": entry.id}}}})
    assert resent.success
    assert [e.status for e in ledger_rows(root) if e.kind == "resend"] == ["delivered"]
