"""The conformance suite: the same tests run against every file-connection kind.

Each kind provides an `Endpoint` fixture named `<kind>_files` (see tests/endpoints); adding a
kind to KINDS runs the whole suite on it (meltano's generated connector suites do the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from resources.connections.files import TransferError, is_partial
from tests.endpoints import Endpoint

pytestmark = pytest.mark.timeout(120)

KINDS = ["folder", "sftp", "s3", "smb", "ftp", "ftps"]


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    return request.getfixturevalue(f"{request.param}_files")


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_upload_then_list_and_download(endpoint: Endpoint, tmp_path: Path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "out.bin"
    local.write_bytes(payload)
    conn = endpoint.connection

    assert conn.upload(local, "deep/er/out.bin", md5=md5(payload)) == len(payload)

    assert endpoint.read("deep/er/out.bin") == payload
    assert endpoint.listing("deep/er") == {"out.bin": len(payload)}  # no temporary name left
    [listed] = conn.list_files("deep/er/*.bin")
    assert (listed.path, listed.size) == ("deep/er/out.bin", len(payload))
    back = tmp_path / "back.bin"
    assert conn.download("deep/er/out.bin", back) == len(payload)
    assert back.read_bytes() == payload


def test_listing_filters_by_glob_and_hides_partials(endpoint: Endpoint):
    endpoint.put("in/a_20261101.csv", b"a\n")
    endpoint.put("in/b_20261101.csv", b"bb\n")
    endpoint.put("in/a_20261101.txt", b"other\n")
    endpoint.put("in/.a_20261102.csv.0123abcd.partial", b"half")
    endpoint.put("in/sub/a_20261103.csv", b"nested\n")

    found = endpoint.connection.list_files("in/*_20261101.csv")
    assert [(f.path, f.size) for f in found] == [("in/a_20261101.csv", 2),
                                                ("in/b_20261101.csv", 3)]
    assert [f.path for f in endpoint.connection.list_files("in/*.csv")] == [
        "in/a_20261101.csv", "in/b_20261101.csv"]  # not the partial, not the subfolder
    assert endpoint.connection.list_files("absent/*.csv") == []


def test_overwrite_off_keeps_the_existing_file(endpoint: Endpoint, tmp_path: Path):
    endpoint.put("out/report.csv", b"original\n")
    local = tmp_path / "report.csv"
    local.write_bytes(b"replacement\n")
    conn = endpoint.connection

    with pytest.raises(TransferError, match="exists and overwrite is off"):
        conn.upload(local, "out/report.csv", overwrite=False)
    assert endpoint.read("out/report.csv") == b"original\n"
    assert endpoint.listing("out") == {"report.csv": 9}

    assert conn.upload(local, "out/report.csv", overwrite=True) == 12
    assert endpoint.read("out/report.csv") == b"replacement\n"
    assert conn.upload(local, "out/new.csv", overwrite=False) == 12
    assert endpoint.listing("out") == {"report.csv": 12, "new.csv": 12}


@pytest.mark.fault
def test_a_retry_that_finds_its_own_delivery_succeeds(endpoint: Endpoint, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture):
    """The rename (or conditional PUT) went through but its reply was lost: the retry finds
    the final file. The same size (and md5, where the kind reads one) is the earlier attempt's
    delivery, not a clash; anything else is still refused."""
    payload = b"id,amount\n1,2.5\n"
    local = tmp_path / "report.csv"
    local.write_bytes(payload)
    endpoint.put("out/report.csv", payload)
    conn = endpoint.connection

    with pytest.raises(TransferError, match="exists and overwrite is off"):
        conn._upload_once(local, "out/report.csv", False, md5(payload), [], retried=False)
    with caplog.at_level("WARNING"):
        assert conn._upload_once(local, "out/report.csv", False, md5(payload), [],
                                 retried=True) == len(payload)
    assert "an earlier attempt delivered it" in caplog.text

    endpoint.put("out/longer.csv", payload + b"3,4\n")
    with pytest.raises(TransferError, match="exists and overwrite is off"):
        conn._upload_once(local, "out/longer.csv", False, md5(payload), [], retried=True)
    if conn.checks_md5:  # same size, other bytes
        endpoint.put("out/other.csv", payload.replace(b"2.5", b"9.9"))
        with pytest.raises(TransferError, match="exists and overwrite is off"):
            conn._upload_once(local, "out/other.csv", False, md5(payload), [], retried=True)
    assert endpoint.read("out/longer.csv") == payload + b"3,4\n"


@pytest.mark.fault
def test_wrong_md5_is_not_delivered(endpoint: Endpoint, tmp_path: Path):
    if not endpoint.connection.checks_md5:
        pytest.skip(f"{endpoint.kind} cannot read a checksum back; the size is checked")
    local = tmp_path / "x.csv"
    local.write_bytes(b"1,2\n")
    with pytest.raises(TransferError, match=r"md5|ETag"):
        endpoint.connection.upload(local, "out/x.csv", md5="0" * 32)
    assert "x.csv" not in endpoint.listing("out")  # S3: the object is removed again


def test_missing_file_download_names_it(endpoint: Endpoint, tmp_path: Path):
    with pytest.raises(TransferError, match=r"nothing\.csv.*download"):
        endpoint.connection.download("in/nothing.csv", tmp_path / "nothing.csv")
    assert not (tmp_path / "nothing.csv").exists()


@pytest.mark.security
def test_paths_cannot_leave_the_base(endpoint: Endpoint, tmp_path: Path):
    local = tmp_path / "x.csv"
    local.write_bytes(b"x\n")
    for bad in ("../x.csv", "/etc/x.csv", "a/../../x.csv", "a\\x.csv", "a\x00.csv"):
        with pytest.raises(TransferError, match="must stay inside"):
            endpoint.connection.upload(local, bad)
        with pytest.raises(TransferError, match="must stay inside"):
            endpoint.connection.list_files(bad)


@pytest.mark.security
def test_bad_login_names_connection_and_hides_secret(endpoint: Endpoint, tmp_path: Path):
    if endpoint.bad_login is None:
        pytest.skip(f"{endpoint.kind} has no login")
    local = tmp_path / "x.csv"
    local.write_bytes(b"x\n")
    for attempt in (lambda c: c.list_files("in/*"), lambda c: c.upload(local, "out/x.csv")):
        with pytest.raises(TransferError) as failed:
            attempt(endpoint.bad_login)
        message = str(failed.value)
        assert endpoint.kind in message.lower() or "://" in message
        if endpoint.secret:
            assert endpoint.secret not in message


CHILD = """
import importlib, json, sys
from pathlib import Path
module, cls = sys.argv[1].split(":")
conn = getattr(importlib.import_module(module), cls)(**json.loads(sys.argv[2]))
conn.upload(Path(sys.argv[3]), sys.argv[4])
"""


@pytest.mark.fault
def test_killed_upload_leaves_no_final_name(endpoint: Endpoint, tmp_path: Path):
    """The uploading process dies mid-transfer (kill -9): the final name never appears.

    The local file is a pipe the test feeds 4 MiB and then stalls, so the upload is surely in
    flight when the process is killed (S3's uploader needs a real file: a 96 MiB one, killed
    once its multipart upload has begun).
    """
    source = tmp_path / "big.bin"
    stalled = threading.Event()
    if endpoint.reads_pipes:
        os.mkfifo(source)
        threading.Thread(target=_feed_and_stall, args=(source, stalled), daemon=True).start()
    else:
        with open(source, "wb") as big:
            for _ in range(96):
                big.write(os.urandom(1024 * 1024))
        stalled.set()
    in_flight = endpoint.in_flight or (
        lambda: any(is_partial(n) for n in _safe_listing(endpoint, "out")))
    target, settings = endpoint.rebuild
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, target, json.dumps(settings), str(source), "out/big.bin"],
        cwd=Path(__file__).parents[2], stderr=subprocess.PIPE)
    try:
        assert stalled.wait(30), "the upload never read its input"
        deadline = time.monotonic() + 90  # the child imports Dagster first: slow on a busy machine
        while time.monotonic() < deadline and not in_flight() and child.poll() is None:
            time.sleep(0.02)
        assert in_flight(), "the upload never reached the server"
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
    finally:
        child.kill()
        child.wait(30)
    assert "big.bin" not in _safe_listing(endpoint, "out")
    assert endpoint.connection.list_files("out/*") == []


def _feed_and_stall(fifo: Path, stalled: threading.Event) -> None:
    try:
        with open(fifo, "wb") as pipe:
            pipe.write(os.urandom(4 * 1024 * 1024))
            pipe.flush()
            stalled.set()
            time.sleep(60)  # never closed normally: the reader is killed first
    except BrokenPipeError:
        stalled.set()


def _safe_listing(endpoint: Endpoint, folder: str) -> dict[str, int]:
    try:
        return endpoint.listing(folder)
    except FileNotFoundError:
        return {}
