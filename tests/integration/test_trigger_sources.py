"""Trigger sensors against real sources: SFTP (OpenSSH), S3 (moto) and PostgreSQL.

The sensors are built from inline specs with `build_trigger_sensor` and ticked with the cursor
each previous tick stored, as the daemon does; files are put by an independent client (the
server's file system, boto3) and tables changed with SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa

from assets import spec
from assets.names import SERIAL_TAG, TRIGGER_TAG, WAREHOUSE_KEY, connection_key
from orchestration.connections import resource_for
from orchestration.spec_loader import load_workflows
from resources.warehouse import WarehouseResource
from sensors.triggers import TriggerError, build_trigger_sensor, result_fingerprint

pytestmark = pytest.mark.timeout(180)


def load_spec(root: Path, connections: str, triggers: str, extra: str = "") -> spec.Workflow:
    folder = root / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / "src.yaml").write_text(f"""
workflow:
  name: src
connections:
  landing: {{kind: folder, path: {root}}}
{connections}
couriers:
  orders: {{from: landing, path: orders.csv}}
courier_groups:
  load: {{couriers: [orders]}}
{extra}
triggers:
{triggers}
""", encoding="utf-8")
    [loaded] = load_workflows(folder)
    return loaded.spec


class Ticker:
    """Ticks one trigger's sensor, carrying the stored cursor from tick to tick."""

    def __init__(self, workflow: spec.Workflow, trigger: str, resources: dict | None = None):
        sensor = build_trigger_sensor(workflow, trigger, workflow.triggers[trigger], "queue")
        assert sensor is not None
        self.sensor = sensor
        self.resources = resources if resources is not None else {
            connection_key("src", c): resource_for(conn)
            for c, conn in workflow.connections.items()}
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources=self.resources)
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data

    def state(self) -> dict:
        return json.loads(self.cursor or "null")


FILES = """\
  partner_files:
    job: load
    when: {kind: file_change, connection: partner, path: "out/*.csv"}
"""


def check_new_file_fires_once(ticker: Ticker, put) -> None:
    """The scenario every file source must pass: record, wait for stable, fire, stay quiet."""
    put("out/before.csv", b"already there\n")
    assert ticker.tick().run_requests == []  # first look: recorded, not taken
    put("out/orders.csv", b"id\n1\n")
    put("out/notes.txt", b"not matching\n")
    assert ticker.tick().run_requests == []  # seen once
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG] == "partner_files: 1 new or changed file(s): out/orders.csv"
    assert request.tags[SERIAL_TAG] == "src_load_job"
    assert ticker.state()["files"]["out/orders.csv"][0] == 5
    assert set(ticker.state()["files"]) == {"out/before.csv", "out/orders.csv"}
    assert ticker.tick().run_requests == []


# ---------------------------------------------------------------- SFTP


@pytest.fixture
def sftp_base(sshd) -> Path:
    base = sshd.root / f"trigger-{uuid.uuid4().hex[:8]}"
    (base / "out").mkdir(parents=True)
    return base


def sftp_connection(sshd, base: Path, auth: str) -> str:
    return (f"  partner: {{kind: sftp, host: {sshd.host}, port: {sshd.port}, "
            f"username: {sshd.username}, {auth}, known_hosts: {sshd.known_hosts_path}, "
            f"base_path: {base}, timeout_seconds: 10}}")


def test_file_change_on_sftp(sshd, sftp_base: Path, tmp_path: Path):
    workflow = load_spec(tmp_path, sftp_connection(
        sshd, sftp_base, f"private_key_path: {sshd.private_key_path}"), FILES)
    ticker = Ticker(workflow, "partner_files")

    def put(path: str, data: bytes) -> None:
        (sftp_base / path).write_bytes(data)

    check_new_file_fires_once(ticker, put)

    growing = sftp_base / "out" / "big.csv"  # an upload still going, under its final name
    growing.write_bytes(b"id\n")
    for row in range(2):
        assert ticker.tick().run_requests == []
        with open(growing, "ab") as handle:
            handle.write(f"{row}\n".encode())
    assert ticker.tick().run_requests == []
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG].endswith("out/big.csv")

    # An older mtime than anything seen: a copy that kept its original time.
    (sftp_base / "out" / "old.csv").write_bytes(b"x\n")
    os.utime(sftp_base / "out" / "old.csv", (978_307_200, 978_307_200))
    assert ticker.tick().run_requests == []
    [late] = ticker.tick().run_requests
    assert late.tags[TRIGGER_TAG].endswith("out/old.csv")


