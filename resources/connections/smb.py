"""An SMB share (Windows or Samba) as a file connection (smbprotocol's `smbclient`, SMB 2/3).

smbclient keeps one process-wide pool of connections and, within a connection, reuses the first
session logged on with the same user name: a resource with a wrong password would be served by
another resource's good session. Each operation therefore opens its own connection in a private
pool (`connection_cache`), logs on with this resource's own credentials and closes it at the end.
"""

import contextlib
import errno
import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import smbclient
from pydantic import Field
from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.header import NtStatus
from spnego.exceptions import SpnegoError

from resources.connections.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    partial_name,
    redact,
    safe_relative,
    split_pattern,
)
from resources.connections.retry import RetryingConnection
from resources.progress import tracked

# smbprotocol raises SMBException (SMBOSError is also an OSError), ValueError when the TCP
# connection fails, and SpnegoError when authentication cannot even be attempted.
_ERRORS = (SMBException, SpnegoError, OSError, ValueError)
_BLOCK = 1 << 20
# The server's "the connection or session went away" and "busy, later" statuses.
_TRANSIENT_STATUSES = {NtStatus.STATUS_NETWORK_NAME_DELETED, NtStatus.STATUS_USER_SESSION_DELETED,
                       NtStatus.STATUS_IO_TIMEOUT, NtStatus.STATUS_INSUFFICIENT_RESOURCES,
                       NtStatus.STATUS_REQUEST_NOT_ACCEPTED, NtStatus.STATUS_PIPE_DISCONNECTED}


