"""No secret is written anywhere Stagecoach or Dagster keeps things.

A demo-like workflow runs under a real `dagster dev` (webserver, daemon, run worker), launched
through the webhook, with every secret set to its own recognisable value: an SFTP password
(courier and destination), S3 keys, an SMTP password, a database URL's password and the webhook
token. A second workflow fails on purpose with wrong passwords (error paths write messages).
Then every byte of DAGSTER_HOME (SQLite run and event storage, compute logs), the data folder
(the DuckDB warehouse file, the archive, staging), dagster dev's own log and the webhook's log
is searched for each secret, raw and in base64 (every alignment), URL and hex encodings, and
every value of every warehouse table (stagecoach.file_history and run_history included) is
searched too, since DuckDB compresses strings on disk.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import shutil
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import duckdb
import pytest
import sqlalchemy as sa

from orchestration.cli.webhook import (
    graphql_launcher,
    make_server,
    request_id_store,
    webhook_targets,
)
from orchestration.spec_loader import load_workflows
from tests import servers_mail
from tests.conftest import need_server
from tests.e2e.dagster_dev import LOCATION, REPOSITORY, running_dagster_dev, wait_for_run
from tests.reliability_report import secrets_scanned

pytestmark = [pytest.mark.security, pytest.mark.timeout(900)]

smtp_tls_files = servers_mail.smtp_tls_files
smtp_starttls = servers_mail.smtp_starttls


# ---------------------------------------------------------------- the scanner


def encodings(secret: str) -> dict[str, bytes]:
    """The forms a secret could be stored in: raw, URL-encoded, hex, and base64 (standard and
    URL-safe) at each of the three byte alignments inside a longer encoded text (the characters
    that depend on neighbouring bytes are left out)."""
    raw = secret.encode()
    forms = {"raw": raw, "url": urllib.parse.quote(secret, safe="").encode(),
             "url+": urllib.parse.quote_plus(secret).encode(),
             "hex": binascii.hexlify(raw), "HEX": binascii.hexlify(raw).upper()}
    for offset in range(3):
        for name, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * offset + raw)
            start, end = -(-offset * 8 // 6), (offset + len(raw)) * 8 // 6
            forms[f"{name}@{offset}"] = encoded[start:end]
    return {name: form for name, form in forms.items() if len(form) >= 8}


@dataclass(frozen=True)
class Leak:
    secret: str  # the secret's name, never its value
    form: str
    where: str


def scan_bytes(data: bytes, where: str, secrets_: dict[str, str]) -> list[Leak]:
    return [Leak(name, form, where) for name, value in secrets_.items()
            for form, needle in encodings(value).items() if needle in data]


def scan_tree(root: Path, secrets_: dict[str, str]) -> tuple[list[Leak], int]:
    """(leaks, files scanned) for every file under root."""
    leaks, count = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        leaks += scan_bytes(path.read_bytes(), str(path), secrets_)
        count += 1
    return leaks, count


def scan_duckdb(path: Path, secrets_: dict[str, str]) -> tuple[list[Leak], list[str]]:
    """(leaks, tables scanned): every value of every table, as text."""
    leaks, tables = [], []
    with duckdb.connect(str(path), read_only=True) as con:
        names = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                            "WHERE table_type = 'BASE TABLE'").fetchall()
        for schema, table in names:
            rows = con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            text = "\n".join("\t".join("" if v is None else str(v) for v in row) for row in rows)
            leaks += scan_bytes(text.encode(), f"warehouse {schema}.{table}", secrets_)
            tables.append(f"{schema}.{table}")
    return leaks, tables


def test_the_scanner_finds_each_form(tmp_path: Path):
    """The scan can fail: a secret planted in each form is found, in a file and in a table."""
    secret = "plant/" + secrets.token_urlsafe(12) + "+x="  # URL-encoding changes it
    for form, needle in encodings(secret).items():
        for pad in (b"", b"x", b"xy"):
            assert scan_bytes(b"junk" + pad + needle + b"junk", "f", {"s": secret}), form
    blob = json.dumps({"token": base64.b64encode(b"Bearer " + secret.encode()).decode()})
    assert scan_bytes(blob.encode(), "f", {"s": secret})
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA stagecoach")
        con.execute("CREATE TABLE stagecoach.t AS SELECT 'url: ' || ? AS v",
                    [urllib.parse.quote(secret, safe="")])
    leaks, tables = scan_duckdb(warehouse, {"s": secret})
    found = {leak.form for leak in leaks}
    assert tables == ["stagecoach.t"] and "url" in found and "raw" not in found
    assert scan_bytes(secret.encode(), "f", {"s": secret})[0].form == "raw"
    assert not scan_bytes(b"nothing here", "f", {"s": secret})


# ---------------------------------------------------------------- the run


def wait_for_run_history(warehouse: Path, runs: dict[str, str], timeout: float = 120.0
                         ) -> list[tuple]:
    """The stagecoach.run_history rows of `runs` once each run's final status is there (the
    alert sensors write them within a tick or two); DuckDB's lock is retried meanwhile."""
    deadline, rows = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            with duckdb.connect(str(warehouse), read_only=True) as con:
                rows = con.execute("SELECT * FROM stagecoach.run_history").fetchall()
                if all(any(run in str(row) and status in str(row) for row in rows)
                       for run, status in runs.items()):
                    return rows
        except duckdb.Error:  # the table does not exist yet, or a writer holds the file
            pass
        time.sleep(3)
    return rows


