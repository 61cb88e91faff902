"""A real server killed mid-download, not a proxy: a private sshd (master and session processes)
is SIGKILLed while a 32 MiB file streams, then started again on the same port, or left dead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.connections.files import TransferError
from resources.connections.sftp import SftpResource
from tests.conftest import SSHD, free_port, wait_for_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.fault]

SIZE = 32 * 1024 * 1024


class KillableSshd:
    """sshd in its own process group (its session processes too), always on one port."""

    def __init__(self, sshd, folder: Path):
        self.port = free_port()
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {sshd.config_dir / 'hostkey'}\n"
            f"AuthorizedKeysFile {sshd.config_dir / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            f"PidFile {folder / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([SSHD, "-f", str(self.config), "-D", "-e"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_for_port(self.port, self.process), "sshd did not start"

    def kill(self) -> None:
        """SIGKILL the master and every session process under it (each session calls setsid,
        so a process group would miss them)."""
        assert self.process is not None
        for pid in [self.process.pid, *_descendants(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture
def killable(sshd, tmp_path: Path) -> Iterator[KillableSshd]:
    server = KillableSshd(sshd, tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


@pytest.mark.parametrize("restarted", [True, False], ids=["restarted", "stays_dead"])
def test_sshd_killed_mid_download(sshd, killable: KillableSshd, tmp_path: Path,
                                  restarted: bool, caplog: pytest.LogCaptureFixture):
    remote = sshd.root / f"killed-{tmp_path.name}"
    remote.mkdir()
    payload = os.urandom(SIZE)
    (remote / "big.bin").write_bytes(payload)
    conn = SftpResource(host="127.0.0.1", port=killable.port, username=sshd.username,
                        private_key_path=str(sshd.private_key_path),
                        host_key=(sshd.config_dir / "hostkey.pub").read_text(),
                        base_path=str(remote), timeout_seconds=5, connection_name="vendor",
                        retries=4, backoff_seconds=0.2)
    local = tmp_path / "in" / "big.bin"
    killed = threading.Event()

    def kill_mid_stream() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if local.exists() and local.stat().st_size > 2 * 1024 * 1024:
                killable.kill()
                killed.set()
                if restarted:
                    time.sleep(0.3)
                    killable.start()
                return
            time.sleep(0.001)
    killer = threading.Thread(target=kill_mid_stream, daemon=True)
    killer.start()
    try:
        if restarted:
            assert conn.download("big.bin", local) == SIZE
            assert local.read_bytes() == payload
        else:
            with pytest.raises(TransferError, match=r"^connection `vendor` download failed "
                                                    r"after 5 attempts"):
                conn.download("big.bin", local)
            assert not local.exists()  # no half file under the final name
    finally:
        killer.join(40)
    assert killed.is_set(), "the download finished before sshd could be killed"
    assert "connection `vendor` download: attempt 1 of 5 failed" in caplog.text
