"""The fault matrix: every connection kind x {login, listing, download, upload (or a SQL read)}
x {the server comes back, the server stays down}, against real servers behind a FaultProxy.

A mid-stream cut is placed by measuring the operation once through the proxy, then cutting
after half (a listing: 70%) of the bytes flowing the operation's way: the connection is reset
in the middle of the data and connects are refused, until two attempts have failed (the server
restarted) or for good. The folder kind
has no server to lose; its mount errors (stale handle, I/O error) are classified in
tests/unit/test_connection_retry.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from resources.connections.files import TransferError, is_partial
from resources.connections.ftp import FtpResource
from resources.connections.s3 import S3BucketResource
from resources.connections.sftp import SftpResource
from resources.connections.smb import SmbResource
from resources.retries import step_may_retry
from resources.warehouse import WarehouseResource
from tests.endpoints import Endpoint
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.timeout(120), pytest.mark.fault]

NAME = "partner"  # the spec's connection name, which every error must carry
RETRIES, BACKOFF = 4, 0.1  # attempts at about 0, 0.1, 0.3, 0.7, 1.5 s
UP_AFTER = 2  # the server comes back once this many attempts have failed
FILE_KINDS = ["sftp", "ftp", "smb", "s3"]
OPERATIONS = {  # operation -> (word in the error, direction of the cut, fraction of the bytes)
    "login": ("list", None, None),
    "listing": ("list", "down", 0.7),
    "download": ("download", "down", 0.5),
    "upload": ("upload", "up", 0.5),
    "read": ("read", "down", 0.5),
}
CASES = [(k, op) for k in FILE_KINDS for op in ("login", "listing", "download", "upload")] + [
    ("sql", "login"), ("sql", "read")]
BIG = 4 * 1024 * 1024
LISTED = 200


@dataclass
class Site:
    """A server behind a proxy: `build` makes the connection through the proxy, `endpoint`
    (file kinds) reads the server's side directly."""

    kind: str
    proxy: FaultProxy
    build: Callable[[int, float], Any]
    endpoint: Endpoint | None = None
    url: str | None = None  # sql: the database, directly


def _proxied(request: pytest.FixtureRequest, kind: str) -> Iterator[Site]:
    if kind == "sql":
        direct = request.getfixturevalue("postgres_url")
        proxy = FaultProxy(5432)
        url = direct.replace(":5432/", f":{proxy.port}/")
        assert f":{proxy.port}/" in url, f"the SQL cases would bypass the proxy: {url}"
        yield Site(kind, proxy, lambda retries, backoff: WarehouseResource(
            url=url, connection_name=NAME, retries=retries, backoff_seconds=backoff), url=direct)
        proxy.close()
        return
    endpoint: Endpoint = request.getfixturevalue(f"{kind}_files")
    settings = dict(endpoint.rebuild[1], connection_name=NAME)
    if kind == "s3":
        proxy = FaultProxy(int(settings["endpoint_url"].rsplit(":", 1)[1]))
        settings |= {"endpoint_url": f"http://127.0.0.1:{proxy.port}"}
        cls: type = S3BucketResource
    else:
        proxy = FaultProxy(settings["port"], ftp=kind == "ftp")
        settings |= {"port": proxy.port, "timeout_seconds": 5}
        cls = {"sftp": SftpResource, "ftp": FtpResource, "smb": SmbResource}[kind]
    if kind == "sftp":  # known_hosts names the server's own port: pin the key instead
        sshd = request.getfixturevalue("sshd")
        settings.pop("known_hosts")
        settings["host_key"] = (sshd.config_dir / "hostkey.pub").read_text()
    yield Site(kind, proxy, lambda retries, backoff: cls(
        **settings, retries=retries, backoff_seconds=backoff), endpoint=endpoint)
    proxy.close()


@pytest.fixture
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    yield from _proxied(request, request.param)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _operation(site: Site, operation: str, tmp_path: Path
               ) -> tuple[Callable[[Any, str], Any], Callable[[Any], None], Callable[[], None]]:
    """(run(conn, name), check the result of a run that succeeded, check nothing is under a
    final name after a run that failed); the server is seeded here."""
    ep = site.endpoint
    if site.kind == "sql":
        query = "SELECT g AS id, repeat(md5(g::text), 6) AS pad FROM generate_series(1, 40000) g"
        out = tmp_path / "result"
        out.mkdir()

        def read(conn: Any, name: str) -> int:
            return conn.query_to_parquet(query, {}, out / f"{name}.parquet")

        def read_whole(rows: int) -> None:
            assert rows == 40000
            assert {p.name for p in out.iterdir()} - {"calibrate.parquet"} == {"main.parquet"}

        def nothing_read() -> None:
            assert sorted(p.name for p in out.iterdir() if p.name != "calibrate.parquet") == []
        return read, read_whole, nothing_read
    assert ep is not None
    if operation in ("login", "listing"):
        count = 1 if operation == "login" else LISTED
        for i in range(count):
            ep.put(f"in/file_{i:04d}_{'x' * 60}.csv", b"a,b\n1,2\n")

        def listing(conn: Any, name: str) -> list:
            return conn.list_files("in/*.csv")

        def all_listed(found: list) -> None:
            assert len(found) == count and {f.size for f in found} == {8}
        return listing, all_listed, lambda: None
    if operation == "download":
        payload = os.urandom(BIG)
        ep.put("in/big.bin", payload)

        def download(conn: Any, name: str) -> int:
            return conn.download("in/big.bin", tmp_path / name / "big.bin")

        def downloaded(size: int) -> None:
            assert size == BIG and (tmp_path / "main" / "big.bin").read_bytes() == payload

        def no_local_file() -> None:
            assert not (tmp_path / "main" / "big.bin").exists()
        return download, downloaded, no_local_file
    payload = os.urandom(BIG)
    local = tmp_path / "big.bin"
    local.write_bytes(payload)

    def upload(conn: Any, name: str) -> int:
        return conn.upload(local, f"{name}/big.bin", md5=_md5(payload))

    def uploaded(size: int) -> None:
        assert size == BIG and ep.read("main/big.bin") == payload
        assert ep.listing("main") == {"big.bin": BIG}  # the cut attempt's partial is gone too

    def no_final_name() -> None:
        left = _listing(ep, "main")
        assert "big.bin" not in left
        assert all(is_partial(n) for n in left), left  # at most a hidden temporary name
    return upload, uploaded, no_final_name


