"""SmbResource against a real Samba smbd on loopback: what the conformance suite cannot show.

smbclient pools connections and sessions process-wide; these tests pin that a resource never
borrows another one's session, that encryption is really negotiated when asked for, and that a
stopped or silent server fails quickly with the connection named.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import smbclient

from resources.connections.files import TransferError
from resources.connections.smb import SmbResource
from tests.endpoints.smb import SmbServer, fresh_base, smb_settings

pytestmark = pytest.mark.timeout(120)


def test_a_pooled_good_session_never_serves_a_wrong_password(smbd: SmbServer, tmp_path: Path):
    """Same host, port and user: smbclient alone would reuse the good session for the bad one."""
    settings = smb_settings(smbd, fresh_base(smbd))
    good = SmbResource(**settings)
    wrong = "not-the-password-" + "x" * 6
    bad = SmbResource(**{**settings, "password": wrong})
    local = tmp_path / "a.csv"
    local.write_bytes(b"a\n")

    assert good.upload(local, "in/a.csv") == 2
    # Other code in the process logged on through smbclient's global pool, as its docs suggest.
    smbclient.register_session(smbd.host, username=smbd.username, password=smbd.password,
                               port=smbd.port)
    try:
        with pytest.raises(TransferError, match="LogonFailure") as failed:
            bad.list_files("in/*.csv")
        assert f"smb://{smbd.username}@{smbd.host}:{smbd.port}/data/" in str(failed.value)
        assert " list: " in str(failed.value)
        assert wrong not in str(failed.value) and smbd.password not in str(failed.value)
        with pytest.raises(TransferError, match="LogonFailure"):
            bad.upload(local, "in/b.csv")
        assert [f.path for f in good.list_files("in/*.csv")] == ["in/a.csv"]  # not poisoned
    finally:
        smbclient.delete_session(smbd.host, port=smbd.port)


def test_encrypt_negotiates_smb3_encryption(smbd: SmbServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    """Samba 4.17 with `server min protocol = SMB2` still negotiates SMB 3.1.1 and encrypts."""
    sessions: list[Any] = []
    register = smbclient.register_session

    def spy(*args: Any, **kwargs: Any) -> Any:
        sessions.append(register(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(smbclient, "register_session", spy)
    settings = smb_settings(smbd, fresh_base(smbd))
    sealed = SmbResource(**settings, encrypt=True)
    payload = b"secret,1\n" * 100_000
    local = tmp_path / "x.csv"
    local.write_bytes(payload)

    assert sealed.upload(local, "out/x.csv", overwrite=False) == len(payload)
    assert [(f.path, f.size) for f in sealed.list_files("out/*.csv")] == [
        ("out/x.csv", len(payload))]
    assert sealed.download("out/x.csv", tmp_path / "back.csv") == len(payload)
    assert (tmp_path / "back.csv").read_bytes() == payload
    assert (smbd.root / settings["base_path"] / "out" / "x.csv").read_bytes() == payload
    assert len(sessions) == 3
    assert all(s.encrypt_data and s.connection.dialect >= 0x300 for s in sessions)

    sessions.clear()
    SmbResource(**settings).list_files("out/*.csv")
    assert [s.encrypt_data for s in sessions] == [False]  # the server does not force it


def _workers(port: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"msg_worker-127.0.0.1:{port}"]


def test_a_stopped_server_fails_at_once_naming_the_connection(smbd: SmbServer, tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on: what a stopped smbd leaves
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stopped = SmbResource(**{**smb_settings(smbd, "base"), "port": port, "retries": 0})
    started = time.monotonic()
    with pytest.raises(TransferError) as failed:
        stopped.list_files("in/*.csv")
    assert time.monotonic() - started < 5
    message = str(failed.value)
    assert message.startswith(f"smb://{smbd.username}@127.0.0.1:{port}/data/base/in list: ")
    assert "Connection refused" in message and smbd.password not in message


def test_a_silent_server_fails_within_the_timeout(tmp_path: Path):
    """The socket accepts but never answers: negotiation gives up after timeout_seconds."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        resource = SmbResource(host="127.0.0.1", port=port, share="data", username="u",
                               password="not-shown-anywhere", timeout_seconds=2)
        local = tmp_path / "x.csv"
        local.write_bytes(b"x\n")
        started = time.monotonic()
        with pytest.raises(TransferError) as failed:
            resource.upload(local, "out/x.csv")
        elapsed = time.monotonic() - started
    # smbprotocol rounds what is left of the timeout down to whole seconds (at least 1)
    assert 0.9 < elapsed < 2 + 5, elapsed
    message = str(failed.value)
    assert message.startswith(f"smb://u@127.0.0.1:{port}/data/out/x.csv upload: ")
    assert "timeout" in message.lower() and "not-shown-anywhere" not in message
    assert _workers(port) == []  # the half-made connection was closed, not left to leak


def test_no_clobber_rename_wins_a_race_and_leaves_no_partial(
        smbd: SmbServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Another writer creates the file after the existence check: the rename itself refuses."""
    name = fresh_base(smbd)
    resource = SmbResource(**smb_settings(smbd, name))
    local = tmp_path / "r.csv"
    local.write_bytes(b"late\n")
    assert resource.upload(local, "out/r.csv") == 5
    monkeypatch.setattr("resources.connections.smb._exists", lambda path, kwargs: False)
    local.write_bytes(b"replacement\n")

    with pytest.raises(TransferError, match="exists and overwrite is off"):
        resource.upload(local, "out/r.csv", overwrite=False)
    out = smbd.root / name / "out"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"r.csv": b"late\n"}
