"""A throwaway GnuPG recipient for tests: its public key seals files, its secret key (kept in a
temporary home) decrypts them with the `gpg` program, independently of Stagecoach."""

from __future__ import annotations

import atexit
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpgRecipient:
    home: Path
    public_key: Path
    fingerprint: str

    def decrypt(self, encrypted: Path) -> bytes:
        done = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--quiet",
                               "--decrypt", str(encrypted)], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout


HOMES: list[Path] = []  # each test home's gpg-agent (started for the secret key) is stopped


@atexit.register
def _stop_agents() -> None:
    for home in HOMES:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=30, check=False)


def make_recipient(folder: Path, name: str = "Partner") -> GpgRecipient | None:
    """None when gpg is not installed."""
    if shutil.which("gpg") is None:
        return None
    home = folder / f"gnupg-{name.lower()}"
    home.mkdir(mode=0o700, parents=True)
    HOMES.append(home)
    base = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--passphrase", ""]
    subprocess.run([*base, "--pinentry-mode", "loopback", "--quick-gen-key",
                    f"{name} <{name.lower()}@example.com>", "future-default", "default",
                    "never"], check=True, capture_output=True, timeout=120)
    listed = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--with-colons",
                             "--list-keys"], check=True, capture_output=True, text=True)
    fingerprint = next(line.split(":")[9] for line in listed.stdout.splitlines()
                       if line.startswith("fpr:"))
    public = folder / f"{name.lower()}.asc"
    exported = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--armor", "--export",
                               fingerprint], check=True, capture_output=True, timeout=60)
    public.write_bytes(exported.stdout)
    return GpgRecipient(home, public, fingerprint)
