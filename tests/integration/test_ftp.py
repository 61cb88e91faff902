"""What the conformance suite does not cover for FtpResource, against pyftpdlib on loopback.

Certificate checks (chain and host name) before the password is sent, encrypted data channels,
one MLSD per listing, the LIST fallback, active mode, cleanup after a refused rename, error
messages, and flat memory. The server's folder on disk is the witness.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from resources.connections.files import TransferError
from resources.connections.ftp import FtpResource, _parse_list_line
from tests.endpoints import Endpoint
from tests.endpoints.ftp import FtpServer, self_signed_certificate, serve_ftp

pytestmark = pytest.mark.timeout(120)


def since(log: list[str], mark: int) -> list[str]:
    return log[mark:]


@pytest.mark.security
def test_ftps_refuses_an_untrusted_certificate_before_the_password(ftps_server: FtpServer,
                                                                   tmp_path: Path):
    other_ca, _ = self_signed_certificate(tmp_path, "other")
    for ca_file in (str(other_ca), None):  # another CA, then the system store
        conn = FtpResource(**ftps_server.settings(ca_file=ca_file))
        mark = len(ftps_server.commands)
        with pytest.raises(TransferError) as failed:
            conn.list_files("*")
        message = str(failed.value)
        assert message.startswith(f"ftps stagecoach@127.0.0.1:{ftps_server.port} tls: ")
        assert "CERTIFICATE_VERIFY_FAILED" in message
        assert since(ftps_server.commands, mark) == ["AUTH"]  # no USER, no PASS
        assert ftps_server.password not in message


@pytest.mark.security
def test_ftps_checks_the_host_name(ftps_server: FtpServer):
    """The certificate names 127.0.0.1 only: the same server reached as localhost is refused."""
    conn = FtpResource(**ftps_server.settings(host="localhost"))
    with pytest.raises(TransferError, match=r"ftps stagecoach@localhost:\d+ tls: .*mismatch"):
        conn.list_files("*")


def test_ftps_without_verification_still_encrypts(ftps_server: FtpServer):
    conn = FtpResource(**ftps_server.settings(verify_tls=False, ca_file=None))
    assert conn.list_files("no-such-folder/*") == []


def test_ftps_data_channels_are_encrypted(ftps_files: Endpoint, ftps_server: FtpServer,
                                          tmp_path: Path):
    """AUTH TLS before USER, PROT P before any data channel, and every data channel is TLS."""
    payload = os.urandom(300_000)
    local = tmp_path / "secret.bin"
    local.write_bytes(payload)
    commands, channels = len(ftps_server.commands), len(ftps_server.data_channels)
    secured = len(ftps_server.secured_data)
    conn = ftps_files.connection

    assert conn.upload(local, "out/secret.bin") == len(payload)
    assert [f.path for f in conn.list_files("out/*.bin")] == ["out/secret.bin"]
    assert conn.download("out/secret.bin", tmp_path / "back.bin") == len(payload)

    assert ftps_files.read("out/secret.bin") == payload
    assert (tmp_path / "back.bin").read_bytes() == payload
    sent = since(ftps_server.commands, commands)
    assert sent.index("AUTH") < sent.index("USER") < sent.index("PROT") < sent.index("STOR")
    opened = since(ftps_server.data_channels, channels)
    assert opened == ["P", "P", "P"]  # STOR, MLSD, RETR
    assert len(since(ftps_server.secured_data, secured)) == len(opened)


def test_a_listing_of_1000_files_is_one_mlsd(ftp_files: Endpoint, ftp_server: FtpServer):
    for i in range(1000):
        ftp_files.put(f"many/f{i:04}.csv", b"x" * (i % 7))
    ftp_files.put("many/sub/nested.csv", b"n")
    mark = len(ftp_server.commands)

    found = ftp_files.connection.list_files("many/*.csv")

    assert [(f.path, f.size) for f in found] == [
        (f"many/f{i:04}.csv", i % 7) for i in range(1000)]
    assert all(f.mtime is not None for f in found)
    sent = since(ftp_server.commands, mark)
    assert sent.count("MLSD") == 1
    assert not {"LIST", "NLST", "MLST", "SIZE", "RETR", "CWD"} & set(sent)


def test_list_is_parsed_where_mlsd_is_missing(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    with serve_ftp(root, without=("MLSD", "MLST")) as server:
        (root / "in" / "sub").mkdir(parents=True)
        (root / "in" / "a b_1.csv").write_bytes(b"ab\n")
        (root / "in" / "c_1.csv").write_bytes(b"c\n")
        (root / "in" / ".c_2.csv.0123abcd.partial").write_bytes(b"half")
        (root / "in" / "sub" / "d_1.csv").write_bytes(b"nested\n")
        (root / "in" / "link.csv").symlink_to(root / "in" / "c_1.csv")
        conn = FtpResource(**server.settings())

        found = conn.list_files("in/*.csv")
        assert [(f.path, f.size) for f in found] == [("in/a b_1.csv", 3), ("in/c_1.csv", 2)]
        assert conn.list_files("absent/*.csv") == []
        assert conn.list_files("absent/deeper/*.csv") == []
        assert "LIST" in server.commands and "MLSD" in server.commands  # tried, then LIST


def test_active_mode(ftp_files: Endpoint, tmp_path: Path):
    conn = FtpResource(**{**ftp_files.rebuild[1], "passive": False})
    local = tmp_path / "x.csv"
    local.write_bytes(b"1,2\n" * 1000)
    assert conn.upload(local, "out/x.csv") == 4000
    assert [f.path for f in conn.list_files("out/*")] == ["out/x.csv"]
    assert conn.download("out/x.csv", tmp_path / "back.csv") == 4000
    assert ftp_files.read("out/x.csv") == local.read_bytes()


def test_a_refused_rename_leaves_nothing_behind(tmp_path: Path):
    """The account may store and delete but not rename: the partial file is deleted again."""
    root = tmp_path / "root"
    root.mkdir()
    local = tmp_path / "x.csv"
    local.write_bytes(b"x\n")
    with serve_ftp(root, perm="elradmw") as server, pytest.raises(TransferError) as failed:
        FtpResource(**server.settings()).upload(local, "out/x.csv")
    message = str(failed.value)
    assert message.startswith(f"ftp://stagecoach@127.0.0.1:{server.port}/out/x.csv upload: ")
    assert "550" in message and server.password not in message
    assert sorted(p.name for p in root.rglob("*")) == ["out"]  # folder made, no file left
    assert "DELE" in server.commands


def test_login_and_connect_failures_name_the_connection(ftp_server: FtpServer, tmp_path: Path):
    wrong = FtpResource(**ftp_server.settings(password="wrong-password"))
    with pytest.raises(TransferError, match=rf"^ftp stagecoach@127\.0\.0\.1:{ftp_server.port} "
                                            r"login: error_perm: 530"):
        wrong.download("x.csv", tmp_path / "x.csv")
    closed = FtpResource(**ftp_server.settings(port=1, timeout_seconds=2, retries=0))
    with pytest.raises(TransferError, match=r"^ftp stagecoach@127\.0\.0\.1:1 connect: "):
        closed.list_files("*")


def test_missing_base_folder_lists_nothing(ftp_server: FtpServer):
    conn = FtpResource(**ftp_server.settings(base_path="no-such/base"))
    assert conn.list_files("*.csv") == []
    assert conn.list_files("in/*.csv") == []


def test_memory_stays_flat(ftp_files: Endpoint, tmp_path: Path):
    """24 MiB up and down: Python allocations (client and in-process server) stay a few MiB."""
    local = tmp_path / "big.bin"
    with open(local, "wb") as big:
        for _ in range(24):
            big.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        assert ftp_files.connection.upload(local, "out/big.bin") == 24 << 20
        assert ftp_files.connection.download("out/big.bin", tmp_path / "back.bin") == 24 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()


@pytest.mark.parametrize(("line", "expected"), [
    ("-rw-r--r--   1 owner group     1234 Nov 01 12:00 a b.csv", ("a b.csv", "file", 1234)),
    ("drwxr-xr-x   2 owner group     4096 Nov 01  2025 sub", ("sub", "dir", 4096)),
    ("lrwxrwxrwx   1 owner group        5 Nov 01 12:00 l -> a.csv", ("l -> a.csv", "other", 5)),
    ("11-01-26  12:00PM                 1234 report.csv", ("report.csv", "file", 1234)),
    ("11-01-26  12:00PM       <DIR>          archive", ("archive", "dir", 0)),
])
def test_list_lines(line: str, expected: tuple[str, str, int]):
    entry = _parse_list_line(line)
    assert entry is not None and (entry.name, entry.kind, entry.size) == expected


def test_list_line_noise_is_skipped():
    assert _parse_list_line("total 12") is None
    assert _parse_list_line("") is None
