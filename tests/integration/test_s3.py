"""S3BucketResource and S3 workflows against a real S3 API (moto's server on loopback).

What arrived is checked with boto3 directly, independently of the resource under test.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest

from resources.connections.files import RemoteFile, TransferError
from resources.connections.s3 import S3BucketResource

pytestmark = pytest.mark.timeout(120)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def s3(s3_endpoint: str):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def bucket(s3) -> str:
    """A fresh bucket for one test."""
    name = f"stagecoach-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def bucket_resource(endpoint: str, bucket: str, prefix: str = "") -> S3BucketResource:
    return S3BucketResource(bucket=bucket, prefix=prefix, endpoint_url=endpoint,
                            region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")


def keys(s3, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_upload_list_download_round_trip_with_prefix(s3_endpoint: str, s3, bucket: str,
                                                     tmp_path: Path):
    # Over boto3's multipart threshold (8 MB), so the multipart path is exercised too.
    payload = os.urandom(9 * 1024 * 1024 + 123)
    local = tmp_path / "data.bin"
    local.write_bytes(payload)
    conn = bucket_resource(s3_endpoint, bucket, prefix="tenant/in")

    assert conn.upload(local, "sub/data.bin") == len(payload)
    assert keys(s3, bucket) == ["tenant/in/sub/data.bin"]
    assert get(s3, bucket, "tenant/in/sub/data.bin") == payload

    # Neighbours: other extensions, other folders, outside the prefix, a look-alike prefix.
    for key in ["tenant/in/sub/notes.txt", "tenant/in/top.bin", "tenant/in/sub/deeper/x.bin",
                "tenant/other/sub/data.bin", "tenant/input/sub/y.bin", "sub/z.bin"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    listed = conn.list_files("sub/*.bin")
    assert [(f.path, f.size) for f in listed] == [("sub/data.bin", len(payload))]
    assert isinstance(listed[0], RemoteFile) and listed[0].mtime
    assert [f.path for f in conn.list_files("*.bin")] == ["top.bin"]
    assert [f.path for f in conn.list_files("sub/*")] == ["sub/data.bin", "sub/notes.txt"]
    assert conn.list_files("nowhere/*.bin") == []
    unprefixed = bucket_resource(s3_endpoint, bucket)
    assert [f.path for f in unprefixed.list_files("sub/*.bin")] == ["sub/z.bin"]

    back = tmp_path / "back" / "data.bin"
    assert conn.download("sub/data.bin", back) == len(payload)
    assert back.read_bytes() == payload
    assert conn.describe("sub/data.bin") == f"s3://{bucket}/tenant/in/sub/data.bin"


def test_upload_without_overwrite_keeps_existing_object(s3_endpoint: str, s3, bucket: str,
                                                        tmp_path: Path):
    s3.put_object(Bucket=bucket, Key="out/report.csv", Body=b"original\n")
    # An object whose key merely starts with the same text does not count as existing.
    s3.put_object(Bucket=bucket, Key="out/new.csv.bak", Body=b"old backup\n")
    local = tmp_path / "report.csv"
    local.write_text("replacement that must not arrive\n")
    conn = bucket_resource(s3_endpoint, bucket, prefix="out")

    with pytest.raises(TransferError, match="exists and overwrite is off") as refused:
        conn.upload(local, "report.csv", overwrite=False)
    assert f"s3://{bucket}/out/report.csv" in str(refused.value)
    assert get(s3, bucket, "out/report.csv") == b"original\n"

    assert conn.upload(local, "new.csv", overwrite=False) == local.stat().st_size
    assert get(s3, bucket, "out/new.csv") == local.read_bytes()
    assert keys(s3, bucket) == ["out/new.csv", "out/new.csv.bak", "out/report.csv"]

    # The default overwrites.
    assert conn.upload(local, "report.csv") == local.stat().st_size
    assert get(s3, bucket, "out/report.csv") == local.read_bytes()


def test_errors_name_the_bucket_and_operation(s3_endpoint: str, s3, bucket: str,
                                              tmp_path: Path):
    missing = bucket_resource(s3_endpoint, f"{bucket}-missing", prefix="in")
    with pytest.raises(TransferError, match=rf"s3://{bucket}-missing/in/ list"):
        missing.list_files("*.csv")
    local = tmp_path / "x.csv"
    local.write_text("a\n")
    with pytest.raises(TransferError, match=rf"s3://{bucket}-missing/in/x.csv upload"):
        missing.upload(local, "x.csv")

    conn = bucket_resource(s3_endpoint, bucket)
    target = tmp_path / "got" / "absent.csv"
    with pytest.raises(TransferError, match=rf"s3://{bucket}/absent.csv download"):
        conn.download("absent.csv", target)
    assert not target.exists()
    with pytest.raises(TransferError, match="inside the connection's base"):
        conn.upload(local, "../escape.csv")
    assert keys(s3, bucket) == []


ORDERS_20261120 = (
    "order_id;customer_id;qty;unit_price;order_ts\n"
    "O1;C1;2;10.50;2026-11-20 09:00:00\n"
    "O2;C2;1;$99.99;2026-11-20 10:30:00\n"
    "O3;C1;3;5;11/20/2026 12:15\n"
    "O4;C3;1,000;0.01;2026-11-20T23:59:59\n"
)
ORDERS_20261119 = "order_id;customer_id;qty;unit_price;order_ts\nO0;C9;1;1;2026-11-19 08:00:00\n"
EXPECTED_CSV = (
    "customer_id,order_count,revenue,last_order_at\n"
    "C1,2,36.0000,2026-11-20 12:15:00\n"
    "C2,1,99.9900,2026-11-20 10:30:00\n"
    "C3,1,10.0000,2026-11-20 23:59:59\n"
)

S3_WORKFLOW = """
workflow:
  name: s3_e2e
  timezone: UTC
  start_date: 2026-11-01
