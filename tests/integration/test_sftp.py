"""SftpResource and SFTP workflows against a real OpenSSH sshd on loopback.

What arrived on the server is checked with the independent OpenSSH `sftp` client (and, since
the server runs on this machine, by reading its folder directly).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import threading
import time
import traceback
from pathlib import Path

import psutil
import pytest

import resources.connections.sftp as sftp_module
from resources.connections.files import PARTIAL_SUFFIX, RemoteFile, TransferError
from resources.connections.sftp import SftpResource

pytestmark = pytest.mark.timeout(120)


def sftp_cli(sshd, commands: str, known_hosts: Path | None = None
             ) -> subprocess.CompletedProcess:
    """Run commands with the OpenSSH sftp client in batch mode (host key strictly checked)."""
    return subprocess.run(
        ["sftp", "-b", "-", "-i", str(sshd.private_key_path),
         "-o", f"UserKnownHostsFile={known_hosts or sshd.known_hosts_path}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-P", str(sshd.port), f"{sshd.username}@{sshd.host}"],
        input=commands, capture_output=True, text=True, timeout=60)


def sftp_ls(sshd, folder: Path) -> dict[str, int]:
    """File name → size, as `ls -l` in the OpenSSH sftp client shows them."""
    done = sftp_cli(sshd, f'ls -l "{folder}"\n')
    assert done.returncode == 0, done.stderr
    found = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[0].startswith("-"):
            found[Path(fields[-1]).name] = int(fields[4])
    return found


def sftp_get(sshd, remote: Path, local: Path) -> bytes:
    done = sftp_cli(sshd, f'get "{remote}" "{local}"\n')
    assert done.returncode == 0, done.stderr
    return local.read_bytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def remote_folder(sshd, request: pytest.FixtureRequest) -> Path:
    """This test's own folder on the server (the SFTP base path)."""
    folder = sshd.root / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    folder.mkdir()
    return folder


def sftp_resource(sshd, base: Path, **overrides) -> SftpResource:
    settings = {"host": sshd.host, "port": sshd.port, "username": sshd.username,
                "private_key_path": str(sshd.private_key_path),
                "known_hosts": str(sshd.known_hosts_path), "base_path": str(base),
                "timeout_seconds": 10, **overrides}
    return SftpResource(**settings)


def test_upload_list_download_round_trip(sshd, remote_folder: Path, tmp_path: Path):
    payload = os.urandom(300_000) + b"\nend\n"
    local = tmp_path / "data.bin"
    local.write_bytes(payload)
    conn = sftp_resource(sshd, remote_folder)

    assert conn.upload(local, "in/sub/data.bin") == len(payload)

    # The OpenSSH client sees the whole file under its final name, and nothing else.
    assert sftp_ls(sshd, remote_folder / "in" / "sub") == {"data.bin": len(payload)}
    assert sftp_get(sshd, remote_folder / "in/sub/data.bin", tmp_path / "cli.bin") == payload
    assert all_files(remote_folder) == ["in/sub/data.bin"]

    # A stray partial upload and a non-matching file are not listed.
    (remote_folder / "in/sub/other.txt").write_text("x")
    (remote_folder / "in/sub/data2.bin.abcd1234.partial").write_bytes(b"half")
    listed = conn.list_files("in/sub/*.bin")
    assert [(f.path, f.size) for f in listed] == [("in/sub/data.bin", len(payload))]
    assert isinstance(listed[0], RemoteFile) and listed[0].mtime
    assert conn.list_files("nowhere/*.bin") == []

    back = tmp_path / "back" / "data.bin"
    assert conn.download("in/sub/data.bin", back) == len(payload)
    assert back.read_bytes() == payload
    assert conn.describe("in/sub/data.bin") == (
        f"sftp://{sshd.username}@127.0.0.1:{sshd.port}/{remote_folder}/in/sub/data.bin")


def test_upload_overwrites_by_default(sshd, remote_folder: Path, tmp_path: Path):
    conn = sftp_resource(sshd, remote_folder)
    (tmp_path / "a.txt").write_text("first version, longer\n")
    (tmp_path / "b.txt").write_text("second\n")
    conn.upload(tmp_path / "a.txt", "out.txt")
    assert conn.upload(tmp_path / "b.txt", "out.txt") == len("second\n")
    assert (remote_folder / "out.txt").read_text() == "second\n"
    assert all_files(remote_folder) == ["out.txt"]