def leaky_spec(root: Path, sshd, account, s3_endpoint: str, bucket: str, smtp, schema: str
               ) -> str:
    return f"""
workflow:
  name: leaky
  owners: [team:data]
  params: {{min_id: 2}}
connections:
  vendor:
    kind: sftp
    host: 127.0.0.1
    port: {sshd.port}
    username: {account.username}
    password: {{env: SCAN_SFTP_PASSWORD}}
    known_hosts: {sshd.known_hosts_path}
    base_path: {account.folder}
  lake:
    kind: s3
    bucket: {bucket}
    prefix: exports
    region: us-east-1
    endpoint_url: {s3_endpoint}
    access_key_id: {{env: SCAN_S3_KEY_ID}}
    secret_access_key: {{env: SCAN_S3_SECRET}}
  mailer:
    kind: smtp
    host: 127.0.0.1
    port: {smtp.port}
    username: {smtp.username}
    password: {{env: SCAN_SMTP_PASSWORD}}
    ca_file: {smtp.ca_file}
    from_address: stagecoach@example.com
  crm: {{kind: sql, url: {{env: SCAN_CRM_URL}}}}
couriers:
  customers: {{from: vendor, path: incoming/customers.csv}}
  accounts:
    from: crm
    query: "select id, balance from {schema}.accounts where id >= {{{{ params.min_id }}}}"
domain_tables:
  customers:
    from: customers
    primary_key: [customer_id]
    columns:
      customer_id: {{source: id, tag: id, required: true}}
      name: {{tag: name}}
      email: {{tag: email}}
  accounts:
    from: accounts
    columns:
      customer_id: {{source: id, tag: id}}
      balance: {{tag: decimal}}
queries:
  everyone:
    sql: "select c.customer_id, c.name, c.email, a.balance from domain.customers c
          left join domain.accounts a on a.customer_id = c.customer_id order by 1"
activations:
  to_lake:
    query: everyone
    to: lake
    path: "drop/{{{{ ds }}}}"
    file: {{name: "everyone_{{{{ ds_nodash }}}}.csv"}}
  to_vendor:
    query: everyone
    to: vendor
    path: out
    file: {{type: psv, name: "everyone_{{{{ ds_nodash }}}}.txt"}}
    seal: {{zip: true}}
  to_mail:
    query: everyone
    to: mailer
    file: {{name: everyone.csv}}
    mail: {{to: [crm@example.com], subject: "everyone {{{{ ds }}}}", mode: attach}}
triggers:
  hook: {{job: workflow, when: {{kind: webhook, token: {{env: SCAN_WEBHOOK_TOKEN}}}}}}
alerts:
  history: {{kind: dataset}}          # every run as a row of stagecoach.run_history
"""


