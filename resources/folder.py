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
                     litter: list[str]) -> int:
        final = self._full(remote)
        partial = final.with_name(partial_name(final.name))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists() and not overwrite:
                raise TransferError(f"{final} exists and overwrite is off")
            expected = local.stat().st_size
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
                    raise TransferError(f"{final} exists and overwrite is off") from None
            return final.stat().st_size
        except OSError as failed:
            raise TransferError(f"{final} upload: {failed}") from failed
        finally:
            with contextlib.suppress(OSError):  # e.g. the folder itself could not be made
                partial.unlink(missing_ok=True)
