"""File connections with one interface: a local folder, SFTP and S3 list, fetch and deliver alike.

Each lists a directory once per call, streams files in and out (memory stays flat), and delivers
under a temporary name that is renamed only when the upload is whole and its size checked, so a
reader never sees half a file.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg
import paramiko
from dagster_aws.s3 import S3Resource
from pydantic import Field

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the connection's base, with forward slashes
    size: int
    mtime: float | None = None


class TransferError(Exception):
    """A listing, download or upload failed; the message names connection and operation."""


class FileConnection(Protocol):
    """What couriers and activations need of any file connection."""

    def list_files(self, pattern: str) -> list[RemoteFile]: ...
    def local_path(self, remote: str) -> Path | None: ...
    def download(self, remote: str, local: Path) -> int: ...
    def upload(self, local: Path, remote: str, overwrite: bool = True) -> int: ...
    def describe(self, remote: str) -> str: ...


def partial_name(final_name: str) -> str:
    """A hidden temporary name beside the final one: no reader's glob picks it up."""
    return f".{final_name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"


def safe_relative(path: str) -> str:
    """Refuse templated paths that would leave the connection's base folder or bucket prefix."""
    clean = path.replace("\\", "/")
    if "\x00" in path or "\\" in path or clean.startswith("/") or ".." in clean.split("/"):
        raise TransferError(f"path {path!r} must stay inside the connection's base folder "
                            "(no '..', absolute paths, backslashes or NUL)")
    return posixpath.normpath(clean) if clean else "."


def _split_pattern(pattern: str) -> tuple[str, str]:
    directory, name = posixpath.split(safe_relative(pattern))
    if any(ch in directory for ch in "*?["):
        raise TransferError(f"pattern {pattern!r}: wildcards are allowed in the file name only")
    return directory or ".", name


class FolderResource(dg.ConfigurableResource):
    """A local (or mounted) folder."""

    path: str = Field(description="Base folder.")

    def _full(self, remote: str) -> Path:
        return Path(self.path) / safe_relative(remote)

    def describe(self, remote: str) -> str:
        return str(self._full(remote))

    def list_files(self, pattern: str) -> list[RemoteFile]:
        directory, name = _split_pattern(pattern)
        folder = Path(self.path) / directory
        if not folder.is_dir():
            return []
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and fnmatch.fnmatchcase(entry.name, name) and \
                        not entry.name.endswith(PARTIAL_SUFFIX):
                    info = entry.stat()
                    found.append(RemoteFile(posixpath.join(directory, entry.name).removeprefix(
                        "./"), info.st_size, info.st_mtime))
        return sorted(found, key=lambda f: f.path)

    def local_path(self, remote: str) -> Path | None:
        """Folders need no download: readers open the file where it is."""
        return self._full(remote)

    def download(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._full(remote), local)
        return local.stat().st_size

    def upload(self, local: Path, remote: str, overwrite: bool = True) -> int:
        final = self._full(remote)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and not overwrite:
            raise TransferError(f"{final} exists and overwrite is off")
        partial = final.with_name(partial_name(final.name))
        try:
            shutil.copyfile(local, partial)
            size = partial.stat().st_size
            if size != local.stat().st_size:
                raise TransferError(f"{final}: wrote {size} bytes of {local.stat().st_size}")
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return size


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
        except (paramiko.SSHException, OSError, EOFError) as failed:
            client.close()
            raise TransferError(f"sftp {self.username}@{self.host}:{self.port} {operation}: "
                                f"{type(failed).__name__}: {failed}") from failed

    def list_files(self, pattern: str) -> list[RemoteFile]:
        directory, name = _split_pattern(pattern)
        client, sftp = self._connect("list")
        try:
            entries = sftp.listdir_attr(self._full(directory))
        except FileNotFoundError:
            return []
        finally:
            client.close()
        return sorted((RemoteFile(posixpath.join(directory, e.filename).removeprefix("./"),
                                  e.st_size or 0, e.st_mtime)
                       for e in entries if stat.S_ISREG(e.st_mode or 0)
                       and fnmatch.fnmatchcase(e.filename, name)
                       and not e.filename.endswith(PARTIAL_SUFFIX)), key=lambda f: f.path)

    def download(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        client, sftp = self._connect("download")
        try:
            sftp.get(self._full(remote), str(local), prefetch=True,
                     max_concurrent_prefetch_requests=64)
            return local.stat().st_size
        except (paramiko.SSHException, OSError, EOFError) as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        finally:
            client.close()

    def upload(self, local: Path, remote: str, overwrite: bool = True) -> int:
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
            size = sftp.stat(partial).st_size
            if size != expected:
                raise TransferError(f"{self.describe(remote)}: {size} of {expected} bytes arrived")
            sftp.posix_rename(partial, final)
            return size
        except (paramiko.SSHException, OSError, EOFError) as failed:
            raise TransferError(f"{self.describe(remote)} upload: {failed}") from failed
        finally:
            try:
                if _sftp_exists(sftp, partial):
                    sftp.remove(partial)
            except (paramiko.SSHException, OSError, EOFError):
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


class S3BucketResource(S3Resource):
    """An S3 bucket and prefix (dagster-aws's S3Resource, so endpoint_url works for any S3)."""

    bucket: str
    prefix: str = ""

    def get_object_to_set_on_execution_context(self) -> S3BucketResource:
        return self  # S3Resource hands assets a bare boto3 client; they need list_files & co.

    def _key(self, remote: str) -> str:
        return posixpath.join(self.prefix, safe_relative(remote)).lstrip("/")

    def local_path(self, remote: str) -> Path | None:
        return None  # remote: couriers download it

    def describe(self, remote: str) -> str:
        return f"s3://{self.bucket}/{self._key(remote)}"

    def list_files(self, pattern: str) -> list[RemoteFile]:
        directory, name = _split_pattern(pattern)
        base = posixpath.normpath(posixpath.join(self.prefix, directory)).strip("/")
        prefix = "" if base == "." else f"{base}/"
        found = []
        try:
            paginator = self.get_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for item in page.get("Contents", []):
                    base = item["Key"][len(prefix):]
                    if fnmatch.fnmatchcase(base, name):
                        found.append(RemoteFile(posixpath.join(directory, base).removeprefix(
                            "./"), item["Size"], item["LastModified"].timestamp()))
        except Exception as failed:
            raise TransferError(f"s3://{self.bucket}/{prefix} list: {failed}") from failed
        return sorted(found, key=lambda f: f.path)

    def download(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.get_client().download_file(self.bucket, self._key(remote), str(local))
        except Exception as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        return local.stat().st_size

    def upload(self, local: Path, remote: str, overwrite: bool = True) -> int:
        client, key, expected = self.get_client(), self._key(remote), local.stat().st_size
        try:
            if not overwrite:
                listed = client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
                if any(o["Key"] == key for o in listed.get("Contents", [])):
                    raise TransferError(f"{self.describe(remote)} exists and overwrite is off")
            # S3 makes an object visible only once its (multipart) upload completes.
            client.upload_file(str(local), self.bucket, key)
            size = client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except TransferError:
            raise
        except Exception as failed:
            raise TransferError(f"{self.describe(remote)} upload: {failed}") from failed
        if size != expected:
            raise TransferError(f"{self.describe(remote)}: {size} of {expected} bytes arrived")
        return size