@pytest.mark.security
@pytest.mark.parametrize("known", ["other_key", "empty"])
def test_wrong_host_key_is_refused(sshd, remote_folder: Path, tmp_path: Path, known: str):
    (remote_folder / "secret.csv").write_text("a,b\n1,2\n")
    known_hosts = tmp_path / "known_hosts"
    if known == "other_key":
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / "impostor")], check=True, capture_output=True)
        kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    else:
        known_hosts.write_text("")
    conn = sftp_resource(sshd, remote_folder, known_hosts=str(known_hosts))
    local = tmp_path / "got" / "secret.csv"

    with pytest.raises(TransferError) as refused:
        conn.download("secret.csv", local)
    message = str(refused.value)
    assert "127.0.0.1" in message and str(sshd.port) in message and "download" in message
    assert not local.exists()
    with pytest.raises(TransferError, match=r"127\.0\.0\.1"):
        conn.list_files("*.csv")

    # The OpenSSH client with the same known_hosts refuses too: the key really is wrong.
    assert sftp_cli(sshd, "ls\n", known_hosts=known_hosts).returncode != 0


@pytest.mark.security
def test_missing_known_hosts_file_is_named(sshd, remote_folder: Path, tmp_path: Path):
    conn = sftp_resource(sshd, remote_folder, known_hosts=str(tmp_path / "nope"))
    with pytest.raises(TransferError, match="known_hosts"):
        conn.list_files("*")


def test_upload_without_overwrite_keeps_existing_file(sshd, remote_folder: Path,
                                                      tmp_path: Path):
    (remote_folder / "out").mkdir()
    (remote_folder / "out" / "report.csv").write_text("original\n")
    local = tmp_path / "report.csv"
    local.write_text("replacement that must not arrive\n")
    conn = sftp_resource(sshd, remote_folder)

    with pytest.raises(TransferError, match="exists and overwrite is off") as refused:
        conn.upload(local, "out/report.csv", overwrite=False)
    assert conn.describe("out/report.csv") in str(refused.value)
    assert (remote_folder / "out" / "report.csv").read_text() == "original\n"
    assert all_files(remote_folder) == ["out/report.csv"]

    # A new name is uploaded even with overwrite off.
    assert conn.upload(local, "out/new.csv", overwrite=False) == local.stat().st_size
    assert sftp_ls(sshd, remote_folder / "out") == {"report.csv": 9,
                                                     "new.csv": local.stat().st_size}


def _feed_fifo(fifo: Path, first: bytes, go_on: threading.Event, rest: bytes,
               errors: list[BaseException]) -> None:
    """Write `first` into the pipe, wait for `go_on`, then try to write `rest` and close."""
    try:
        with open(fifo, "wb") as pipe:
            pipe.write(first)
            pipe.flush()
            go_on.wait(30)
            try:
                pipe.write(rest)
                pipe.flush()
            except BrokenPipeError:
                pass  # the uploader stopped reading: that is the point
    except BrokenPipeError:
        pass
    except BaseException as failed:  # surfaced by the test
        errors.append(failed)


@pytest.mark.fault
def test_size_mismatch_leaves_no_file(sshd, remote_folder: Path, tmp_path: Path):
    """A local file still growing while it is uploaded (here a pipe the producer keeps
    writing) arrives with a size other than the one measured before: it is not delivered."""
    fifo = tmp_path / "growing.csv"
    os.mkfifo(fifo)
    go_on, errors = threading.Event(), []
    go_on.set()
    producer = threading.Thread(target=_feed_fifo, args=(
        fifo, b"a,b\n" * 25_000, go_on, b"c,d\n" * 25_000, errors), daemon=True)
    producer.start()
    conn = sftp_resource(sshd, remote_folder)

    with pytest.raises(TransferError, match=r"200000 of 0 bytes arrived"):
        conn.upload(fifo, "out/growing.csv")
    producer.join(10)
    assert not errors
    assert all_files(remote_folder) == []  # neither the final name nor the partial one
    assert sftp_ls(sshd, remote_folder / "out") == {}


