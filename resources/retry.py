"""Retries for connection operations: a server restarting or a connection cut mid-transfer costs
a few seconds, not a failed run; a refusal a retry cannot fix (a wrong password, a missing file,
a checksum mismatch) fails at once.

Each connection kind says which of its library's errors are transient (`transient_error`); the
generic rule here knows sockets, timeouts and EOF. Every attempt starts over (a fresh login, a
fresh temporary name), so a retried upload never appends to a half file.
"""

from __future__ import annotations

import errno
import itertools
import re
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import Field

from resources.files import RemoteFile, TransferError
from resources.http_post import backoff_delay

T = TypeVar("T")

# Socket errnos that mean "the server or the network is (for now) not there".
TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                    errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
                    errno.ESHUTDOWN, errno.ENOTCONN, errno.EAGAIN, errno.ESTALE, errno.EIO}
# Errno-less OSErrors (paramiko, ssl) that say the connection went away.
_GONE = re.compile(r"socket is closed|connection (was )?(reset|closed|lost|aborted|dropped)|"
                   r"timed out|eof|broken pipe|server connection dropped", re.I)


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the errors it was raised from, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)


def socket_transient(error: BaseException) -> bool | None:
    """True/False for errors any socket-based client raises; None when it cannot tell."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return False
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return True
    if isinstance(error, ConnectionError | TimeoutError | EOFError):
        return True
    if isinstance(error, OSError):
        if error.errno is not None:
            return error.errno in TRANSIENT_ERRNOS
        return bool(_GONE.search(str(error)))
    return None


class RetryingConnection(dg.ConfigurableResource):
    """The public operations of a file connection, each retried on transient faults.

    Kinds implement `_list_once`, `_download_once` and `_upload_once` (one attempt each,
    cleaning up after themselves where the connection still allows) and may widen
    `transient_error` with their library's own temporary errors.
    """

    connection_name: str = Field("", description="The spec's name for this connection: every "
                                 "error and retry message starts with it.")
    retries: int = Field(3, ge=0, le=10, description="Further attempts after a transient "
                         "fault (refused, reset, timed out, the server's temporary codes).")
    backoff_seconds: float = Field(1.0, ge=0, le=300, description="Wait before the first "
                                   "retry, doubled for each next one, each wait at most 300 s.")

    # ---------------------------------------------------------------- public interface
    def list_files(self, pattern: str) -> list[RemoteFile]:
        return self._with_retries("list", lambda: self._list_once(pattern))

    def download(self, remote: str, local: Path) -> int:
        return self._with_retries("download", lambda: self._download_once(remote, local))

    def upload(self, local: Path, remote: str, overwrite: bool = True,
               md5: str | None = None) -> int:
        """Each attempt writes under a fresh temporary name; temporary files that a cut
        connection left behind (`litter`) are removed by the next attempt that gets in. A pipe
        cannot be read twice: an upload from one makes a single attempt."""
        litter: list[str] = []
        tries = itertools.count()
        return self._with_retries(
            "upload", lambda: self._upload_once(local, remote, overwrite, md5, litter,
                                                retried=next(tries) > 0),
            litter=litter, once=not local.is_file())

    # ---------------------------------------------------------------- for the kinds
    def _list_once(self, pattern: str) -> list[RemoteFile]:
        raise NotImplementedError

    def _download_once(self, remote: str, local: Path) -> int:
        raise NotImplementedError

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        raise NotImplementedError

    def _delivered_earlier(self, where: str, retried: bool, size: int, expected: int,
                           same_md5: bool | None = None) -> bool:
        """With overwrite off, a retry that finds the final file need not be a clash: an
        earlier attempt may have renamed (or PUT) it and lost only the reply. The file counts
        as delivered when it has the local file's size and, where the kind can read one
        (`same_md5` not None), its md5."""
        if not retried or size != expected or same_md5 is False:
            return False
        dg.get_dagster_logger("stagecoach.connections").warning(
            f"{self._named('upload')}: {where} is there with the file's size"
            f"{'' if same_md5 is None else ' and md5'}: an earlier attempt delivered it and "
            f"lost the reply; taken as delivered")
        return True

    def _named(self, operation: str) -> str:
        return f"connection `{self.connection_name}` {operation}" if self.connection_name \
            else operation

    def transient_error(self, error: BaseException) -> bool | None:
        """True: a retry may succeed; False: it cannot; None: this kind does not know."""
        return socket_transient(error)

    def is_transient(self, failed: TransferError) -> bool:
        """A TransferError is transient when the library error it was raised from is; one
        raised by Stagecoach itself (size or checksum mismatch, unsafe path) never is."""
        for error in causes(failed):
            if error is failed or isinstance(error, TransferError):
                continue
            verdict = self.transient_error(error)
            if verdict is not None:
                return verdict
        return False

    def _with_retries(self, operation: str, attempt: Callable[[], T],
                      litter: list[str] | None = None, once: bool = False) -> T:
        return with_retries(attempt, connection=self.connection_name,
                            operation=operation, retries=0 if once else self.retries,
                            backoff_seconds=self.backoff_seconds, transient=self.is_transient,
                            litter=litter)


MAX_DELAY_SECONDS = 300.0  # one wait never exceeds this, whatever retries x backoff_seconds


def retry_delay(failed_attempts: int, backoff_seconds: float) -> float:
    """The wait after attempt `failed_attempts` (1-based): doubling from `backoff_seconds`,
    capped at MAX_DELAY_SECONDS so 10 retries of 300 s end within an hour, not days."""
    return min(backoff_delay(failed_attempts - 1, backoff_seconds), MAX_DELAY_SECONDS)


_SINGLE_ATTEMPT: ContextVar[bool] = ContextVar("stagecoach_single_attempt", default=False)


@contextmanager
def single_attempt() -> Iterator[None]:
    """Connection operations inside make one attempt: for sensor ticks, whose next tick is the
    retry, and which must end within Dagster's evaluation timeout whatever the server does."""
    token = _SINGLE_ATTEMPT.set(True)
    try:
        yield
    finally:
        _SINGLE_ATTEMPT.reset(token)


def with_retries(attempt: Callable[[], T], *, connection: str, operation: str, retries: int,
                 backoff_seconds: float, transient: Callable[[TransferError], bool],
                 litter: list[str] | None = None) -> T:
    """`attempt()`, again after a backoff while it raises a transient TransferError.

    The error that ends it names the connection, the operation and the attempts made; each
    retry is logged the same way. Messages are the connections' own, which never hold a secret.
    """
    attempts = 1 if _SINGLE_ATTEMPT.get() else retries + 1
    # A resource made outside a spec has no name: its own message names the server.
    named = f"connection `{connection}` {operation}" if connection else operation
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except TransferError as failed:
            if not transient(failed):
                if not connection:
                    raise
                raise type(failed)(f"{named}: {failed}") from failed
            if number == attempts:
                if attempts == 1 and not connection:
                    raise
                left = (f"; temporary files it could not remove (never under the final name): "
                        f"{', '.join(litter)}" if litter else "")
                raise TransferError(
                    f"{named} failed after {attempts} attempt{'s' * (attempts != 1)} (each "
                    f"time the server was unreachable or dropped the connection): "
                    f"{failed}{left}") from failed
            delay = retry_delay(number, backoff_seconds)
            dg.get_dagster_logger("stagecoach.connections").warning(
                f"{named}: attempt {number} of {attempts} failed ({failed}); retrying in "
                f"{delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")
