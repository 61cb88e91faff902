"""Retries for connection operations: a server restarting or a connection cut mid-transfer costs
a few seconds, not a failed run; a refusal a retry cannot fix (a wrong password, a missing file,
a checksum mismatch) fails at once.

Each connection kind says which of its library's errors are transient (`transient_error`); the
generic rule here knows sockets, timeouts and EOF. Every attempt starts over (a fresh login, a
fresh temporary name), so a retried upload never appends to a half file.
"""

import errno
import itertools
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import Field

from resources.connections.files import RemoteFile, TransferError, path_problem
from resources.progress import DEFAULT_INTERVAL_SECONDS, reporting
from resources.retries import (  # re-exported: the kinds and tests import them from here
    MAX_DELAY_SECONDS,
    causes,
    mark_retried_inside,
    retry_delay,
    run_with_retries,
)

__all__ = ["MAX_DELAY_SECONDS", "TRANSIENT_ERRNOS", "RetryingConnection", "causes",
           "in_single_attempt", "is_permanent", "retry_delay", "single_attempt",
           "socket_transient", "usable_files", "with_retries"]

T = TypeVar("T")

# Socket errnos that mean "the server or the network is (for now) not there".
TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                    errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
                    errno.ESHUTDOWN, errno.ENOTCONN, errno.EAGAIN, errno.ESTALE, errno.EIO}
# Errno-less OSErrors (paramiko, ssl) that say the connection went away.
_GONE = re.compile(r"socket is closed|connection (was )?(reset|closed|lost|aborted|dropped)|"
                   r"timed out|eof|broken pipe|server connection dropped", re.I)


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

    connection_name: str = Field(
        default="", description="The spec's name for this connection: every "
        "error and retry message starts with it.")
    retries: int = Field(default=3, ge=0, le=10, description="Further attempts after a transient "
                         "fault (refused, reset, timed out, the server's temporary codes).")
    backoff_seconds: float = Field(default=1.0, ge=0, le=300, description="Wait before the first "
                                   "retry, doubled for each next one, each wait at most 300 s.")
    progress_seconds: float = Field(
        default=DEFAULT_INTERVAL_SECONDS, gt=0, description="A transfer logs its bytes, percent "
        "and rate this often (and at every 10 % once it has run this long).")

    # ---------------------------------------------------------------- public interface
    def list_files(self, pattern: str) -> list[RemoteFile]:
        found = self._with_retries("list", lambda: self._list_once(pattern))
        return usable_files(found, self._named("list"))

    def download(self, remote: str, local: Path, size: int | None = None) -> int:
        """`size` (the listing's) lets the progress lines give a percent from the start."""
        with reporting(f"{self._named('download')} {self.describe(remote)}", size,
                       self.progress_seconds):
            return self._with_retries("download", lambda: self._download_once(remote, local))

    def upload(self, local: Path, remote: str, overwrite: bool = True,
               md5: str | None = None) -> int:
        """Each attempt writes under a fresh temporary name; temporary files that a cut
        connection left behind (`litter`) are removed by the next attempt that gets in. A pipe
        cannot be read twice: an upload from one makes a single attempt."""
        litter: list[str] = []
        tries = itertools.count()
        with reporting(f"{self._named('upload')} {self.describe(remote)}",
                       local.stat().st_size if local.is_file() else None,
                       self.progress_seconds):
            return self._with_retries(
                "upload", lambda: self._upload_once(local, remote, overwrite, md5, litter,
                                                    retried=next(tries) > 0),
                litter=litter, once=not local.is_file())

    # ---------------------------------------------------------------- for the kinds
    def describe(self, remote: str) -> str:
        raise NotImplementedError

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

    def _kept_existing(self, remote: str, retried: bool, size: int, expected: int) -> bool:
        """With overwrite off and the final file there: True when an earlier attempt of this
        upload delivered it (`_delivered_earlier`), else the clash as a TransferError."""
        if self._delivered_earlier(self.describe(remote), retried, size, expected):
            return True
        raise TransferError(f"{self.describe(remote)} exists and overwrite is off")

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


def usable_files(found: list[RemoteFile], named: str) -> list[RemoteFile]:
    """The listed files whose names a path can hold; each other one is skipped with a warning
    naming it (repr), so one odd name (a backslash, a newline, a control character, '..') at
    the source does not stop the good files beside it."""
    usable = []
    for item in found:
        if problem := path_problem(item.path):
            dg.get_dagster_logger("stagecoach.connections").warning(
                f"{named}: skipped {item.path!r}: the name {problem}, so it cannot be fetched "
                "safely; rename or remove it at the source")
        else:
            usable.append(item)
    return usable


def is_permanent(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is a refusal a retry cannot fix, as the
    connection judged it: a Dagster step failing with it must not be retried either."""
    return any(isinstance(e, TransferError) and e.permanent for e in causes(error))


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


def in_single_attempt() -> bool:
    """Whether connection operations make one attempt now (inside `single_attempt`)."""
    return _SINGLE_ATTEMPT.get()


def with_retries(attempt: Callable[[], T], *, connection: str, operation: str, retries: int,
                 backoff_seconds: float, transient: Callable[[TransferError], bool],
                 litter: list[str] | None = None, client_attempts: int = 1) -> T:
    """`attempt()`, again after a backoff while it raises a transient TransferError (tenacity
    runs the loop: resources/retries.py).

    The error that ends it names the connection, the operation and the attempts made; each
    retry is logged the same way. Messages are the connections' own, which never hold a secret.
    A permanent refusal is marked `permanent`, a spent budget `retried_inside`: the step's
    RetryPolicy retries neither (resources.retries.step_may_retry). `client_attempts`: the
    attempts the client library makes itself inside one of ours (botocore's standard mode).
    """
    attempts = 1 if _SINGLE_ATTEMPT.get() else retries + 1
    # A resource made outside a spec has no name: its own message names the server.
    named = f"connection `{connection}` {operation}" if connection else operation

    def log_retry(number: int, failed: BaseException, delay: float) -> None:
        dg.get_dagster_logger("stagecoach.connections").warning(
            f"{named}: attempt {number} of {attempts} failed ({failed}); retrying in "
            f"{delay:.1f} s")

    try:
        return run_with_retries(
            attempt, attempts=attempts, backoff_seconds=backoff_seconds,
            should_retry=lambda e: isinstance(e, TransferError) and transient(e),
            on_retry=log_retry)
    except TransferError as failed:
        if not transient(failed):
            failed.permanent = True
            if not connection:
                raise
            refused = type(failed)(f"{named}: {failed}")
            refused.permanent = True
            raise refused from failed
        made = attempts * client_attempts
        if made == 1 and not connection:
            raise
        left = (f"; temporary files it could not remove (never under the final name): "
                f"{', '.join(litter)}" if litter else "")
        counted = (f"{made} attempt{'s' * (made != 1)}" if client_attempts == 1 else
                   f"up to {made} attempts (the client library's own retries)")
        exhausted = TransferError(
            f"{named} failed after {counted} (each time the server was unreachable or "
            f"dropped the connection): {failed}{left}")
        if made > 1:
            mark_retried_inside(exhausted, made)
        raise exhausted from failed