def test_sftp_listing_error_names_the_connection_and_hides_the_password(
        sshd, sftp_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    password = "wrong-" + uuid.uuid4().hex
    monkeypatch.setenv("SRC_SFTP_PASSWORD", password)
    workflow = load_spec(tmp_path, sftp_connection(
        sshd, sftp_base, "password: {env: SRC_SFTP_PASSWORD}"), FILES)
    ticker = Ticker(workflow, "partner_files")
    with pytest.raises(TriggerError, match=r"trigger partner_files: cannot list 'out/\*\.csv' "
                                           r"on connection 'partner': sftp ") as raised:
        ticker.tick()
    assert password not in str(raised.value)
    assert ticker.cursor is None


# ---------------------------------------------------------------- S3 (moto)


def test_file_change_on_s3(s3_endpoint: str, tmp_path: Path):
    bucket = f"trigger-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    connection = (f"  partner: {{kind: s3, bucket: {bucket}, prefix: inbox, "
                  f"endpoint_url: '{s3_endpoint}', region: us-east-1, "
                  "access_key_id: {env: AWS_ACCESS_KEY_ID}, "
                  "secret_access_key: {env: AWS_SECRET_ACCESS_KEY}}")
    ticker = Ticker(load_spec(tmp_path, connection, FILES), "partner_files")

    def put(path: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"inbox/{path}", Body=data)

    check_new_file_fires_once(ticker, put)
    put("out/orders.csv", b"id\n1\n2\n")  # replaced by a bigger object
    assert ticker.tick().run_requests == []
    [replaced] = ticker.tick().run_requests
    assert replaced.tags[TRIGGER_TAG].endswith("out/orders.csv")


def test_s3_listing_error_names_the_connection(s3_endpoint: str, tmp_path: Path):
    connection = (f"  partner: {{kind: s3, bucket: no-such-bucket-{uuid.uuid4().hex[:8]}, "
                  f"endpoint_url: '{s3_endpoint}', region: us-east-1}}")
    ticker = Ticker(load_spec(tmp_path, connection, FILES), "partner_files")
    with pytest.raises(TriggerError, match=r"on connection 'partner': s3://no-such-bucket-.* "
                                           r"list: .*NoSuchBucket"):
        ticker.tick()


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS mart CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS ops CASCADE"))
    yield engine
    engine.dispose()


def run(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


MART = "databases:\n  mart:\n    tables:\n      totals: {sql: 'select 1 as n'}"
TABLE = "  mart_changed:\n    job: workflow\n    when: {kind: table_change, table: mart.totals}"


def test_table_change_on_postgres(pg: sa.Engine, postgres_url: str, tmp_path: Path):
    ticker = Ticker(load_spec(tmp_path, "", TABLE, extra=MART), "mart_changed",
                    resources={WAREHOUSE_KEY: WarehouseResource(url=postgres_url)})
    run(pg, "CREATE SCHEMA mart",
        # `t` is there so that a bare `t` alias could not stand in for the whole row.
        "CREATE TABLE mart.totals (region text, n numeric(12, 2), at timestamptz, doc jsonb, "
        "t text DEFAULT 'same')",
        "INSERT INTO mart.totals (region, n, at, doc) VALUES ('eu', 1.5, now(), '{\"a\": 1}'), "
        "('us', 2, NULL, NULL)")
    first = ticker.tick()
    assert first.run_requests == [] and "first look" in first.skip_message
    assert ticker.state()["fingerprint"].startswith("2:")
    assert ticker.tick().run_requests == []

    run(pg, "INSERT INTO mart.totals (region, n) VALUES ('apac', 3)")
    [inserted] = ticker.tick().run_requests
    assert inserted.tags[TRIGGER_TAG] == "mart_changed: table mart.totals changed"
    assert ticker.tick().run_requests == []

    run(pg, "UPDATE mart.totals SET doc = '{\"a\": 2}' WHERE region = 'eu'")
    [updated] = ticker.tick().run_requests  # same count, other content
    assert updated.run_key != inserted.run_key
    run(pg, "UPDATE mart.totals SET n = n WHERE region = 'us'")
    assert ticker.tick().run_requests == []  # rows rewritten (and moved), content the same

    run(pg, "DROP TABLE mart.totals")
    [dropped] = ticker.tick().run_requests
    assert ticker.state()["fingerprint"] == "absent"
    assert dropped.tags[TRIGGER_TAG] == "mart_changed: table mart.totals (absent) changed"


def test_table_change_error_fails_the_tick(tmp_path: Path):
    dead = WarehouseResource(url="postgresql+psycopg2://nobody:secret-pw@127.0.0.1:1/none")
    ticker = Ticker(load_spec(tmp_path, "", TABLE, extra=MART), "mart_changed",
                    resources={WAREHOUSE_KEY: dead})
    with pytest.raises(TriggerError, match=r"trigger mart_changed: cannot read table "
                                           r"mart.totals in the warehouse: ") as raised:
        ticker.tick()
    assert "secret-pw" not in str(raised.value)


SQL = """\
  events_ready:
    job: load
    when:
      kind: sql_change
      connection: ops_db
      query: "select id, payload, ready_at from ops.events where ready order by random()"
"""


def test_sql_change_on_a_postgres_connection(pg: sa.Engine, postgres_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SRC_OPS_URL", postgres_url)
    run(pg, "CREATE SCHEMA ops",
        "CREATE TABLE ops.events AS SELECT i AS id, md5(i::text) AS payload, "
        "now() - i * interval '1 second' AS ready_at, i % 3 <> 0 AS ready "
        "FROM generate_series(1, 150000) AS i")  # two batches of the streamed result
    workflow = load_spec(tmp_path, "  ops_db: {kind: sql, url: {env: SRC_OPS_URL}}", SQL)
    ticker = Ticker(workflow, "events_ready")
    assert ticker.sensor.required_resource_keys == {connection_key("src", "ops_db")}

    assert ticker.tick().run_requests == []  # first look
    # The rows come back in another order every time: the same multiset is no change.
    assert ticker.tick().run_requests == []
    run(pg, "UPDATE ops.events SET payload = 'changed' WHERE id = 149999")
    [request] = ticker.tick().run_requests
    assert request.tags[TRIGGER_TAG] == ("events_ready: the query on connection 'ops_db' "
                                         "changed")
    assert ticker.tick().run_requests == []
    run(pg, "UPDATE ops.events SET ready = false WHERE id = 1")
    assert len(ticker.tick().run_requests) == 1


def test_result_fingerprint_streams_batches_and_ignores_row_order(pg: sa.Engine,
                                                                   postgres_url: str):
    warehouse = WarehouseResource(url=postgres_url)
    sql = "select i as id, i * 2 as twice from generate_series(1, 2500) as i order by i {}"
    seen = []

    def counted(direction: str) -> Iterator:
        for batch in warehouse.batches(sql.format(direction), rows=1000):
            seen.append(batch.num_rows)
            yield batch

    assert result_fingerprint(counted("asc")) == result_fingerprint(counted("desc"))
    assert seen == [1000, 1000, 500] * 2
    other = warehouse.batches("select i as id, i * 2 as other from generate_series(1, 2500) i")
    assert result_fingerprint(other) != result_fingerprint(warehouse.batches(sql.format("")))