connections:
  lake:
    kind: s3
    bucket: {bucket}
    prefix: acme
    endpoint_url: {endpoint}
    region: us-east-1
    access_key_id: {{env: LAKE_KEY_ID}}
    secret_access_key: {{env: LAKE_SECRET}}
couriers:
  orders:
    from: lake
    path: "inbound/orders_{{{{ ds_nodash }}}}.csv.gz"
    format: {{type: csv, delimiter: ";"}}
domain_tables:
  orders:
    from: orders
    columns:
      order_id: {{tag: id, required: true, not_null: true}}
      customer_id: {{tag: id, required: true}}
      quantity: {{source: qty, tag: integer}}
      unit_price: {{tag: decimal}}
      ordered_at: {{source: order_ts, tag: datetime, formats: ["%Y-%m-%d %H:%M:%S",
                    "%m/%d/%Y %H:%M", "%Y-%m-%dT%H:%M:%S"]}}
queries:
  customer_totals:
    sql: |
      select customer_id, count(*) as order_count, sum(quantity * unit_price) as revenue,
             max(ordered_at) as last_order_at
      from domain.orders
      group by customer_id
      order by customer_id
activations:
  totals_file:
    query: customer_totals
    to: lake
    path: "outbound/{{{{ ds }}}}"
    file: {{type: csv, name: "totals_{{{{ ds_nodash }}}}.csv"}}
"""


def test_workflow_from_s3_to_s3(s3_endpoint: str, s3, bucket: str, stagecoach_env: Path,
                                monkeypatch: pytest.MonkeyPatch, workflow_runner):
    s3.put_object(Bucket=bucket, Key="acme/inbound/orders_20261120.csv.gz",
                  Body=gzip.compress(ORDERS_20261120.encode()))
    s3.put_object(Bucket=bucket, Key="acme/inbound/orders_20261119.csv.gz",
                  Body=gzip.compress(ORDERS_20261119.encode()))
    monkeypatch.setenv("LAKE_KEY_ID", "testing")
    monkeypatch.setenv("LAKE_SECRET", "testing")
    workflows = stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "s3_e2e.yaml").write_text(S3_WORKFLOW.format(bucket=bucket,
                                                               endpoint=s3_endpoint))

    run = workflow_runner(workflows, "s3_e2e", partition_key="2026-11-20")
    assert run.success, run.failures()

    assert run.metadata("courier", "orders_file")["file_count"] == 1
    assert run.metadata("domain", "orders")["dagster/row_count"] == 4
    meta = run.metadata("activation", "totals_file")
    key = "acme/outbound/2026-11-20/totals_20261120.csv"
    assert meta["destination"] == f"s3://{bucket}/{key}"
    assert meta["file_name"] == "totals_20261120.csv"
    assert meta["dagster/row_count"] == 3

    delivered = get(s3, bucket, key)
    assert md5(delivered) == meta["md5"]
    assert meta["size"] == len(delivered)
    assert delivered.decode() == EXPECTED_CSV
    assert [k for k in keys(s3, bucket) if "/outbound/" in k] == [key]


def test_workflow_with_unset_s3_secret_fails_naming_it(s3_endpoint: str, s3, bucket: str,
                                                       stagecoach_env: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       workflow_runner):
    monkeypatch.setenv("LAKE_KEY_ID", "testing")
    monkeypatch.delenv("LAKE_SECRET", raising=False)
    workflows = stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "s3_e2e.yaml").write_text(S3_WORKFLOW.format(bucket=bucket,
                                                               endpoint=s3_endpoint))

    # Dagster resolves the connection's config when the run starts, and names the variable.
    with pytest.raises(dg.DagsterInvalidConfigError,
                       match='environment variable "LAKE_SECRET" which is not set'):
        workflow_runner(workflows, "s3_e2e", partition_key="2026-11-20")
    assert keys(s3, bucket) == []


def test_multipart_upload_is_checked_against_its_md5(s3_endpoint: str, s3, bucket: str,
                                                    tmp_path: Path):
    """Over the 16 MiB part size the ETag is the md5 of the parts' md5s: still checked."""
    payload = os.urandom(20 * 1024 * 1024 + 5)
    local = tmp_path / "big.bin"
    local.write_bytes(payload)
    conn = bucket_resource(s3_endpoint, bucket)

    assert conn.upload(local, "big.bin", md5=md5(payload)) == len(payload)
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ETag"].strip('"').endswith("-2")
    assert md5(get(s3, bucket, "big.bin")) == md5(payload)

    # A file that changed after its md5 was taken: the bad object does not stay.
    local.write_bytes(payload[:-1] + b"!")
    with pytest.raises(TransferError, match=r"ETag \S+ does not match"):
        conn.upload(local, "other.bin", md5=md5(payload))
    assert keys(s3, bucket) == ["big.bin"]