@pytest.mark.fault
def test_interrupted_upload_leaves_no_final_file(sshd, remote_folder: Path, tmp_path: Path):
    """The server side of the connection dies mid-upload: the upload fails with a
    TransferError and the final name never appears (a `.partial` may stay, never listed)."""
    (remote_folder / "out").mkdir()
    fifo = tmp_path / "big.bin"
    os.mkfifo(fifo)
    go_on, errors = threading.Event(), []
    producer = threading.Thread(target=_feed_fifo, args=(
        fifo, os.urandom(2_000_000), go_on, os.urandom(4_000_000), errors), daemon=True)
    producer.start()
    conn = sftp_resource(sshd, remote_folder)
    outcome: list[BaseException | int] = []

    def upload() -> None:
        try:
            outcome.append(conn.upload(fifo, "out/big.bin"))
        except BaseException as failed:
            outcome.append(failed)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    try:
        # Wait until the first part is on the server under the temporary name.
        deadline = time.monotonic() + 30
        partial: list[Path] = []
        while time.monotonic() < deadline:
            partial = list((remote_folder / "out").glob(f"*{PARTIAL_SUFFIX}"))
            if partial and partial[0].stat().st_size >= 1_000_000:
                break
            time.sleep(0.02)
        assert partial, "the upload never started"
        assert not (remote_folder / "out" / "big.bin").exists()
        # Kill the server processes of this connection (the listening sshd lives on).
        sessions = psutil.Process(sshd.pid).children(recursive=True)
        assert sessions, "no sshd session process for the upload"
        for process in sessions:
            process.kill()
        psutil.wait_procs(sessions, timeout=10)
    finally:
        go_on.set()
    uploader.join(60)
    producer.join(10)
    assert not uploader.is_alive(), "the upload hangs after the server went away"

    assert len(outcome) == 1 and not errors
    # Whatever was raised, the final name never appeared and nothing half-written is listed.
    assert not (remote_folder / "out" / "big.bin").exists()
    assert [p.name.endswith(PARTIAL_SUFFIX) for p in (remote_folder / "out").iterdir()] in (
        [], [True])
    assert conn.list_files("out/*") == []  # the server still serves new connections
    assert "big.bin" not in sftp_ls(sshd, remote_folder / "out")
    failed = outcome[0]
    # paramiko raises EOFError when the transport is gone: it must come out as TransferError.
    assert isinstance(failed, TransferError), "expected TransferError, got:\n" + "".join(
        traceback.format_exception(failed))
    assert "upload" in str(failed) and "out/big.bin" in str(failed)



def test_fast_transfer_settings_against_openssh(sshd, remote_folder: Path):
    """What the pipelined transfers rely on, as OpenSSH's sshd negotiates it: AES-GCM, and
    requests of the size limits@openssh.com announces, filling whole SSH packets."""
    conn = sftp_resource(sshd, remote_folder)
    client, _ = conn._connect("probe")
    try:
        assert client.get_transport().local_cipher == "aes128-gcm@openssh.com"
        session = conn._session(client)
        assert "limits@openssh.com" in session.extensions
        assert sftp_module._request_sizes(session) == (261120, 261120)
        assert session.waiting == {}  # the limits request was answered and forgotten
        handle = b"\0\0\0\1"
        piece = session.channel.out_max_packet_size - 64  # what paramiko puts in one SSH packet
        for limit in (261120, 32768):
            size = sftp_module._write_size(limit, session.channel, handle)
            assert size <= limit and (size + 25 + len(handle)) % piece == 0
    finally:
        client.close()


def test_request_sizes_fall_back_without_the_limits_extension(sshd, remote_folder: Path):
    """A server that does not announce limits@openssh.com gets 32 KiB requests, which every
    server accepts (here OpenSSH's answer is dropped, as if it had not announced it)."""
    conn = sftp_resource(sshd, remote_folder)
    client, _ = conn._connect("probe")
    try:
        session = conn._session(client)
        del session.extensions["limits@openssh.com"]
        assert sftp_module._request_sizes(session) == (32768, 32768)
    finally:
        client.close()


def test_server_errors_on_the_transfer_channel_are_oserrors(sshd, remote_folder: Path):
    """The transfer's own SFTP channel raises what paramiko's SFTPClient raised for the same
    server answers, so the retry policy classifies them alike: a missing file is
    FileNotFoundError (permanent), a refused one PermissionError."""
    (remote_folder / "locked").mkdir(mode=0o500)
    conn = sftp_resource(sshd, remote_folder)
    client, _ = conn._connect("probe")
    try:
        session = conn._session(client)
        with pytest.raises(FileNotFoundError):
            session.open(str(remote_folder / "missing.bin"), sftp_module.SFTP_FLAG_READ)
        if os.geteuid() != 0:  # root writes anywhere
            with pytest.raises(PermissionError):
                session.open(str(remote_folder / "locked" / "x"), sftp_module.SFTP_FLAG_WRITE
                             | sftp_module.SFTP_FLAG_CREATE)
    finally:
        client.close()
    with pytest.raises(TransferError) as failed:
        conn.download("missing.bin", remote_folder / "local.bin")
    assert not conn.is_transient(failed.value)


