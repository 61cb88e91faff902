"""Sealing a delivery file: GPG encryption, then zip, then the md5 of exactly what is sent.

Each stage streams from file to file (gpg is its own process; zip copies in 1 MiB blocks), so
sealing a 1 GB file keeps memory flat. The order is the extract tool's: encrypt before zipping.
"""

import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from assets import spec
from resources.connections.files import md5_of

GPG = "gpg"
BLOCK = 1 << 20
# Sample values of what mail subjects and bodies may use, for checking templates at load time.
MAIL_SAMPLE = {"file_name": "f.csv", "rows": 1, "size": 1, "md5": "0" * 32, "link": "x",
               "activation": "a", "workflow": "w", "destination": "d"}


class SealError(Exception):
    """Encryption or zipping failed; the message says which and why."""


@dataclass(frozen=True)
class SealedFile:
    """A file after sealing: what is sent, and the md5 of what is sent."""

    path: Path  # what is sent: the plain file, file.gpg, or file(.gpg).zip
    name: str  # its name at the destination
    size: int
    md5: str
    steps: tuple[str, ...]  # e.g. ("gpg", "zip"), for metadata


def public_key_problem(key_file: Path) -> str | None:
    """Why `key_file` cannot encrypt a delivery, or None (checked when the spec loads)."""
    if shutil.which(GPG) is None:
        return "GnuPG is not installed (apt-get install gnupg): `seal.gpg` cannot be used"
    with tempfile.TemporaryDirectory(prefix="stagecoach-gpg-") as home:
        shown = subprocess.run([GPG, "--homedir", home, "--batch", "--no-autostart",
                                "--with-colons", "--show-keys", str(key_file)],
                               capture_output=True, text=True, timeout=30)
    records = [line.split(":") for line in shown.stdout.splitlines()]
    if shown.returncode != 0 or not any(r[0] == "pub" for r in records):
        return f"{key_file.name} holds no OpenPGP public key (export one with gpg --export -a)"
    if any(r[0] == "sec" for r in records):
        return f"{key_file.name} holds a secret key: give the recipient's public key only"
    usable = [r for r in records if r[0] in ("pub", "sub") and "e" in r[11] and r[1] not in
              ("r", "e", "d", "i")]
    if not usable:
        return f"{key_file.name} has no valid (unexpired, unrevoked) key that can encrypt"
    return None


def seal(plain: Path, name: str, seal_spec: spec.Seal, zip_name: str | None, folder: Path,
         plain_md5: str | None = None) -> SealedFile:
    """Apply the seal's steps to `plain`, to be sent as `name`; sealed files go to `folder`
    (never beside the source, which may be a courier's landing folder). An unsealed file's
    md5, when the caller has it, is not computed again."""
    current, current_name, steps = plain, name, []
    if seal_spec.gpg is not None:
        current_name += ".asc" if seal_spec.gpg.armor else ".gpg"
        encrypted = folder / current_name
        gpg_encrypt(current, encrypted, [Path(k) for k in seal_spec.gpg.recipients],
                    seal_spec.gpg.armor)
        current, steps = encrypted, [*steps, "gpg"]
    if seal_spec.zip:
        packed_name = zip_name or current_name + ".zip"
        packed = folder / packed_name
        zip_one(current, packed, current_name)
        current, current_name, steps = packed, packed_name, [*steps, "zip"]
    md5 = plain_md5 if not steps and plain_md5 else md5_of(current)
    return SealedFile(current, current_name, current.stat().st_size, md5, tuple(steps))


def gpg_encrypt(source: Path, target: Path, key_files: list[Path], armor: bool = False,
                timeout_seconds: float = 3600) -> None:
    """Encrypt to every recipient with a throwaway keyring, so no key store is shared or kept.

    Public-key encryption needs no gpg-agent: `--no-autostart` keeps one from being left
    running per sealed file.
    """
    with tempfile.TemporaryDirectory(prefix="stagecoach-gpg-") as home:
        base = [GPG, "--homedir", home, "--batch", "--no-tty", "--quiet", "--no-autostart"]
        imported = subprocess.run([*base, "--import", *map(str, key_files)],
                                  capture_output=True, text=True, timeout=60)
        if imported.returncode != 0:
            raise SealError(f"gpg could not import the recipients' keys: "
                            f"{_last_line(imported.stderr)}")
        listed = subprocess.run([*base, "--with-colons", "--list-keys"], capture_output=True,
                                text=True, timeout=60)
        fingerprints = [line.split(":")[9] for line in listed.stdout.splitlines()
                        if line.startswith("fpr:")]
        primaries = _primary_fingerprints(listed.stdout) or fingerprints
        recipients = [arg for fpr in primaries for arg in ("--recipient", fpr)]
        target.unlink(missing_ok=True)
        try:
            encrypted = subprocess.run(
                [*base, "--trust-model", "always", *(["--armor"] if armor else []),
                 "--output", str(target), *recipients, "--encrypt", str(source)],
                capture_output=True, text=True, timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            target.unlink(missing_ok=True)
            raise SealError(f"gpg encryption took more than {timeout_seconds:.0f} s") from None
        if encrypted.returncode != 0:
            target.unlink(missing_ok=True)
            raise SealError(f"gpg encryption failed: {_last_line(encrypted.stderr)}")


def _primary_fingerprints(colons: str) -> list[str]:
    """The fingerprint line right after each `pub` record is the primary key's."""
    found, after_pub = [], False
    for line in colons.splitlines():
        kind = line.split(":", 1)[0]
        if kind == "pub":
            after_pub = True
        elif kind == "fpr" and after_pub:
            found.append(line.split(":")[9])
            after_pub = False
    return found


def zip_one(source: Path, target: Path, member_name: str) -> None:
    """A zip holding one member; Zip64 so files over 4 GB work."""
    target.unlink(missing_ok=True)
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=6) as archive:
            member = zipfile.ZipInfo.from_file(source, arcname=member_name)
            member.compress_type = zipfile.ZIP_DEFLATED
            with open(source, "rb") as plain, archive.open(member, "w",
                                                           force_zip64=True) as packed:
                shutil.copyfileobj(plain, packed, BLOCK)
    except OSError as failed:
        target.unlink(missing_ok=True)
        raise SealError(f"zipping {source.name} failed: {failed}") from failed


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