def _listing(ep: Endpoint, folder: str) -> dict[str, int]:
    try:
        return ep.listing(folder)
    except (FileNotFoundError, KeyError):
        return {}


@contextmanager
def restart_after_failed_attempts(proxy: FaultProxy, failed: int) -> Iterator[None]:
    """The server comes back when the retry log says `failed` attempts failed: so many failures
    whatever the machine's speed, then success."""

    class Restart(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if f": attempt {failed} of " in record.getMessage():
                proxy.up()

    logger = logging.getLogger("dagster.builtin.stagecoach.connections")
    handler = Restart()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("back", [True, False], ids=["server_back", "server_stays_down"])
@pytest.mark.parametrize(("site", "operation"), CASES, indirect=["site"],
                         ids=[f"{k}-{op}" for k, op in CASES])
def test_fault_matrix(site: Site, operation: str, back: bool, tmp_path: Path,
                      caplog: pytest.LogCaptureFixture):
    """(a) a transient fault, then the server back: the operation succeeds; (b) the server
    stays down: a TransferError naming the connection, the operation and the attempts, and
    nothing under a final name."""
    run, succeeded, nothing_final = _operation(site, operation, tmp_path)
    word, direction, fraction = OPERATIONS[operation]
    word = "read" if site.kind == "sql" else word
    proxy = site.proxy
    if direction is None:  # login: the server is down when the connection is made
        proxy.down()
    else:
        proxy.reset_counts()
        run(site.build(0, 0), "calibrate")
        total = proxy.counted[direction]
        assert total > (BIG // 2 if operation in ("download", "upload") else 4096), total
        proxy.cut_after(direction, int(total * fraction), down_for=None)
    conn = site.build(RETRIES, BACKOFF)
    if back:
        with restart_after_failed_attempts(proxy, UP_AFTER):
            succeeded(run(conn, "main"))
        assert proxy.cuts == (0 if direction is None else 1)
        assert f"connection `{NAME}` {word}: attempt {UP_AFTER} of {RETRIES + 1} failed" in \
            caplog.text
        return
    with pytest.raises(TransferError) as failed:
        run(conn, "main")
    message = str(failed.value)
    made = "up to " if site.kind == "s3" else ""  # botocore's own retries: docs/retries.md
    assert f"connection `{NAME}` {word} failed after {made}{RETRIES + 1} attempts" in message
    assert not step_may_retry(failed.value)  # the step's RetryPolicy does not multiply them
    nothing_final()
    if site.endpoint and site.endpoint.secret:
        assert site.endpoint.secret not in message


def test_sql_source_read_survives_a_terminated_backend(postgres_url: str, tmp_path: Path):
    """PostgreSQL itself ends the reading session (pg_terminate_backend) mid-read: the read
    starts over on a new connection and the file holds each row once."""
    marker = f"fault_reader_{os.getpid()}"
    conn = WarehouseResource(url=f"{postgres_url}?application_name={marker}",
                             connection_name=NAME, retries=3, backoff_seconds=0.1)
    query = ("SELECT g AS id, pg_sleep(CASE WHEN g % 1000 = 0 THEN 0.1 ELSE 0 END) IS NULL "
             "AS slept FROM generate_series(1, 20000) g")
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    killed: list[int] = []
    stop = threading.Event()

    def terminate() -> None:
        with admin.connect() as c:
            while not killed and not stop.wait(0.02):
                for (pid,) in c.execute(sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = :m "
                        "AND state = 'active'"), {"m": marker}):
                    c.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    killed.append(pid)
    killer = threading.Thread(target=terminate, daemon=True)
    killer.start()
    try:
        rows = conn.query_to_parquet(query, {}, tmp_path / "out.parquet")
    finally:
        stop.set()
        killer.join(10)
        admin.dispose()
    ids = pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()
    assert killed, "no reading backend was terminated"
    assert rows == 20000 and sorted(ids) == list(range(1, 20001))
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_permanent_errors_are_not_retried(ftp_files: Endpoint):
    """A refused login is not a transient fault: one attempt, and the message says which
    connection and what it was doing (never the password)."""
    settings = dict(ftp_files.rebuild[1], connection_name=NAME, password="wrong-password-x",
                    retries=5, backoff_seconds=30)  # a retry would time the test out
    with pytest.raises(TransferError) as failed:
        FtpResource(**settings).list_files("in/*.csv")
    message = str(failed.value)
    assert message.startswith(f"connection `{NAME}` list: ") and "530" in message
    assert "wrong-password-x" not in message and "attempts" not in message


@pytest.mark.parametrize("site", ["s3"], indirect=True)
def test_a_lost_reply_to_a_conditional_put_is_a_delivery(site: Site, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture):
    """With overwrite off, the PUT is stored but its reply is cut: the retry meets its own
    object (412) and, as it has the file's size and ETag, takes it as delivered."""
    payload = os.urandom(64 * 1024)
    local = tmp_path / "report.bin"
    local.write_bytes(payload)
    assert site.endpoint is not None
    conn = site.build(RETRIES, BACKOFF)
    site.proxy.reset_counts()  # measure the replies to one conditional PUT (100 Continue, 200)
    conn.upload(local, "calibrate/report.bin", overwrite=False)  # a PUT, then a HEAD
    both = site.proxy.counted["down"]
    site.proxy.reset_counts()
    conn.get_client().head_object(Bucket=conn.bucket, Key=conn._key("calibrate/report.bin"))
    put_reply = both - site.proxy.counted["down"]
    assert put_reply > 40, (both, put_reply)
    cut = put_reply - 10  # inside the PUT's final reply: stored, but the client never hears
    site.proxy.cut_after("down", cut, down_for=None)
    with restart_after_failed_attempts(site.proxy, 1):
        assert conn.upload(local, "out/report.bin", overwrite=False,
                           md5=_md5(payload)) == len(payload)
    assert site.proxy.cuts == 1
    assert "an earlier attempt delivered it and lost the reply" in caplog.text
    assert site.endpoint.read("out/report.bin") == payload

    other = tmp_path / "other.bin"  # another file of the same size is still refused
    other.write_bytes(os.urandom(len(payload)))
    site.proxy.cut_after("down", cut, down_for=None)
    with restart_after_failed_attempts(site.proxy, 1), pytest.raises(
            TransferError, match="exists and overwrite is off"):
        conn.upload(other, "out/report.bin", overwrite=False, md5=_md5(other.read_bytes()))
    assert site.endpoint.read("out/report.bin") == payload


# ---------------------------------------------------------------- one retry layer, counted
# docs/retries.md states the worst case per kind: `retries + 1` attempts at the server, none of
# them multiplied by the step's RetryPolicy. The proxy stands in for the server here: it takes
# each connection, counts it and drops it (hang_up), so every attempt the client makes shows.
LAYER_RETRIES, LAYER_BACKOFF = 2, 0.05


@pytest.mark.parametrize("site", [*FILE_KINDS, "sql"], indirect=True)
def test_each_attempt_reaches_the_server_once(site: Site, tmp_path: Path):
    site.proxy.hang_up()
    site.proxy.reset_counts()
    conn = site.build(LAYER_RETRIES, LAYER_BACKOFF)
    with pytest.raises(TransferError) as failed:
        if site.kind == "sql":
            conn.query_to_parquet("SELECT 1 AS id", {}, tmp_path / "out.parquet")
        else:
            conn.list_files("in/*.csv")
    assert site.proxy.connections == LAYER_RETRIES + 1, str(failed.value)
    assert not step_may_retry(failed.value)


def test_a_courier_step_makes_the_connection_attempts_once(sshd, stagecoach_env: Path,
                                                           workflow_runner):
    """The courier's connection retries twice (3 attempts at the server) and its step, whose
    RetryPolicy allows 2 more tries, is not run again: 3 attempts, not 3 x 3."""
    from tests.faults.test_permanent_refusals import host_key, people_workflow, step_attempts

    proxy = FaultProxy(sshd.port)
    try:
        proxy.hang_up()
        connection = (f"{{kind: sftp, host: 127.0.0.1, port: {proxy.port}, username: "
                      f"{sshd.username}, private_key_path: '{sshd.private_key_path}', "
                      f"host_key: '{host_key(sshd)}', base_path: '{sshd.root}', "
                      f"timeout_seconds: 5, retries: {LAYER_RETRIES}, "
                      f"backoff_seconds: {LAYER_BACKOFF}}}")
        run = workflow_runner(people_workflow(stagecoach_env, connection, "path: '*.csv'"),
                              "refusals")
    finally:
        proxy.close()
    assert not run.success
    assert step_attempts(run, "courier__people_file") == 1
    assert proxy.connections == LAYER_RETRIES + 1
    assert f"failed after {LAYER_RETRIES + 1} attempts" in run.failures()
    assert "the connection's own retries were spent" in run.failures()
