"""A local or mounted folder as a file connection.

Every path is resolved (symbolic links followed) before it is listed, read or written, and one
that ends up outside the base folder is refused naming the link and its target: a link dropped
into a landing folder (`passwd.csv -> /etc/passwd`) must not carry a courier or a delivery out
of it. Links that stay inside the base work as before.

A check by path can be raced (a checked folder swapped for a link before it is opened), so the
work itself goes through descriptors: each folder is opened one component at a time from the
base's own descriptor, and every opened folder and file is checked, after opening, to really be
under the base (its `/proc/self/fd` path). Files are then read, listed and written relative to
those descriptors, never by path again; readers get a copy (`local_path` is None), since a path
handed on would be opened later, out of reach of these checks.
"""


import contextlib
import os
import stat
from pathlib import Path
from typing import ClassVar

import dagster as dg
from pydantic import Field

from resources.connections.files import (
    RemoteFile,
    TransferError,
    UnsafePath,
    check_size,
    joined,
    matches,
    md5_of,
    partial_name,
    safe_relative,
    split_pattern,
)
from resources.connections.retry import RetryingConnection
from resources.progress import copy_descriptor


class FolderResource(RetryingConnection):
    """A local (or mounted) folder; retried on a network mount's transient errors (stale handle,
    I/O error, timeout)."""

    path: str = Field(description="Base folder.")

    checks_md5: ClassVar[bool] = True  # the delivered file is re-read and hashed

    def _joined(self, remote: str) -> Path:
        return Path(self.path) / safe_relative(remote)

    def _full(self, remote: str) -> Path:
        """The path of `remote` with every link resolved; UnsafePath if it leaves the base."""
        joined_path = self._joined(remote)
        try:
            if problem := self._escape(joined_path):
                raise UnsafePath(problem)
            return Path(os.path.realpath(joined_path))
        except OSError as failed:  # a link changed while it was being resolved
            raise TransferError(f"{joined_path}: {failed}") from failed

    def _open_dir(self, folder: str, create: bool = False) -> int:
        """A descriptor of `folder` under the base, opened component by component (links
        followed, so links inside the base work), each checked after opening; the caller
        closes it."""
        if create:
            Path(self.path).mkdir(parents=True, exist_ok=True)  # the base is the spec's
        current = os.open(self.path, _DIR_FLAGS)
        try:
            self._check_opened(current, self.path)
            for part in Path(safe_relative(folder)).parts:
                if part == ".":
                    continue
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=current)
                opened = os.open(part, _DIR_FLAGS, dir_fd=current)
                os.close(current)
                current = opened
                self._check_opened(current, str(self._joined(folder)))
        except BaseException:
            os.close(current)
            raise
        return current

    def _open_file(self, remote: str) -> int:
        """A read descriptor of `remote`, checked after opening; the caller closes it."""
        folder, name = os.path.split(safe_relative(remote))
        directory = self._open_dir(folder or ".")
        try:
            # O_NONBLOCK: a FIFO put there must not hang the read (it is refused below)
            handle = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=directory)
        finally:
            os.close(directory)
        try:
            self._check_opened(handle, str(self._joined(remote)))
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise TransferError(f"{self._joined(remote)} is not a regular file; only files "
                                    "can be read from a folder connection")
        except BaseException:
            os.close(handle)
            raise
        return handle

    def _check_opened(self, handle: int, shown: str) -> None:
        """UnsafePath when what `handle` opened is not under the base (a link swapped in)."""
        base = os.path.realpath(self.path)
        opened = os.readlink(f"/proc/self/fd/{handle}")
        if not _inside(opened, base):
            raise UnsafePath(f"{shown} led to {opened} when opened, outside the connection's "
                             f"base folder {base}; refused (a folder or link in it changed "
                             "while it was being used: check who writes to that folder)")

    def _escape(self, path: Path) -> str | None:
        """Why `path` (under the base) resolves outside the base, naming the first link on the
        way that does, or None when it stays inside."""
        base = os.path.realpath(self.path)
        if _inside(os.path.realpath(path), base):
            return None
        here = Path(self.path)
        for part in path.relative_to(self.path).parts:
            here = here / part
            target = os.path.realpath(here)
            if here.is_symlink() and not _inside(target, base):
                return (f"{here} is a symbolic link to {target}, outside the connection's base "
                        f"folder {base}; refused (links may point only inside the base: "
                        "remove the link, or copy the file into the folder)")
        return (f"{path} resolves to {os.path.realpath(path)}, outside the connection's base "
                f"folder {base}; refused")

    def describe(self, remote: str) -> str:
        return str(self._joined(remote))

    def _list_once(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        if not self._joined(directory).is_dir():
            return []
        self._full(directory)  # names a link out of the base
        try:
            handle = self._open_dir(directory)
            try:
                return self._listed(handle, directory, name)
            finally:
                os.close(handle)
        except OSError as failed:
            raise TransferError(f"{self.describe(directory)} list: {failed}") from failed

    def _listed(self, handle: int, directory: str, name: str) -> list[RemoteFile]:
        found = []
        with os.scandir(handle) as entries:
            for entry in entries:
                if not (matches(entry.name, name) and entry.is_file()):
                    continue
                if entry.is_symlink() and (problem := self._escape(self._joined(
                        joined(directory, entry.name)))):
                    dg.get_dagster_logger("stagecoach.connections").warning(
                        f"{self._named('list')}: skipped {entry.name!r}: {problem}")
                    continue
                info = entry.stat()
                found.append(RemoteFile(joined(directory, entry.name), info.st_size,
                                        info.st_mtime))
        return sorted(found, key=lambda f: f.path)

    def local_path(self, remote: str) -> Path | None:
        """None: a path handed to a reader would be opened later, after a link could be
        swapped in; the file is copied through a checked descriptor instead."""
        return None

    def _download_once(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._full(remote)  # names a link out of the base
            with os.fdopen(self._open_file(remote), "rb") as source, open(local, "wb") as copy:
                copy_descriptor(source.fileno(), copy.fileno(),
                                os.fstat(source.fileno()).st_size)
        except TransferError:  # refused: a link out, or not a regular file
            local.unlink(missing_ok=True)
            raise
        except OSError as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        return local.stat().st_size

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        self._full(remote)  # refuses a link out of the base, on the way or as the file itself
        folder, name = os.path.split(safe_relative(remote))
        final = self._full(folder or ".") / name  # a link to a file inside is replaced, as before
        partial = partial_name(name)
        for path in list(litter):  # left by an attempt whose mount went away
            with contextlib.suppress(OSError):
                Path(path).unlink(missing_ok=True)
                litter.remove(path)
        try:
            directory = self._open_dir(folder or ".", create=True)
        except OSError as failed:
            raise TransferError(f"{final} upload: {failed}") from failed
        try:
            return self._write(directory, local, name, partial, final, overwrite, md5, retried)
        except OSError as failed:
            raise TransferError(f"{final} upload: {failed}") from failed
        finally:
            try:
                os.unlink(partial, dir_fd=directory)
            except FileNotFoundError:
                pass
            except OSError:
                litter.append(str(final.parent / partial))  # e.g. a mount gone stale
            os.close(directory)

    def _write(self, directory: int, local: Path, name: str, partial: str, final: Path,
               overwrite: bool, md5: str | None, retried: bool) -> int:
        """Copy to `partial` and move it to `name`, all relative to the checked `directory`."""
        expected = local.stat().st_size
        if _exists(name, directory) and not overwrite:
            if self._ours(directory, name, final, local, md5, expected, retried):
                return expected
            raise TransferError(f"{final} exists and overwrite is off")
        created = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o666, dir_fd=directory)
        with open(local, "rb") as source, os.fdopen(created, "wb") as copy:
            copy_descriptor(source.fileno(), copy.fileno(), expected)
        check_size(str(final), os.stat(partial, dir_fd=directory).st_size, expected)
        if md5 is not None and _md5_at(partial, directory) != md5:
            raise TransferError(f"{final}: the copy's md5 differs from the file's")
        if overwrite:
            os.replace(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
        else:  # a hard link never replaces: the check above cannot race another writer
            try:
                os.link(partial, name, src_dir_fd=directory, dst_dir_fd=directory,
                        follow_symlinks=False)
            except FileExistsError:
                if self._ours(directory, name, final, local, md5, expected, retried):
                    return expected
                raise TransferError(f"{final} exists and overwrite is off") from None
        return os.stat(name, dir_fd=directory).st_size

    def _ours(self, directory: int, name: str, final: Path, local: Path, md5: str | None,
              expected: int, retried: bool) -> bool:
        """An existing final file an earlier attempt of this upload delivered."""
        size = os.stat(name, dir_fd=directory).st_size
        return retried and size == expected and self._delivered_earlier(
            str(final), retried, size, expected,
            _md5_at(name, directory) == (md5 or md5_of(local)))


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _exists(name: str, directory: int) -> bool:
    try:
        os.stat(name, dir_fd=directory)
    except FileNotFoundError:
        return False
    return True


def _md5_at(name: str, directory: int) -> str:
    handle = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
    try:
        return md5_of(Path(f"/proc/self/fd/{handle}"))
    finally:
        os.close(handle)


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)