@pytest.mark.parametrize("sizes", [(32768, 32768), (1000, 777)])
def test_pipelined_transfers_with_other_request_sizes(sshd, remote_folder: Path, tmp_path: Path,
                                                       monkeypatch, sizes: tuple[int, int]):
    """Servers without limits@openssh.com get 32 KiB requests; odd small sizes put far more
    requests in flight than the pipeline's depth. Every byte arrives in order either way."""
    monkeypatch.setattr(sftp_module, "_request_sizes", lambda sftp: sizes)
    payload = os.urandom(1_500_000) + b"tail"
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    conn = sftp_resource(sshd, remote_folder)

    assert conn.upload(local, "out/payload.bin") == len(payload)
    assert md5((remote_folder / "out" / "payload.bin").read_bytes()) == md5(payload)
    back = tmp_path / "back.bin"
    assert conn.download("out/payload.bin", back) == len(payload)
    assert md5(back.read_bytes()) == md5(payload)
    (remote_folder / "empty.bin").write_bytes(b"")
    assert conn.download("empty.bin", tmp_path / "empty.bin") == 0
    assert all_files(remote_folder) == ["empty.bin", "out/payload.bin"]


@pytest.mark.fault
def test_short_download_is_refused_and_removed(sshd, remote_folder: Path, tmp_path: Path,
                                               monkeypatch):
    """A download that ends short of the remote file's size (here: a transfer that stops
    half-way) raises a TransferError and leaves no local file, as paramiko's get() did."""
    (remote_folder / "whole.bin").write_bytes(os.urandom(600_000))
    real = sftp_module._read_pipelined

    def half(sftp, handle, target, limit):
        real(sftp, handle, target, limit)
        target.truncate(300_000)

    monkeypatch.setattr(sftp_module, "_read_pipelined", half)
    local = tmp_path / "got" / "whole.bin"
    with pytest.raises(TransferError, match=r"300000 of 600000 bytes arrived"):
        sftp_resource(sshd, remote_folder).download("whole.bin", local)
    assert not local.exists()

CUSTOMERS_20261120 = (
    "id,email,phone,first_name\n"
    "1, Ada@Example.COM ,(212) 555-0100, ada   lovelace\n"  # one case: re-cased (mixed is kept)
    "2,not-an-email,212.555.0101,grace\n"
    "3,linus@example.org,+44 20 7946 0958,LINUS\n"
    '4,"  Hopper@Navy.MIL","1-703-555-0199","grace  hopper"\n'
)
CUSTOMERS_20261119 = "id,email,phone,first_name\n9,old@example.com,2125550100,old\n"
EXPECTED_PSV = (
    "customer_id|email|phone|first_name\n"
    "1|ada@example.com|+12125550100|Ada Lovelace\n"
    "3|linus@example.org|+442079460958|Linus\n"
    "4|hopper@navy.mil|+17035550199|Grace Hopper\n"
)


def sftp_workflow_spec(sshd, base: Path) -> str:
    return f"""
workflow:
  name: sftp_e2e
  owners: [team:integration]
  timezone: UTC
  start_date: 2026-11-01
connections:
  vendor:
    kind: sftp
    host: 127.0.0.1
    port: {sshd.port}
    username: {sshd.username}
    private_key_path: {sshd.private_key_path}
    known_hosts: {sshd.known_hosts_path}
    base_path: {base}
    timeout_seconds: 10
couriers:
  customers:
    from: vendor
    path: "inbound/customers_{{{{ ds_nodash }}}}.csv"
domain_tables:
  customers:
    from: customers
    primary_key: [customer_id]
    columns:
      customer_id: {{source: id, tag: id, required: true, not_null: true}}
      email: {{tag: email, required: true}}
      phone: {{tag: phone, default_country_code: "1"}}
      first_name: {{tag: name}}
queries:
  reachable:
    sql: |
      select customer_id, email, phone, first_name
      from domain.customers
      where email is not null
      order by customer_id
    checks: {{min_rows: 1}}
activations:
  partner:
    query: reachable
    to: vendor
    path: "outbound/{{{{ ds }}}}"
    file: {{type: psv, name: "partner_{{{{ ds_nodash }}}}.txt"}}
"""