def failing_spec(root: Path, sshd, account, smtp) -> str:
    return f"""
workflow: {{name: leaky_errors, owners: [team:data]}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
  wrong_vendor:
    kind: sftp
    host: 127.0.0.1
    port: {sshd.port}
    username: {account.username}
    password: {{env: SCAN_WRONG_SFTP_PASSWORD}}
    known_hosts: {sshd.known_hosts_path}
    base_path: {account.folder}
    timeout_seconds: 10
  wrong_mailer:
    kind: smtp
    host: 127.0.0.1
    port: {smtp.port}
    username: {smtp.username}
    password: {{env: SCAN_WRONG_SMTP_PASSWORD}}
    ca_file: {smtp.ca_file}
    from_address: stagecoach@example.com
couriers:
  people: {{from: landing, path: people.csv}}
domain_tables:
  people: {{from: people, columns: {{id: {{tag: id}}, name: {{tag: name}}}}}}
queries:
  all_people: {{sql: "select id, name from domain.people"}}
activations:
  bad_push:
    query: all_people
    to: [wrong_vendor, wrong_mailer]
    file: {{name: people.csv}}
    mail: {{to: [ops@example.com]}}
alerts:
  history: {{kind: dataset}}          # the failure and its error text, in run_history
"""


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def crm_schema(postgres_url: str) -> Iterator[str]:
    schema = f"scan_{secrets.token_hex(4)}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        conn.execute(sa.text(f"CREATE TABLE {schema}.accounts (id integer, balance numeric)"))
        conn.execute(sa.text(f"INSERT INTO {schema}.accounts VALUES (1, 1.5), (2, 20), (3, 300)"))
    yield schema
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def test_no_secret_is_stored_anywhere(tmp_path_factory: pytest.TempPathFactory, sshd,
                                      sftp_password_account, s3_endpoint: str,
                                      smtp_starttls: servers_mail.SmtpServer,
                                      postgres_url: str, crm_schema: str):
    if shutil.which("dagster") is None and not (Path(".venv/bin/dagster")).exists():
        need_server("dagster dev", "the dagster command is missing")
    account, smtp = sftp_password_account, smtp_starttls
    root = tmp_path_factory.mktemp("secret_scan")
    for folder in ("landing", "workflows", "data", "dagster_home"):
        (root / folder).mkdir()
    (root / "landing" / "people.csv").write_text("id,name\n1,ada\n")
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    incoming = account.folder / "incoming"
    incoming.mkdir(exist_ok=True)
    (incoming / "customers.csv").write_text(
        "id,name,email\n1,ada lovelace,ada@example.com\n2,grace hopper,grace@example.com\n"
        "3,alan turing,alan@example.com\n")
    shutil.chown(incoming, user=account.username)

    hexed = uuid.uuid4().hex
    pg_password = f"scan-pg-pass-{hexed[:12]}"
    secret_values = {
        "SCAN_SFTP_PASSWORD": account.password,
        "SCAN_S3_KEY_ID": f"AKIASCAN{hexed[:12].upper()}",
        "SCAN_S3_SECRET": f"scan-s3-secret-{hexed[12:28]}",
        "SCAN_SMTP_PASSWORD": smtp.password or "",
        "SCAN_WEBHOOK_TOKEN": f"scan-webhook-token-{secrets.token_hex(8)}",
        "SCAN_WRONG_SFTP_PASSWORD": f"scan-wrong-sftp-{secrets.token_hex(6)}",
        "SCAN_WRONG_SMTP_PASSWORD": f"scan-wrong-smtp-{secrets.token_hex(6)}",
    }
    environment = {**secret_values, "SCAN_CRM_URL": postgres_url.replace(
        "postgres@", f"postgres:{pg_password}@")}
    scanned_secrets = {**secret_values, "PG_PASSWORD": pg_password}
    assert all(len(v) >= 12 for v in scanned_secrets.values())

    bucket = f"scan-{hexed[:10]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=secret_values["SCAN_S3_KEY_ID"],
                      aws_secret_access_key=secret_values["SCAN_S3_SECRET"])
    s3.create_bucket(Bucket=bucket)
    (root / "workflows" / "leaky.yaml").write_text(
        leaky_spec(root, sshd, account, s3_endpoint, bucket, smtp, crm_schema))
    (root / "workflows" / "leaky_errors.yaml").write_text(
        failing_spec(root, sshd, account, smtp))

    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           **environment}
    env.pop("STAGECOACH_WAREHOUSE_URL", None)
    env.pop("STAGECOACH_EXECUTOR", None)
    webhook_log = Captured()
    logging.getLogger("stagecoach.webhook").addHandler(webhook_log)
    logins_before = len(smtp.handler.logins)
    try:
        with running_dagster_dev(root, root / "workflows", env) as dev:
            targets, tokens = webhook_targets(load_workflows(root / "workflows"), environment)
            requests = request_id_store(f"duckdb:///{root / 'data' / 'requests.duckdb'}", 600)
            server = make_server("127.0.0.1", 0, targets, graphql_launcher(dev.url), requests,
                                 tokens)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{server.server_address[1]}/launch/leaky_job", data=b"",
                    method="POST", headers={
                        "Authorization": f"Bearer {secret_values['SCAN_WEBHOOK_TOKEN']}",
                        "X-Request-Id": f"scan-{hexed}", "X-Caller": "secret scan"})
                with urllib.request.urlopen(request, timeout=60) as answer:
                    run_id = json.loads(answer.read())["run_id"]
            finally:
                server.shutdown()
                server.server_close()
            assert wait_for_run(dev, run_id, timeout=300) == "SUCCESS", dev.log_tail()
            failing = dev.client().submit_job_execution(
                "leaky_errors_job", repository_location_name=LOCATION,
                repository_name=REPOSITORY)
            assert wait_for_run(dev, failing, timeout=300) == "FAILURE", dev.log_tail()
            history = wait_for_run_history(root / "data" / "warehouse.duckdb",
                                           {run_id: "SUCCESS", failing: "FAILURE"})
    finally:
        logging.getLogger("stagecoach.webhook").removeHandler(webhook_log)
    assert history, "the dataset reporter wrote no stagecoach.run_history row"

    # Every secret was really used: the deliveries arrived, logins happened.
    [sent] = (account.folder / "out").iterdir()
    assert sent.name.endswith(".txt.zip")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="exports/drop/")["Contents"]
    assert len(listed) == 1
    assert len(smtp.handler.logins) > logins_before
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from domain.accounts").fetchone() == (2,)
        statuses = dict(con.execute("select destination, status from stagecoach.file_history "
                                    "where activation = 'bad_push'").fetchall())
    assert statuses == {"wrong_vendor": "failed", "wrong_mailer": "failed"}

    leaks, files = scan_tree(root / "dagster_home", scanned_secrets)
    data_leaks, data_files = scan_tree(root / "data", scanned_secrets)
    table_leaks, tables = scan_duckdb(root / "data" / "warehouse.duckdb", scanned_secrets)
    log_leaks = scan_bytes(dev.log.read_bytes(), "dagster dev log", scanned_secrets)
    log_leaks += scan_bytes("\n".join(webhook_log.lines).encode(), "webhook log",
                            scanned_secrets)
    everything = leaks + data_leaks + table_leaks + log_leaks
    report = {"dagster_home_files": files, "data_files": data_files, "tables": tables,
              "secrets": sorted(scanned_secrets), "leaks": len(everything)}
    print(f"secret scan: {json.dumps(report)}")
    secrets_scanned(len(everything), f"{len(scanned_secrets)} secrets; {files + data_files} "
                                     f"files, {len(tables)} tables and 2 logs scanned")
    assert {"stagecoach.file_history", "stagecoach.run_history", "domain.customers"} <= \
        set(tables)
    assert any(p.suffix == ".db" for p in (root / "dagster_home").rglob("*"))
    assert any("compute_logs" in str(p) for p in (root / "dagster_home").rglob("*")), \
        "no compute logs were captured: the scan would miss them"
    assert list((root / "data" / "archive").rglob("*.zip"))
    assert everything == [], everything
