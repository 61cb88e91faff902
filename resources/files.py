"""One interface for every file connection: folder, SFTP, FTP, SMB and S3 list, fetch and deliver
alike, so couriers, activations and sensors never care which kind they hold.

Every implementation lists a directory once per call, streams files in and out (memory stays
flat), and delivers under a hidden temporary name that is renamed only when the upload is whole
and checked, so a reader never sees half a file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the connection's base, with forward slashes
    size: int
    mtime: float | None = None


class TransferError(Exception):
    """A listing, download or upload failed; the message names connection and operation."""


class FileConnection(Protocol):
    """What couriers, activations and sensors need of any file connection.

    `upload` returns the size found at the destination after the rename. With `md5` given,
    connections that can read a checksum back (`checks_md5`) compare it too; a mismatch, a short
    file or (with `overwrite` off) an existing file raises TransferError and leaves no file
    under the final name.
    """

    checks_md5: bool

    def list_files(self, pattern: str) -> list[RemoteFile]: ...
    def local_path(self, remote: str) -> Path | None: ...
    def download(self, remote: str, local: Path) -> int: ...
    def upload(self, local: Path, remote: str, overwrite: bool = True,
               md5: str | None = None) -> int: ...
    def describe(self, remote: str) -> str: ...


def partial_name(final_name: str) -> str:
    """A hidden temporary name beside the final one: no reader's glob picks it up."""
    return f".{final_name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"


def is_partial(name: str) -> bool:
    return name.endswith(PARTIAL_SUFFIX)


def safe_relative(path: str) -> str:
    """Refuse templated paths that would leave the connection's base folder or bucket prefix."""
    clean = path.replace("\\", "/")
    if "\x00" in path or "\\" in path or clean.startswith("/") or ".." in clean.split("/"):
        raise TransferError(f"path {path!r} must stay inside the connection's base folder "
                            "(no '..', absolute paths, backslashes or NUL)")
    return posixpath.normpath(clean) if clean else "."


def split_pattern(pattern: str) -> tuple[str, str]:
    """(directory, file-name glob): one listing per directory, wildcards in the name only."""
    directory, name = posixpath.split(safe_relative(pattern))
    if any(ch in directory for ch in "*?["):
        raise TransferError(f"pattern {pattern!r}: wildcards are allowed in the file name only")
    return directory or ".", name


def matches(name: str, glob: str) -> bool:
    return fnmatch.fnmatchcase(name, glob) and not is_partial(name)


def joined(directory: str, name: str) -> str:
    return posixpath.join(directory, name).removeprefix("./")


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def redact(text: str, secret: str | None) -> str:
    """Hide a secret a server might echo back; very short ones would garble the message and
    carry no real secret."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


def check_size(where: str, arrived: int, expected: int) -> None:
    if arrived != expected:
        raise TransferError(f"{where}: {arrived} of {expected} bytes arrived")