def test_workflow_from_sftp_to_sftp(sshd, remote_folder: Path, stagecoach_env: Path,
                                    workflow_runner):
    inbound = remote_folder / "inbound"
    inbound.mkdir()
    (inbound / "customers_20261120.csv").write_text(CUSTOMERS_20261120)
    (inbound / "customers_20261119.csv").write_text(CUSTOMERS_20261119)
    workflows = stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "sftp_e2e.yaml").write_text(sftp_workflow_spec(sshd, remote_folder))

    run = workflow_runner(workflows, "sftp_e2e", partition_key="2026-11-20")
    assert run.success, run.failures()

    courier = run.metadata("courier", "customers_file")
    assert courier["file_count"] == 1 and courier["bytes"] == len(CUSTOMERS_20261120)
    assert run.metadata("domain", "customers")["dagster/row_count"] == 4
    assert run.metadata("query", "reachable")["dagster/row_count"] == 3

    meta = run.metadata("activation", "partner")
    remote = remote_folder / "outbound" / "2026-11-20" / "partner_20261120.txt"
    assert meta["file_name"] == "partner_20261120.txt"
    assert meta["destination"] == (
        f"sftp://{sshd.username}@127.0.0.1:{sshd.port}/{remote}")
    assert meta["dagster/row_count"] == 3

    delivered = sftp_get(sshd, remote, stagecoach_env / "fetched.txt")
    assert delivered.decode() == EXPECTED_PSV
    assert md5(delivered) == meta["md5"] == md5(remote.read_bytes())
    assert meta["size"] == len(delivered)
    assert sftp_ls(sshd, remote.parent) == {"partner_20261120.txt": len(delivered)}
    assert not [f for f in all_files(remote_folder) if f.endswith(PARTIAL_SUFFIX)]


def test_workflow_fails_when_sftp_file_is_missing(sshd, remote_folder: Path,
                                                  stagecoach_env: Path, workflow_runner):
    workflows = stagecoach_env / "workflows"
    workflows.mkdir()
    (workflows / "sftp_e2e.yaml").write_text(sftp_workflow_spec(sshd, remote_folder))

    run = workflow_runner(workflows, "sftp_e2e", partition_key="2026-11-21")
    assert not run.success
    failures = run.failures()
    assert "no file matches" in failures and "customers_20261121.csv" in failures
    assert not (remote_folder / "outbound").exists()


def test_password_authentication(sshd, sftp_password_account) -> None:
    account = sftp_password_account
    conn = SftpResource(host=sshd.host, port=sshd.port, username=account.username,
                        password=account.password, known_hosts=str(sshd.known_hosts_path),
                        base_path=str(account.folder))
    local = account.folder.parent / f"{account.username}-local.txt"
    local.write_text("id\n1\n")
    try:
        assert conn.upload(local, "in/one.csv") == local.stat().st_size
        assert [f.path for f in conn.list_files("in/*.csv")] == ["in/one.csv"]
        assert (account.folder / "in" / "one.csv").read_text() == "id\n1\n"
    finally:
        local.unlink()
    wrong = conn.model_copy(update={"password": "not-the-password"})
    with pytest.raises(TransferError) as raised:
        wrong.list_files("in/*.csv")
    assert f"{account.username}@127.0.0.1:{sshd.port} list" in str(raised.value)
    assert "not-the-password" not in str(raised.value)


@pytest.mark.fault
def test_a_server_that_stops_answering_mid_download_fails_the_attempt(sshd, remote_folder: Path,
                                                                      tmp_path: Path):
    """The server's session processes are frozen (SIGSTOP) mid-download: the connection stays
    open but nothing more comes. The transfer's channel times out after `timeout_seconds` and
    the download fails with a transient TransferError instead of hanging."""
    (remote_folder / "big.bin").write_bytes(os.urandom(48 * 1024 * 1024))
    conn = sftp_resource(sshd, remote_folder, timeout_seconds=2, retries=0)
    local = tmp_path / "big.bin"
    outcome: list[BaseException | int] = []

    def download() -> None:
        try:
            outcome.append(conn.download("big.bin", local))
        except BaseException as failed:
            outcome.append(failed)

    downloader = threading.Thread(target=download, daemon=True)
    downloader.start()
    frozen: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (local.exists()
                                                   and local.stat().st_size > 1_000_000):
            time.sleep(0.01)
        assert local.exists(), "the download never started"
        frozen = psutil.Process(sshd.pid).children(recursive=True)
        assert frozen, "no sshd session process for the download"
        for process in frozen:
            process.suspend()
        downloader.join(60)
        assert not downloader.is_alive(), "the download hangs on a server that stopped answering"
    finally:
        for process in frozen:
            with contextlib.suppress(psutil.Error):
                process.resume()
    downloader.join(10)
    if outcome and isinstance(outcome[0], int):
        pytest.skip("the whole file arrived before the server was frozen")
    failed = outcome[0]
    assert isinstance(failed, TransferError), "".join(traceback.format_exception(failed))
    assert conn.is_transient(failed), str(failed)
    assert not local.exists()  # nothing half-written is left behind
