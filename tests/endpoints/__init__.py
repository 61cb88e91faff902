"""One test endpoint per file-connection kind, for the conformance suite.

An `Endpoint` pairs the resource under test (rooted at a fresh, empty base folder) with an
independent client of the same server (the OpenSSH `sftp` program, boto3, ftplib, smbclient or
the file system), so what arrived is never checked by the code that sent it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resources.connections.files import FileConnection


@dataclass
class Endpoint:
    kind: str
    connection: FileConnection
    # Independent client: relative path -> bytes / raw listing of a folder (hidden names too).
    read: Callable[[str], bytes]
    listing: Callable[[str], dict[str, int]]
    put: Callable[[str, bytes], None]
    # The same connection with a wrong password or key, for the login-failure test.
    bad_login: FileConnection | None
    # Settings to rebuild the connection in another process: (module:Class, keyword arguments).
    rebuild: tuple[str, dict[str, Any]]
    secret: str | None = None  # a password that must never show in an error message
    # Whether an upload can read a pipe (S3's transfer manager needs a seekable file).
    reads_pipes: bool = True
    # True while an upload to out/ is under way at the server (default: a partial name shows).
    in_flight: Callable[[], bool] | None = None
    # Everything the server holds outside the base (path -> size), seen by the independent
    # client: a path that escaped the base would show here.
    outside: Callable[[], dict[str, int]] | None = None
