"""Which connection errors are retried, and how the retry loop reports: the classification
each kind applies to its library's errors, without a server (the servers are in
tests/faults/test_connection_faults.py)."""

from __future__ import annotations

import errno
import ftplib
import logging
import ssl
from pathlib import Path

import paramiko
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError, EndpointConnectionError, SSLError
from smbprotocol.exceptions import SMBAuthenticationError, SMBConnectionClosed

from resources.connections.files import RemoteFile, TransferError, UnsafePath
from resources.connections.folder import FolderResource
from resources.connections.ftp import FtpResource
from resources.connections.retry import (
    MAX_DELAY_SECONDS,
    is_permanent,
    retry_delay,
    usable_files,
    with_retries,
)
from resources.connections.s3 import S3BucketResource
from resources.connections.sftp import SftpResource, UnknownHostKey
from resources.connections.smb import SmbResource
from resources.warehouse import lost_connection_only

pytestmark = pytest.mark.timeout(20)


def raised_from(error: BaseException) -> TransferError:
    wrapped = TransferError(f"somewhere op: {error}")
    wrapped.__cause__ = error
    return wrapped


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def socket_cut_ssh() -> paramiko.SSHException:
    """An SSHException paramiko raised from a reset socket."""
    error = paramiko.SSHException("Unable to open channel.")
    error.__cause__ = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    return error


def ssl_error(cause: ssl.SSLError) -> SSLError:
    """botocore's SSLError (a botocore ConnectionError) as its HTTP session raises it."""
    error = SSLError(endpoint_url="https://127.0.0.1:1", error=cause)
    error.__context__ = cause
    return error


FOLDER = FolderResource(path="/tmp")
SFTP = SftpResource(host="h", username="u")
FTP = FtpResource(host="h", username="u")
SMB = SmbResource(host="h", share="s", username="u")
S3 = S3BucketResource(bucket="b")

CLASSIFIED = [
    (FOLDER, OSError(errno.ESTALE, "Stale file handle"), True),  # an NFS server restarted
    (FOLDER, OSError(errno.EIO, "Input/output error"), True),
    (FOLDER, PermissionError(errno.EACCES, "Permission denied"), False),
    (FOLDER, FileNotFoundError(errno.ENOENT, "No such file"), False),
    (FOLDER, OSError(errno.ENOSPC, "No space left"), False),
    (SFTP, ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
    (SFTP, paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): OSError()}), True),
    (SFTP, paramiko.SSHException("Error reading SSH protocol banner"), True),
    (SFTP, EOFError(), True),
    (SFTP, paramiko.AuthenticationException("Authentication failed."), False),
    (SFTP, paramiko.SSHException("Server connection dropped: "), True),
    (SFTP, paramiko.SSHException("SSH session not active"), True),
    (SFTP, socket_cut_ssh(), True),
    (SFTP, paramiko.SSHException("OpenSSH private key file checkints do not match"), False),
    (SFTP, paramiko.SSHException("Invalid key"), False),
    (SFTP, paramiko.SSHException("not a valid RSA private key file"), False),
    (SFTP, paramiko.SSHException("No authentication methods available"), False),
    (SFTP, paramiko.ChannelException(1, "Administratively prohibited"), False),
    (SFTP, UnknownHostKey("the server's host key is unknown"), False),
    (FTP, ftplib.error_temp("421 Too many connections"), True),
    (FTP, ftplib.error_temp("451 Local error"), True),
    (FTP, ftplib.error_temp("425 Can't open data connection"), True),
    (FTP, ftplib.error_temp("426 Connection closed; transfer aborted"), True),
    (FTP, ftplib.error_temp("450 Requested file action not taken"), True),
    (FTP, ftplib.error_temp("452 Insufficient storage space"), False),  # the disk is full
    (FTP, ftplib.error_perm("530 Login incorrect."), False),
    (FTP, ftplib.error_perm("550 No such file"), False),
    (FTP, TimeoutError("timed out"), True),
    (SMB, SMBConnectionClosed("SMB socket was closed"), True),
    (SMB, SMBAuthenticationError("logon failure"), False),
    (SMB, OSError(errno.EBADF, "Bad file descriptor"), True),  # sent on a socket the server cut
    (S3, EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
    (S3, ssl_error(ssl.SSLCertVerificationError(1, "CERTIFICATE_VERIFY_FAILED")), False),
    (S3, ssl_error(ssl.SSLError(1, "WRONG_VERSION_NUMBER")), False),
    (S3, ssl_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")), True),
    (S3, client_error("SlowDown", 503), True),
    (S3, client_error("InternalError", 500), True),
    (S3, client_error("AccessDenied", 403), False),
    (S3, client_error("NoSuchKey", 404), False),
]


@pytest.mark.parametrize(("conn", "error", "transient"), CLASSIFIED,
                         ids=[f"{type(c).__name__}-{type(e).__name__}-{i}"
                              for i, (c, e, _) in enumerate(CLASSIFIED)])
def test_transient_or_permanent(conn, error: BaseException, transient: bool):
    assert conn.is_transient(raised_from(error)) is transient


def test_stagecoach_own_refusals_are_never_retried():
    """A checksum or size mismatch, an unsafe path: the server answered, a retry cannot help."""
    assert not SFTP.is_transient(TransferError("x: ETag does not match the file's md5"))
    assert not SFTP.is_transient(UnsafePath("path '../x' goes up"))


@pytest.mark.parametrize(("message", "transient"), [
    ("server closed the connection unexpectedly", True),
    ("terminating connection due to administrator command", True),
    ('connection to server at "127.0.0.1", port 5432 failed: Connection refused', True),
    ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication '
     'failed for user "x"', False),
    ('relation "nope" does not exist', False),
])
def test_sql_source_errors(message: str, transient: bool):
    class OperationalError(Exception):
        """Named as psycopg2's: what the classification reads."""
    error = sa.exc.OperationalError("SELECT 1", {}, OperationalError(message))
    assert lost_connection_only(raised_from(error)) is transient


