"""One interface for every file connection: folder, SFTP, FTP, SMB and S3 list, fetch and deliver
alike, so couriers, activations and sensors never care which kind they hold.

Every implementation lists a directory once per call, streams files in and out (memory stays
flat), and delivers under a hidden temporary name that is renamed only when the upload is whole
and checked, so a reader never sees half a file.
"""

import fnmatch
import hashlib
import posixpath
import re
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class RemoteFile:
    """A file found on a connection: path, size and modification time."""

    path: str  # relative to the connection's base, with forward slashes
    size: int
    mtime: float | None = None


class TransferError(Exception):
    """A listing, download or upload failed; the message names connection and operation.

    `permanent` is set once the connection judged it a refusal no retry can fix (a host key, a
    login, an unsafe name, a missing file): callers then fail at once rather than retry.
    """

    permanent: bool = False


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
    def download(self, remote: str, local: Path, size: int | None = None) -> int: ...
    def upload(self, local: Path, remote: str, overwrite: bool = True,
               md5: str | None = None) -> int: ...
    def describe(self, remote: str) -> str: ...


def partial_name(final_name: str) -> str:
    """A hidden temporary name beside the final one: no reader's glob picks it up."""
    return f".{final_name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"


def partial_beside(final: str) -> str:
    """The hidden temporary path of an upload to the POSIX path `final`, in its folder (a
    rename within one folder is atomic on every server)."""
    directory, name = posixpath.split(final)
    return posixpath.join(directory, partial_name(name))


def is_partial(name: str) -> bool:
    """Whether `name` is an upload still under way (hidden from listings)."""
    return name.endswith(PARTIAL_SUFFIX)


class UnsafePath(TransferError):
    """A path or file name that could leave its connection's base folder or bucket prefix."""

    permanent = True


# Drive letters ("C:...") mean the root of a disk to SMB and Windows servers.
_DRIVE = re.compile(r"^[A-Za-z]:")
_RULE = ("must stay inside the connection's base folder or bucket prefix: a relative path "
         "without '..', a leading '/', a drive letter, backslashes, NUL or control characters")


def path_problem(path: str) -> str | None:
    """Why `path` (relative to a connection's base) could leave that base, or None.

    The one rule every connection and every templated path or file name goes through: folder,
    SFTP, FTP, SMB and S3 each join the result to their base, so a path that passes cannot
    point outside it on any of them.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "holds NUL or another control character"
    if "\\" in path:
        return "holds a backslash (a folder separator on SMB and Windows servers)"
    if path.startswith("/") or _DRIVE.match(path):
        return "is absolute"
    if ".." in path.split("/"):
        return "goes up with '..'"
    return None


def safe_relative(path: str) -> str:
    """The normalised relative path; UnsafePath for one that could leave the base."""
    if problem := path_problem(path):
        raise UnsafePath(f"path {path!r} {_RULE} (it {problem})")
    return posixpath.normpath(path) if path else "."


def checked_template_path(owner: str, key: str, value: str) -> str:
    """A rendered template used as a folder under a connection's base, normalised.

    `owner` names the spec entry (e.g. "activation `partner_file`"), `key` its setting, so the
    error says where to look and which value was refused.
    """
    if problem := path_problem(value):
        raise UnsafePath(f"{owner} `{key}` rendered to {value!r}, which {problem}; it "
                         f"{_RULE}. Fix the template or the params it uses")
    return posixpath.normpath(value) if value else "."


def checked_file_name(owner: str, key: str, value: str) -> str:
    """A rendered file name: one plain name (folders belong in the path), safe as above."""
    problem = path_problem(value)
    if problem is None and (not value or "/" in value or value in (".", "..")):
        problem = "is not one plain file name (put folders in the activation's `path`)"
    if problem:
        raise UnsafePath(f"{owner} `{key}` rendered to {value!r}, which {problem}. Fix the "
                         "template or the params it uses")
    return value


class UnsafeArchive(TransferError):
    """An archive (a zip, or an xlsx workbook, which is one) that is not safe to unpack."""

    permanent = True


# Limits for unpacking a zip: an xlsx of a million rows unpacks to a few hundred MiB at ratios
# of 10-100; zip bombs declare gigabytes, a deflated member at ratios up to ~1000.
MAX_ARCHIVE_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_COMPRESSION_RATIO = 250


def check_archive(path: Path, what: str, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Refuse a zip before anything reads its members: a member whose name could land outside
    the folder it is unpacked into (zip-slip: '..', absolute, backslashes, NUL), too many
    members, or more unpacked bytes (or a higher compression ratio) than any real file has.

    The sizes checked are the ones the archive declares; Python's zipfile never inflates a
    member beyond its declared size, so a lying header cannot get past this. `what` names the
    file for the message (e.g. "courier `orders` file in/x.xlsx").
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as bad:
        raise UnsafeArchive(f"{what} is not a readable zip archive: {bad}") from bad
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise UnsafeArchive(f"{what} holds {len(members):,} members (at most "
                            f"{MAX_ARCHIVE_MEMBERS:,} are unpacked)")
    total = 0
    for member in members:
        if problem := path_problem(member.filename.rstrip("/")) or (
                None if member.filename.strip("/") else "is empty"):
            raise UnsafeArchive(f"{what}: member {member.filename!r} {problem}; it could be "
                                "unpacked outside its folder, so the archive is refused")
        total += member.file_size
        if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1024):
            raise UnsafeArchive(
                f"{what}: member {member.filename!r} unpacks {member.compress_size:,} bytes to "
                f"{member.file_size:,} (more than {MAX_COMPRESSION_RATIO}x: a zip bomb?)")
    if total > max_unpacked_bytes:
        raise UnsafeArchive(f"{what} unpacks to {total:,} bytes, above the limit of "
                            f"{max_unpacked_bytes:,}")


def split_pattern(pattern: str) -> tuple[str, str]:
    """(directory, file-name glob): one listing per directory, wildcards in the name only."""
    directory, name = posixpath.split(safe_relative(pattern))
    if any(ch in directory for ch in "*?["):
        raise TransferError(f"pattern {pattern!r}: wildcards are allowed in the file name only")
    return directory or ".", name


def matches(name: str, glob: str) -> bool:
    """Whether a file name matches a spec glob."""
    return fnmatch.fnmatchcase(name, glob) and not is_partial(name)


def joined(directory: str, name: str) -> str:
    """A file's path under a remote folder."""
    return posixpath.join(directory, name).removeprefix("./")


def md5_of(path: Path) -> str:
    """A local file's md5, read in blocks."""
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
    """Refuse a transfer whose size is not the expected one."""
    if arrived != expected:
        raise TransferError(f"{where}: {arrived} of {expected} bytes arrived")