class SmbResource(RetryingConnection):
    """An SMB share; one connection and session per operation, closed when it is done."""

    host: str
    port: int = 445
    share: str
    username: str
    password: str | None = None
    base_path: str = Field(
        default="", description="Folder inside the share; '' is the share's root.")
    encrypt: bool = Field(
        default=False, description="Require SMB3 encryption of the whole session.")
    timeout_seconds: float = Field(
        default=30, description="Connecting and negotiating with the server.")

    # SMB2/3 has no request that returns a file's checksum (reading it back costs a second
    # transfer): the size is checked.
    checks_md5: ClassVar[bool] = False

    def describe(self, remote: str) -> str:
        where = "/".join([self.share, *self._parts(remote)])
        return f"smb://{self.username}@{self.host}:{self.port}/{where}"

    def local_path(self, remote: str) -> Path | None:
        return None  # remote: couriers download it

    def _parts(self, remote: str) -> list[str]:
        """base_path and the checked relative path, as path components."""
        base = self.base_path.replace("\\", "/")
        full = posixpath.join(base, safe_relative(remote))
        return [p for p in posixpath.normpath(full).split("/") if p not in ("", ".")]

    def _unc(self, remote: str) -> str:
        return "\\".join([f"\\\\{self.host}", self.share, *self._parts(remote)])

    def _fail(self, remote: str, operation: str, failed: BaseException) -> TransferError:
        message = f"{self.describe(remote)} {operation}: {type(failed).__name__}: {failed}"
        # No smbprotocol message is known to hold the password; make sure (a very short one
        # would blank out ordinary letters and tells nothing anyway).
        message = redact(message, self.password)
        return TransferError(message)

    @contextlib.contextmanager
    def _session(self, remote: str, operation: str) -> Iterator[dict[str, Any]]:
        """Log on over a new connection; yield the keyword arguments for every smbclient call.

        The connection is made here, not by register_session, so that it can be closed even when
        negotiation times out (register_session would drop it with its socket and thread open).
        """
        cache: dict[str, Connection] = {}
        connection = Connection(uuid.uuid4(), self.host, self.port)
        cache[f"{self.host.lower()}:{self.port}"] = connection
        kwargs: dict[str, Any] = {
            "username": self.username, "password": self.password, "port": self.port,
            "encrypt": True if self.encrypt else None,  # None: whatever the server asks for
            "connection_timeout": self.timeout_seconds, "connection_cache": cache}
        try:
            try:
                # smbprotocol types its timeouts int; its sockets take a float
                connection.connect(timeout=self.timeout_seconds)  # pyright: ignore[reportArgumentType]
                smbclient.register_session(self.host, **kwargs)
            except _ERRORS as failed:
                raise self._fail(remote, operation, failed) from failed
            yield kwargs
        finally:
            with contextlib.suppress(*_ERRORS):  # logs off and closes the connection
                smbclient.delete_session(self.host, port=self.port, connection_cache=cache,
                                         timeout=self.timeout_seconds)  # pyright: ignore[reportArgumentType]
            with contextlib.suppress(OSError):  # closes the socket if logging off failed
                connection.disconnect(close=False)

    def _list_once(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        with self._session(directory, "list") as kwargs:
            try:
                entries = [(e.name, e.smb_info) for e in
                           smbclient.scandir(self._unc(directory), **kwargs)
                           # entry.stat() would lose the port (smbclient 1.17): the listing's
                           # own attributes and size are enough
                           if e.is_file(follow_symlinks=False) and matches(e.name, name)]
            except OSError as failed:
                if failed.errno == errno.ENOENT:
                    return []
                raise self._fail(directory, "list", failed) from failed
            except _ERRORS as failed:
                raise self._fail(directory, "list", failed) from failed
        return sorted((RemoteFile(joined(directory, n), info.end_of_file,
                                  info.last_write_time.timestamp()) for n, info in entries),
                      key=lambda f: f.path)

    def _download_once(self, remote: str, local: Path) -> int:
        source = self._unc(remote)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with (self._session(remote, "download") as kwargs,
                  smbclient.open_file(source, mode="rb", share_access="r", **kwargs) as reader,
                  open(local, "wb") as local_file):
                writer = tracked(local_file)
                while block := reader.read(_BLOCK):
                    writer.write(block)
            return local.stat().st_size
        except TransferError:
            local.unlink(missing_ok=True)
            raise
        except _ERRORS as failed:
            local.unlink(missing_ok=True)
            raise self._fail(remote, "download", failed) from failed

    def transient_error(self, error: BaseException) -> bool | None:
        """A closed connection, a deleted session or a TCP connect that failed (smbprotocol's
        ValueError, raised from the socket error) may come back; a refused logon will not."""
        if isinstance(error, SMBAuthenticationError | SpnegoError):
            return False
        if isinstance(error, SMBConnectionClosed):
            return True
        if isinstance(error, SMBOSError):
            if error.ntstatus in _TRANSIENT_STATUSES:
                return True
            return False if error.errno == 0 else super().transient_error(error)
        if isinstance(error, SMBResponseException):
            return error.status in _TRANSIENT_STATUSES
        if isinstance(error, OSError) and error.errno == errno.EBADF:
            # smbprotocol's transport sending on the socket its reader already closed when the
            # server dropped it (after a BrokenPipeError): each attempt connects anew.
            return True
        return super().transient_error(error)

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        if safe_relative(remote) == ".":
            raise TransferError(f"{self.describe(remote)} upload: the path names no file")
        parts = self._parts(remote)
        final = self._unc(remote)
        directory = final.rsplit("\\", 1)[0]
        partial = f"{directory}\\{partial_name(parts[-1])}"
        expected = local.stat().st_size
        with self._session(remote, "upload") as kwargs:
            leftover = False  # a partial file that may exist under its hidden name
            for path in list(litter):  # left by an attempt whose connection was cut
                try:
                    smbclient.remove(path, **kwargs)
                except OSError as gone:
                    if gone.errno != errno.ENOENT:
                        continue
                except _ERRORS:
                    continue
                litter.remove(path)
            try:
                if len(parts) > 1:
                    smbclient.makedirs(directory, exist_ok=True, **kwargs)
                if not overwrite and _exists(final, kwargs) and self._kept_existing(
                        remote, retried, smbclient.stat(final, **kwargs).st_size, expected):
                    return expected
                leftover = True
                with (open(local, "rb") as local_file,
                      smbclient.open_file(partial, mode="wb", **kwargs) as writer):
                    reader = tracked(local_file)
                    while block := reader.read(_BLOCK):
                        writer.write(block)
                check_size(self.describe(remote), smbclient.stat(partial, **kwargs).st_size,
                           expected)
                if overwrite:
                    smbclient.replace(partial, final, **kwargs)
                else:  # rename refuses an existing target: no race with another writer
                    try:
                        smbclient.rename(partial, final, **kwargs)
                    except OSError as exists:
                        if exists.errno != errno.EEXIST:
                            raise
                        raise TransferError(f"{self.describe(remote)} exists and overwrite is "
                                            "off") from exists
                leftover = False
                return smbclient.stat(final, **kwargs).st_size
            except _ERRORS as failed:
                raise self._fail(remote, "upload", failed) from failed
            finally:
                if leftover:  # if the connection is gone it stays (never under the final
                    try:      # name) until the next attempt removes it
                        smbclient.remove(partial, **kwargs)
                    except OSError as gone:
                        if gone.errno != errno.ENOENT:
                            litter.append(partial)
                    except _ERRORS:
                        litter.append(partial)


def _exists(path: str, kwargs: dict[str, Any]) -> bool:
    try:
        smbclient.stat(path, **kwargs)
        return True
    except OSError as missing:
        if missing.errno == errno.ENOENT:
            return False
        raise