@pytest.mark.parametrize("sqlstate", ["3D000", "28000", "28P01"])
def test_sql_refusals_by_sqlstate_whatever_the_language(sqlstate: str):
    """A server with translated messages (lc_messages) still says which refusal it is."""
    class OperationalError(Exception):
        pgcode = sqlstate

    error = sa.exc.OperationalError("SELECT 1", {}, OperationalError(
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  la base de données '
        '« crm » n\'existe pas'))  # the client's words in English, the server's in French
    assert lost_connection_only(raised_from(error)) is False
    OperationalError.pgcode = None
    assert lost_connection_only(raised_from(error)) is True  # the text alone: a lost connection


def test_retries_log_and_then_succeed(caplog: pytest.LogCaptureFixture):
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise raised_from(ConnectionResetError(errno.ECONNRESET, "reset by peer"))
        return "done"

    with caplog.at_level(logging.WARNING):
        assert with_retries(flaky, connection="vendor", operation="download", retries=3,
                            backoff_seconds=0, transient=SFTP.is_transient) == "done"
    assert len(calls) == 3
    assert "connection `vendor` download: attempt 1 of 4 failed" in caplog.text
    assert "connection `vendor` download: attempt 2 of 4 failed" in caplog.text


def test_zero_retries_means_one_attempt():
    calls = []

    def down() -> None:
        calls.append(1)
        raise raised_from(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))

    with pytest.raises(TransferError, match=r"^connection `vendor` list failed after 1 "
                                            r"attempt \("):
        with_retries(down, connection="vendor", operation="list", retries=0,
                     backoff_seconds=0, transient=SFTP.is_transient)
    assert len(calls) == 1


def test_a_missing_file_fails_at_once(tmp_path: Path):
    """A long backoff would time this test out if a missing file were retried."""
    folder = FolderResource(path=str(tmp_path), connection_name="landing", retries=5,
                            backoff_seconds=60)
    with pytest.raises(TransferError, match=r"^connection `landing` download: .*absent\.csv"):
        folder.download("absent.csv", tmp_path / "copy.csv")
    assert not (tmp_path / "copy.csv").exists()


def test_each_wait_is_capped():
    """10 retries x backoff_seconds 300 would otherwise wait 300 x 2**9 s (42 hours) once."""
    assert retry_delay(1, 1.0) >= 1.0
    assert [retry_delay(n, 300) for n in range(1, 11)] == [MAX_DELAY_SECONDS] * 10
    assert retry_delay(10, 1.0) == MAX_DELAY_SECONDS  # 512 s uncapped


def test_a_refusal_is_marked_permanent_and_a_lost_connection_is_not():
    """The mark a courier reads to bypass its step's RetryPolicy (assets/couriers.py)."""
    def refused() -> None:
        raise raised_from(paramiko.AuthenticationException("Authentication failed."))

    def down() -> None:
        raise raised_from(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))

    for connection in ("vendor", ""):
        with pytest.raises(TransferError) as failed:
            with_retries(refused, connection=connection, operation="list", retries=3,
                         backoff_seconds=0, transient=SFTP.is_transient)
        assert is_permanent(failed.value)
        with pytest.raises(TransferError) as failed:
            with_retries(down, connection=connection, operation="list", retries=1,
                         backoff_seconds=0, transient=SFTP.is_transient)
        assert not is_permanent(failed.value)
    assert is_permanent(UnsafePath("path '../x' goes up"))


def test_a_listing_skips_names_a_path_cannot_hold(caplog: pytest.LogCaptureFixture):
    """A hostile server may list any name: one that goes up or holds a separator or a control
    character is skipped, naming it; the rest are kept."""
    listed = [RemoteFile(p, 1) for p in ("in/../../evil.csv", "in/a\\b.csv", "in/new\nline.csv",
                                         "in/a\x00.csv", "in/good.csv", "in/..x.csv")]
    with caplog.at_level(logging.WARNING):
        kept = usable_files(listed, "connection `vendor` list")
    assert [f.path for f in kept] == ["in/good.csv", "in/..x.csv"]
    for bad in listed[:4]:
        assert f"connection `vendor` list: skipped {bad.path!r}: the name " in caplog.text
