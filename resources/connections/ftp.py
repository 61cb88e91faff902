"""An FTP or FTPS server as a file connection (ftplib; FTPS certificates are verified)."""

import contextlib
import ftplib
import posixpath
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from resources.connections.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    partial_beside,
    redact,
    safe_relative,
    split_pattern,
)
from resources.connections.retry import RetryingConnection
from resources.progress import tracked

_ERRORS = ftplib.all_errors  # ftplib's replies, OSError (socket, ssl, timeouts) and EOFError
_BLOCK = 1 << 20  # streamed in 1 MiB blocks: memory stays flat whatever the file size
_NOT_IMPLEMENTED = ("500", "502", "504")  # replies to a command the server does not know


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # "file", "dir" or "other" (links, devices)
    size: int
    mtime: float | None


class FtpResource(RetryingConnection):
    """An FTP server, or explicit FTPS (AUTH TLS, then PROT P so data channels are encrypted)."""

    host: str
    port: int = 21
    username: str
    password: str | None = None
    tls: bool = Field(
        default=False, description="Explicit FTPS: AUTH TLS, data channels encrypted too.")
    verify_tls: bool = Field(
        default=True, description="Check the server certificate and host name.")
    ca_file: str | None = Field(
        default=None, description="CA bundle for FTPS; default the system store.")
    base_path: str = "."
    passive: bool = True
    timeout_seconds: float = 30

    # HASH and XMD5 are rare extensions (pyftpdlib has neither): the size is checked with SIZE.
    checks_md5: ClassVar[bool] = False

    def describe(self, remote: str) -> str:
        return f"{self._scheme()}://{self.username}@{self.host}:{self.port}/{self._full(remote)}"

    def _scheme(self) -> str:
        return "ftps" if self.tls else "ftp"

    def _full(self, remote: str) -> str:
        return posixpath.normpath(posixpath.join(self.base_path, safe_relative(remote)))

    def local_path(self, remote: str) -> Path | None:
        return None  # remote: couriers download it

    def _error(self, message: str, failed: BaseException) -> TransferError:
        """A TransferError naming what failed; the password never shows, whatever a server says."""
        text = f"{message}: {type(failed).__name__}: {failed}"
        text = redact(text, self.password)
        return TransferError(text)

    def _tls_context(self) -> ssl.SSLContext:
        if self.verify_tls:
            return ssl.create_default_context(cafile=self.ca_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> ftplib.FTP:
        """Logged in, data channels encrypted (FTPS), binary mode (SIZE is exact only there)."""
        who = f"{self._scheme()} {self.username}@{self.host}:{self.port}"
        stage = "connect"
        ftp: ftplib.FTP | None = None
        try:
            if self.tls:
                stage = "tls"
                ftp = ftplib.FTP_TLS(context=self._tls_context(), timeout=self.timeout_seconds)
            else:
                ftp = ftplib.FTP(timeout=self.timeout_seconds)
            stage = "connect"
            ftp.connect(self.host, self.port, timeout=self.timeout_seconds)
            if isinstance(ftp, ftplib.FTP_TLS):
                stage = "tls"
                ftp.auth()  # before USER/PASS: the password only ever travels encrypted
            stage = "login"
            ftp.login(self.username, self.password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                stage = "tls"
                ftp.prot_p()  # PBSZ 0 + PROT P: data channels are TLS too, not just commands
            stage = "login"
            ftp.set_pasv(self.passive)
            ftp.voidcmd("TYPE I")  # pyftpdlib (rightly) refuses SIZE in ASCII mode
            return ftp
        except ssl.SSLCertVerificationError as failed:
            if ftp is not None:
                ftp.close()
            trust = f"ca_file {self.ca_file}" if self.ca_file else "the system store"
            raise self._error(f"{who} {stage}: the server's certificate is not trusted (checked "
                              f"against {trust}); set `ca_file` to the CA that signed it, or "
                              "`verify_tls: false` to encrypt without checking", failed
                              ) from failed
        except _ERRORS as failed:
            if ftp is not None:
                ftp.close()
            raise self._error(f"{who} {stage}", failed) from failed

    def _list_once(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        ftp = self._connect()
        try:
            entries = _list_dir(ftp, self._full(directory))
        except _ERRORS as failed:
            raise self._error(f"{self.describe(directory)} list", failed) from failed
        finally:
            _close(ftp)
        if entries is None:
            return []  # no such directory: nothing has arrived yet
        return sorted((RemoteFile(joined(directory, e.name), e.size, e.mtime)
                       for e in entries if e.kind == "file" and matches(e.name, name)),
                      key=lambda f: f.path)

    def _download_once(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        full = self._full(remote)
        ftp = self._connect()
        whole = False
        try:
            expected = _size(ftp, full)  # a missing file fails here, before a local one exists
            with open(local, "wb") as handle:
                ftp.retrbinary(f"RETR {full}", tracked(handle, expected).write,
                               blocksize=_BLOCK)
            check_size(f"{self.describe(remote)} download", local.stat().st_size, expected)
            whole = True
            return expected
        except _ERRORS as failed:
            raise self._error(f"{self.describe(remote)} download", failed) from failed
        finally:
            if not whole:
                local.unlink(missing_ok=True)
            _close(ftp)

    def transient_error(self, error: BaseException) -> bool | None:
        """4xx replies are the server's own "try again later" (421 too many users, 425 no data
        connection, 426 transfer aborted, 450/451 busy or local error); 5xx are refusals, and so
        is 452 (the server's disk is full: a retry seconds later fills it again)."""
        if isinstance(error, ftplib.error_temp) and str(error)[:3] == "452":
            return False
        if isinstance(error, ftplib.error_temp | ftplib.error_reply | ftplib.error_proto):
            return True
        if isinstance(error, ftplib.error_perm):
            return False
        return super().transient_error(error)

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        final = self._full(remote)
        partial = partial_beside(final)
        expected = local.stat().st_size
        ftp = self._connect()
        for path in list(litter):  # left by an attempt whose connection was cut
            try:
                ftp.delete(path)
            except ftplib.error_perm:
                pass  # 550: already gone
            except _ERRORS:
                continue  # the upload below meets the same trouble and says so
            litter.remove(path)
        stored = False  # a partial file may be on the server
        try:
            _makedirs(ftp, posixpath.dirname(final))
            if not overwrite and _exists(ftp, final) and self._kept_existing(
                    remote, retried, _size(ftp, final), expected):
                return expected
            stored = True
            with open(local, "rb") as handle:
                ftp.storbinary(f"STOR {partial}", tracked(handle), blocksize=_BLOCK)
            check_size(self.describe(remote), _size(ftp, partial), expected)
            # FTP has no no-clobber rename (RNTO replaces a file or refuses, as the server
            # likes), so with overwrite off the final name is checked again right before the
            # rename: a writer creating it within those two round trips is still overwritten.
            if not overwrite and _exists(ftp, final):
                raise TransferError(f"{self.describe(remote)} exists and overwrite is off")
            _rename(ftp, partial, final, overwrite)
            stored = False
            return _size(ftp, final)
        except _ERRORS as failed:
            raise self._error(f"{self.describe(remote)} upload", failed) from failed
        finally:
            if stored:
                # A dead connection cannot delete it (the next attempt will); the partial
                # name is never a final name.
                try:
                    ftp.delete(partial)
                except ftplib.error_perm:
                    pass  # 550: never created
                except _ERRORS:
                    litter.append(partial)
            _close(ftp)


def _close(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except _ERRORS:
        pass  # the server is gone or confused: just drop the connection
    finally:
        ftp.close()


def _size(ftp: ftplib.FTP, path: str) -> int:
    size = ftp.size(path)
    if size is None:
        raise ftplib.error_reply(f"SIZE {path}: no size in the reply")
    return size


def _exists(ftp: ftplib.FTP, path: str) -> bool:
    """A file of that name is there (a folder answers 550 too, but RNTO refuses a folder)."""
    try:
        _size(ftp, path)
        return True
    except ftplib.error_perm as refused:
        if str(refused)[:3] in _NOT_IMPLEMENTED:
            raise
        return False


def _rename(ftp: ftplib.FTP, partial: str, final: str, overwrite: bool) -> None:
    try:
        ftp.rename(partial, final)
    except ftplib.error_perm:
        if not (overwrite and _exists(ftp, final)):
            raise
        # Some servers (IIS) refuse to rename over a file: move the old one aside first, and
        # back if the new one cannot take its place, so the final name is never left empty.
        aside = partial_beside(final)
        ftp.rename(final, aside)
        try:
            ftp.rename(partial, final)
        except _ERRORS:
            with contextlib.suppress(*_ERRORS):
                ftp.rename(aside, final)
            raise
        with contextlib.suppress(*_ERRORS):
            ftp.delete(aside)


def _makedirs(ftp: ftplib.FTP, directory: str) -> None:
    """MKD each level from the top; an existing level (or one we may not create) answers 550.

    FTP has no portable "is this a folder" request, so refusals are not errors here: if a level
    is really missing, the STOR that follows fails and says so.
    """
    levels = []
    while directory not in ("", ".", "/", ".."):
        levels.append(directory)
        directory = posixpath.dirname(directory)
    for level in reversed(levels):
        with contextlib.suppress(ftplib.error_perm):
            ftp.mkd(level)


def _list_dir(ftp: ftplib.FTP, path: str, mlsd: bool = True) -> list[_Entry] | None:
    """One listing of a folder (MLSD; LIST only where MLSD is not implemented); None if absent."""
    try:
        if mlsd:
            try:
                return [_Entry(posixpath.basename(name), _kind(facts.get("type", "")),
                               int(facts.get("size") or 0), _mtime(facts.get("modify")))
                        for name, facts in ftp.mlsd(path)]
            except ftplib.error_perm as refused:
                if str(refused)[:3] not in _NOT_IMPLEMENTED:
                    raise
                mlsd = False
        lines: list[str] = []
        ftp.retrlines(f"LIST {path}", lines.append)
        return [entry for line in lines if (entry := _parse_list_line(line)) is not None]
    except ftplib.error_perm:
        if _missing(ftp, path, mlsd):
            return None
        raise


def _missing(ftp: ftplib.FTP, path: str, mlsd: bool) -> bool:
    """The folder is not there: its parent lists no folder of that name (or is missing too).

    Servers word "no such folder" differently (pyftpdlib: 501 on MLSD, 550 on LIST), so the
    parent is asked instead of the reply text being read.
    """
    parent, name = posixpath.split(path)
    if name in ("", ".", ".."):
        return False  # the login folder or the root: there, but refused
    entries = _list_dir(ftp, parent or ".", mlsd)
    return entries is None or not any(e.name == name and e.kind == "dir" for e in entries)


def _kind(mlsd_type: str) -> str:
    kind = mlsd_type.lower()
    return "file" if kind == "file" else "dir" if kind in ("dir", "cdir", "pdir") else "other"


def _mtime(modify: str | None) -> float | None:
    """MLSD's modify fact: YYYYMMDDHHMMSS[.fraction] in UTC."""
    if not modify:
        return None
    try:
        stamp = datetime.strptime(modify[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    fraction = modify[15:] if modify[14:15] == "." else ""
    return stamp + float(f"0.{fraction}") if fraction.isdigit() else stamp


def _parse_list_line(line: str) -> _Entry | None:
    """One line of a LIST reply: Unix `ls -l` style or Windows (IIS) style; None if neither."""
    unix = line.split(maxsplit=8)
    if len(unix) == 9 and unix[0][0] in "-dl" and unix[4].isdigit():
        kind = {"-": "file", "d": "dir"}.get(unix[0][0], "other")
        return _Entry(unix[8], kind, int(unix[4]), None)
    dos = line.split(maxsplit=3)
    if len(dos) == 4 and (dos[2] == "<DIR>" or dos[2].isdigit()):
        if dos[2] == "<DIR>":
            return _Entry(dos[3], "dir", 0, None)
        return _Entry(dos[3], "file", int(dos[2]), None)
    return None
