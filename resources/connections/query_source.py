"""Queries fetched at run time (over HTTP(S) or from a file connection), with a local copy.

Every successful fetch refreshes the copy (written under a partial name, then renamed); when the
source cannot be reached (refused or dropped connection, timeout, 408/429/5xx) the copy is used
and the caller is told so, so a night run survives a query server that is down. A source that
answers but refuses (401, 403, 404, a missing file, a wrong password, an unsafe path, too large,
not UTF-8) is not hidden behind the copy: that is a setting to fix.
"""

import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from resources.channels.http_post import tls_context
from resources.connections.files import (
    FileConnection,
    TransferError,
    UnsafePath,
    partial_name,
    redact,
)
from resources.connections.retry import causes, socket_transient

MAX_QUERY_BYTES = 1_000_000  # a query file larger than this is not a query
_UNREACHABLE_STATUSES = {408, 429, 500, 502, 503, 504}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirect)


class SourceUnreachable(Exception):
    """The source did not answer (connection refused, timeout, 5xx): a retry or the copy helps."""


class SourceRefused(Exception):
    """The source answered but will not serve the query: its settings need fixing."""


@dataclass(frozen=True)
class Fetched:
    """A fetched query's text, and a warning when a cached copy stood in for it."""

    text: str
    warning: str | None = None  # set when the cached copy stands in for the source


def describe_url(url: str) -> str:
    """The URL without its query string or credentials (either may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
           f"{parts.path}"


def _decoded(data: bytes, where: str) -> str:
    if len(data) > MAX_QUERY_BYTES:
        raise SourceRefused(f"{where} is larger than {MAX_QUERY_BYTES:,} bytes: not a query")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as bad:
        raise SourceRefused(f"{where} is not UTF-8 text (byte {bad.start})") from None


def fetch_url(url: str, token: str | None, header: str, scheme: str | None,
              ca_file: str | None, timeout_seconds: float) -> str:
    """GET the query; redirects are refused (they could carry the token elsewhere)."""
    where = describe_url(url)
    request = urllib.request.Request(url, headers={"User-Agent": "stagecoach-query"})
    if token:
        request.add_header(header, f"{scheme} {token}" if scheme else token)
    try:
        tls = tls_context(ca_file, True)
        opener = _OPENER if tls is None else urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPSHandler(context=tls))
        with opener.open(request, timeout=timeout_seconds) as reply:
            data = reply.read(MAX_QUERY_BYTES + 1)
    except urllib.error.HTTPError as answer:
        status = answer.code
        answer.close()
        if status in _UNREACHABLE_STATUSES:
            raise SourceUnreachable(f"{where} answered {status}") from None
        if 300 <= status < 400:
            raise SourceRefused(f"{where} redirects ({status}); redirects are not followed "
                                "(a token could go elsewhere): give the final address") from None
        hint = "; check the token" if status in (401, 403) else ""
        raise SourceRefused(f"{where} answered {status}{hint}") from None
    except urllib.error.URLError as failed:
        reason = redact(str(failed.reason), token)
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            raise SourceRefused(f"{where}: the server's certificate is not trusted; set "
                                "`ca_file` to the CA that signed it") from None
        raise SourceUnreachable(f"{where} cannot be reached: {reason}") from None
    except OSError as failed:  # a timeout, a reset connection
        raise SourceUnreachable(f"{where} cannot be reached: "
                                f"{redact(str(failed), token) or type(failed).__name__}"
                                ) from None
    return _decoded(data, where)


def fetch_file(connection: FileConnection, path: str) -> str:
    """Download the query file to a temporary file and read it."""
    try:
        where = connection.describe(path)
    except UnsafePath as unsafe:
        raise SourceRefused(str(unsafe)) from None
    with tempfile.TemporaryDirectory(prefix="stagecoach-query-") as folder:
        local = Path(folder) / "query.sql"
        try:
            connection.download(path, local)
        except (TransferError, OSError) as failed:
            if _transient(connection, failed):
                raise SourceUnreachable(f"{where} cannot be fetched: {failed}") from None
            raise SourceRefused(f"{where} cannot be fetched: {failed}") from None
        return _decoded(local.read_bytes(), where)


def _transient(connection: FileConnection, failed: Exception) -> bool:
    """Whether the server was unreachable or dropped the connection (the cached copy may stand
    in), rather than refusing: a missing file, a wrong password, an unsafe path."""
    if isinstance(failed, UnsafePath):
        return False
    judge = getattr(connection, "is_transient", None)  # the connection kind's own verdict
    if isinstance(failed, TransferError) and judge is not None:
        return bool(judge(failed))
    return any(socket_transient(e) for e in causes(failed) if isinstance(e, OSError))


def cached_fetch(fetch: Callable[[], str], cache_file: Path) -> Fetched:
    """The query from its source, else from the copy of the last successful fetch."""
    try:
        text = fetch()
    except SourceUnreachable as failed:
        if not cache_file.is_file():
            raise SourceUnreachable(f"{failed}, and no copy is cached yet (one is kept after "
                                    "the first successful fetch)") from None
        saved = datetime.fromtimestamp(cache_file.stat().st_mtime, UTC)
        return Fetched(cache_file.read_text(encoding="utf-8"),
                       f"{failed}; using the copy cached {saved:%Y-%m-%d %H:%M:%S} UTC")
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(partial_name(cache_file.name))
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, cache_file)
    return Fetched(text)
