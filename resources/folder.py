"""A local or mounted folder as a file connection."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from resources.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    md5_of,
    partial_name,
    safe_relative,
    split_pattern,
)
from resources.retry import RetryingConnection


class FolderResource(RetryingConnection):
    """A local (or mounted) folder; retried on a network mount's transient errors (stale handle,
    I/O error, timeout)."""

    path: str = Field(description="Base folder.")

    checks_md5: ClassVar[bool] = True  # the delivered file is re-read and hashed

    def _full(self, remote: str) -> Path:
        return Path(self.path) / safe_relative(remote)

    def describe(self, remote: str) -> str:
        return str(self._full(remote))

    def _list_once(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        folder = Path(self.path) / directory
        if not folder.is_dir():
            return []
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and matches(entry.name, name):
                    info = entry.stat()
                    found.append(RemoteFile(joined(directory, entry.name), info.st_size,
                                            info.st_mtime))
        return sorted(found, key=lambda f: f.path)

    def local_path(self, remote: str) -> Path | None:
        """Folders need no download: readers open the file where it is."""
        return self._full(remote)

    def _download_once(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self._full(remote), local)
        except OSError as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        return local.stat().st_size

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        final = self._full(remote)
        partial = final.with_name(partial_name(final.name))
        for path in list(litter):  # left by an attempt whose mount went away
            with contextlib.suppress(OSError):
                Path(path).unlink(missing_ok=True)
                litter.remove(path)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            expected = local.stat().st_size
            if final.exists() and not overwrite:
                if self._ours(final, local, md5, expected, retried):
                    return expected
                raise TransferError(f"{final} exists and overwrite is off")
            with open(local, "rb") as source, open(partial, "xb") as copy:
                shutil.copyfileobj(source, copy, 1 << 20)
            check_size(str(final), partial.stat().st_size, expected)
            if md5 is not None and md5_of(partial) != md5:
                raise TransferError(f"{final}: the copy's md5 differs from the file's")
            if overwrite:
                os.replace(partial, final)
            else:  # a hard link never replaces: the check above cannot race another writer
                try:
                    os.link(partial, final)
                except FileExistsError:
                    if self._ours(final, local, md5, expected, retried):
                        return expected
                    raise TransferError(f"{final} exists and overwrite is off") from None
            return final.stat().st_size
        except OSError as failed:
            raise TransferError(f"{final} upload: {failed}") from failed
        finally:
            try:
                partial.unlink(missing_ok=True)
            except (NotADirectoryError, FileNotFoundError):
                pass  # the folder itself could not be made: no partial file either
            except OSError:
                litter.append(str(partial))  # e.g. a mount gone stale: the next attempt tries

    def _ours(self, final: Path, local: Path, md5: str | None, expected: int,
              retried: bool) -> bool:
        """An existing final file an earlier attempt of this upload delivered."""
        size = final.stat().st_size
        return retried and size == expected and self._delivered_earlier(
            str(final), retried, size, expected, md5_of(final) == (md5 or md5_of(local)))
