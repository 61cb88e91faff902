"""OpenSSH's sshd on a free loopback port, in a folder of its own: what the `sshd` fixture
(tests/conftest.py) and the SFTP benchmark (benchmarks/sftp_delivery.py) both start.

Plain functions (no pytest, no Dagster), so the benchmark imports them without the test
machinery: ed25519 host and user keys, `Subsystem sftp internal-sftp`, the host key in a
known_hosts file, stopped by its own process id.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None,
                  timeout: float = 10.0) -> bool:
    """True once 127.0.0.1:port accepts a connection; False if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def known_hosts_line(port: int, public_key_file: Path) -> str:
    key_type, key = public_key_file.read_text().split()[:2]
    return f"[127.0.0.1]:{port} {key_type} {key}\n"


def start_sshd(folder: Path) -> tuple[subprocess.Popen, int]:
    """sshd serving from `folder`: its host key `hostkey`, the key `userkey` authorized, the
    host key in `known_hosts`. Raises RuntimeError (with sshd's log) if it does not start."""
    keygen(folder / "hostkey")
    keygen(folder / "userkey")
    (folder / "authorized_keys").write_text((folder / "userkey.pub").read_text())
    (folder / "authorized_keys").chmod(0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    config, log = folder / "sshd_config", folder / "sshd.log"
    for _ in range(3):  # another process may take the free port before sshd binds it
        port = free_port()
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {folder / 'hostkey'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            f"PidFile {folder / 'sshd.pid'}\n"
            "Subsystem sftp internal-sftp\n"
        )
        with open(log, "ab") as err:
            process = subprocess.Popen([SSHD, "-f", str(config), "-D", "-e"],
                                       stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if wait_for_port(port, process):
            (folder / "known_hosts").write_text(known_hosts_line(port, folder / "hostkey.pub"))
            return process, port
        stop(process)
    raise RuntimeError(f"sshd did not start; its log:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
