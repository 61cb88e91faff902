"""A real Samba smbd on loopback, and the SMB endpoint of the conformance suite.

The share is a folder on this machine, so the file system (not smbprotocol) is the witness of
what arrived. smbd runs as root but serves the share as a throwaway system user with a random
password, added with useradd and smbpasswd and removed with userdel when the session ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resources.connections.smb import SmbResource
from tests.endpoints import Endpoint
from tests.endpoints.kinds import local_endpoint_parts, outside_of

SMBD = "/usr/sbin/smbd"
SHARE = "data"


@dataclass(frozen=True)
class SmbServer:
    host: str
    port: int
    share: str
    username: str
    password: str
    root: Path  # the share's folder on this machine
    pid: int
    config_path: Path


def _write_config(folder: Path, port: int, username: str) -> Path:
    config = folder / "smb.conf"
    config.write_text(
        "[global]\n"
        f"  smb ports = {port}\n"
        "  interfaces = 127.0.0.1\n"
        "  bind interfaces only = yes\n"
        f"  state directory = {folder / 'state'}\n"
        f"  cache directory = {folder / 'cache'}\n"
        f"  private dir = {folder / 'private'}\n"
        f"  lock directory = {folder / 'lock'}\n"
        f"  pid directory = {folder / 'pid'}\n"
        f"  log file = {folder / 'log.%m'}\n"
        "  server role = standalone server\n"
        "  map to guest = never\n"
        "  load printers = no\n"
        "  disable spoolss = yes\n"
        "  server min protocol = SMB2\n"
        f"[{SHARE}]\n"
        f"  path = {folder / 'share'}\n"
        "  read only = no\n"
        f"  valid users = {username}\n"
    )
    return config


def _start_smbd(folder: Path, username: str) -> tuple[subprocess.Popen, int, Path]:
    from conftest import _stop, free_port, wait_for_port  # pytest has loaded it by now

    log = folder / "smbd.log"
    for _ in range(3):  # another process may take the free port before smbd binds it
        port = free_port()
        config = _write_config(folder, port, username)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [SMBD, "-s", str(config), "-F", "--no-process-group", "--debug-stdout"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                # smbd signals its whole process group when it stops: not pytest's
                start_new_session=True)
        if wait_for_port(port, process, timeout=20):
            return process, port, config
        _stop(process)
    raise RuntimeError(f"smbd did not start; its log:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def smbd() -> Iterator[SmbServer]:
    from conftest import _stop, need_server

    if not os.access(SMBD, os.X_OK):
        need_server("smbd", f"{SMBD} is not installed (apt-get install samba)")
    if os.geteuid() != 0:
        need_server("smbd", "adding the share's system user needs root")
    # Not under pytest's tmp folders: they are private to root, and the share's user must be
    # able to traverse every folder above the share.
    folder = Path(tempfile.mkdtemp(prefix="stagecoach-smbd-"))
    folder.chmod(0o755)
    for name in ("share", "state", "cache", "private", "lock", "pid"):
        (folder / name).mkdir()
    (folder / "share").chmod(0o777)
    username, password = f"sc{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    try:
        subprocess.run(["useradd", "-M", "-d", "/", "-s", "/usr/sbin/nologin", username],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as failed:
        shutil.rmtree(folder, ignore_errors=True)
        need_server("smbd", f"cannot add the share's user: {failed}")
    try:
        try:
            config = _write_config(folder, 445, username)  # smbpasswd reads no port; smbd's below
            subprocess.run(["smbpasswd", "-c", str(config), "-s", "-a", username],
                           input=f"{password}\n{password}\n", text=True, check=True,
                           capture_output=True, timeout=30)
            process, port, config = _start_smbd(folder, username)
        except (OSError, subprocess.SubprocessError, RuntimeError) as failed:
            detail = getattr(failed, "stderr", None) or getattr(failed, "stdout", None) or ""
            need_server("smbd", f"cannot start smbd: {failed} {str(detail).strip()}")
        try:
            yield SmbServer(host="127.0.0.1", port=port, share=SHARE, username=username,
                            password=password, root=folder / "share", pid=process.pid,
                            config_path=config)
        finally:
            _stop(process)
    finally:
        subprocess.run(["userdel", username], capture_output=True, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def smb_settings(smbd: SmbServer, base_path: str) -> dict[str, object]:
    return {"host": smbd.host, "port": smbd.port, "share": smbd.share,
            "username": smbd.username, "password": smbd.password, "base_path": base_path,
            "timeout_seconds": 10}


def fresh_base(smbd: SmbServer) -> str:
    """A new, empty folder in the share that the share's user may write into."""
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    (smbd.root / name).mkdir()
    (smbd.root / name).chmod(0o777)
    return name


@pytest.fixture
def smb_files(smbd: SmbServer) -> Endpoint:
    """The share's folder is read and written directly: the file system is the witness."""
    name = fresh_base(smbd)
    base = smbd.root / name
    read, listing, _ = local_endpoint_parts(base)

    def put(path: str, data: bytes) -> None:
        """Written as root, so opened up for the share's user, who replaces such files.

        Replacing needs DELETE access on the old file, which Samba's POSIX-to-NT mapping grants
        only with rwx on the file itself ("acl map full control"): 0o666 is not enough.
        """
        target = base / path
        for folder in reversed(target.relative_to(base).parents[:-1]):
            (base / folder).mkdir(exist_ok=True)
            (base / folder).chmod(0o777)
        target.write_bytes(data)
        target.chmod(0o777)

    settings = smb_settings(smbd, name)
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    bad = SmbResource(**{**settings, "password": wrong})
    return Endpoint("smb", SmbResource(**settings), read, listing, put, bad_login=bad,
                    rebuild=("resources.connections.smb:SmbResource", settings), secret=wrong,
                    outside=outside_of(base, smbd.root))
