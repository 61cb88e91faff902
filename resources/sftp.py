"""An SFTP server as a file connection (paramiko; host keys checked against known_hosts)."""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path
from typing import ClassVar

import dagster as dg
import paramiko
from pydantic import Field

from resources.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    partial_name,
    safe_relative,
    split_pattern,
)

_ERRORS = (paramiko.SSHException, OSError, EOFError)


class SftpResource(dg.ConfigurableResource):
    """An SFTP server (paramiko); host keys are checked against known_hosts."""

    host: str
    port: int = 22
    username: str
    password: str | None = None
    private_key_path: str | None = None
    private_key_passphrase: str | None = None
    known_hosts: str | None = Field(None, description="Default ~/.ssh/known_hosts.")
    base_path: str = "."
    timeout_seconds: float = 30

    checks_md5: ClassVar[bool] = False  # SFTP has no standard checksum request: size only

    def describe(self, remote: str) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}/{self._full(remote)}"

    def _full(self, remote: str) -> str:
        return posixpath.normpath(posixpath.join(self.base_path, safe_relative(remote)))

    def local_path(self, remote: str) -> Path | None:
        return None  # remote: couriers download it

    def _connect(self, operation: str) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        client = paramiko.SSHClient()
        known = os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts")
        try:
            client.load_host_keys(known)
        except OSError as missing:
            raise TransferError(f"sftp {self.host}:{self.port} {operation}: cannot read "
                                f"known_hosts {known}: {missing.strerror}") from missing
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username=self.username,
                           password=self.password, key_filename=self.private_key_path,
                           passphrase=self.private_key_passphrase, timeout=self.timeout_seconds,
                           banner_timeout=self.timeout_seconds, auth_timeout=self.timeout_seconds,
                           allow_agent=False, look_for_keys=False)
            return client, client.open_sftp()
        except _ERRORS as failed:
            client.close()
            raise TransferError(f"sftp {self.username}@{self.host}:{self.port} {operation}: "
                                f"{type(failed).__name__}: {failed}") from failed

    def list_files(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        client, sftp = self._connect("list")
        try:
            entries = sftp.listdir_attr(self._full(directory))
        except FileNotFoundError:
            return []
        except _ERRORS as failed:
            raise TransferError(f"{self.describe(directory)} list: {failed}") from failed
        finally:
            client.close()
        return sorted((RemoteFile(joined(directory, e.filename), e.st_size or 0, e.st_mtime)
                       for e in entries if stat.S_ISREG(e.st_mode or 0)
                       and matches(e.filename, name)), key=lambda f: f.path)

    def download(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        client, sftp = self._connect("download")
        try:
            sftp.get(self._full(remote), str(local), prefetch=True,
                     max_concurrent_prefetch_requests=64)
            return local.stat().st_size
        except _ERRORS as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        finally:
            client.close()

    def upload(self, local: Path, remote: str, overwrite: bool = True,
               md5: str | None = None) -> int:
        final = self._full(remote)
        directory, name = posixpath.split(final)
        partial = posixpath.join(directory, partial_name(name))
        expected = local.stat().st_size
        client, sftp = self._connect("upload")
        try:
            _sftp_makedirs(sftp, posixpath.dirname(final))
            if not overwrite and _sftp_exists(sftp, final):
                raise TransferError(f"{self.describe(remote)} exists and overwrite is off")
            sftp.put(str(local), partial, confirm=True)  # paramiko pipelines put()
            check_size(self.describe(remote), sftp.stat(partial).st_size, expected)
            if overwrite:
                sftp.posix_rename(partial, final)
            else:  # plain SFTP rename refuses an existing target: no race with another writer
                try:
                    sftp.rename(partial, final)
                except OSError as exists:
                    raise TransferError(f"{self.describe(remote)} exists and overwrite is off"
                                        ) from exists
            return sftp.stat(final).st_size
        except _ERRORS as failed:
            raise TransferError(f"{self.describe(remote)} upload: {failed}") from failed
        finally:
            try:
                if _sftp_exists(sftp, partial):
                    sftp.remove(partial)
            except _ERRORS:
                pass  # the connection is gone: the partial name is never a final name
            client.close()


def _sftp_exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
        return True
    except FileNotFoundError:
        return False


def _sftp_makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    if directory in ("", ".", "/") or _sftp_exists(sftp, directory):
        return
    _sftp_makedirs(sftp, posixpath.dirname(directory))
    sftp.mkdir(directory)
