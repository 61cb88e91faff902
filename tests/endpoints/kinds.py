"""Endpoint fixtures for the folder, SFTP and S3 kinds (FTP and SMB live beside their servers)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from resources.connections.folder import FolderResource
from resources.connections.s3 import S3BucketResource
from resources.connections.sftp import SftpResource
from tests.endpoints import Endpoint


def local_endpoint_parts(base: Path):
    """read / listing / put for a folder this machine can see (folder kind, local servers)."""

    def read(path: str) -> bytes:
        return (base / path).read_bytes()

    def listing(folder: str) -> dict[str, int]:
        where = base / folder
        if not where.is_dir():
            return {}
        return {p.name: p.stat().st_size for p in where.iterdir() if p.is_file()}

    def put(path: str, data: bytes) -> None:
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(data)

    return read, listing, put


def outside_of(base: Path, root: Path) -> Callable[[], dict[str, int]]:
    """Every file and folder under `root` (the server's whole tree) that is not under `base`."""

    def outside() -> dict[str, int]:
        found = {}
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            if here == base:
                dirs.clear()
                continue
            for name in files + [d for d in dirs if here / d != base]:
                path = here / name
                found[str(path.relative_to(root))] = path.lstat().st_size if name in files else -1
        return found

    return outside


@pytest.fixture
def folder_files(tmp_path: Path) -> Endpoint:
    base = tmp_path / "destination"
    base.mkdir()
    settings = {"path": str(base)}
    return Endpoint("folder", FolderResource(**settings), *local_endpoint_parts(base),
                    bad_login=None,
                    rebuild=("resources.connections.folder:FolderResource", settings),
                    outside=outside_of(base, tmp_path))


@pytest.fixture
def sftp_files(sshd) -> Endpoint:
    """The server's folder is read directly: the file system, not paramiko, is the witness."""
    base = sshd.root / f"conformance-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    settings = {"host": sshd.host, "port": sshd.port, "username": sshd.username,
                "private_key_path": str(sshd.private_key_path),
                "known_hosts": str(sshd.known_hosts_path), "base_path": str(base),
                "timeout_seconds": 10}
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    bad = SftpResource(**{**settings, "private_key_path": None, "password": wrong})
    return Endpoint("sftp", SftpResource(**settings), *local_endpoint_parts(base),
                    bad_login=bad, rebuild=("resources.connections.sftp:SftpResource", settings),
                    secret=wrong, outside=outside_of(base, sshd.root))


@pytest.fixture
def s3_files(s3_endpoint: str) -> Iterator[Endpoint]:
    """boto3 is the witness. moto accepts any credentials, so there is no login test."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket, prefix = f"conformance-{uuid.uuid4().hex[:12]}", "base"
    client.create_bucket(Bucket=bucket)
    settings = {"bucket": bucket, "prefix": prefix, "endpoint_url": s3_endpoint,
                "region_name": "us-east-1", "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing"}

    def read(path: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=f"{prefix}/{path}")["Body"].read()

    def listing(folder: str) -> dict[str, int]:
        start = f"{prefix}/{folder}/"
        page = client.list_objects_v2(Bucket=bucket, Prefix=start, Delimiter="/")
        return {o["Key"][len(start):]: o["Size"] for o in page.get("Contents", [])}

    def put(path: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path}", Body=data)

    def in_flight() -> bool:
        return bool(client.list_multipart_uploads(Bucket=bucket).get("Uploads"))

    def outside() -> dict[str, int]:
        """Keys of the bucket outside the prefix, and any other bucket (by name)."""
        keys = {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2")
                .paginate(Bucket=bucket) for o in page.get("Contents", [])
                if not o["Key"].startswith(f"{prefix}/")}
        return keys | {f"bucket:{b['Name']}": -1 for b in client.list_buckets()["Buckets"]
                       if b["Name"] != bucket}

    yield Endpoint("s3", S3BucketResource(**settings), read, listing, put, bad_login=None,
                   rebuild=("resources.connections.s3:S3BucketResource", settings),
                   reads_pipes=False,
                   in_flight=in_flight, outside=outside)
