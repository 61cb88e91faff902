"""Which failures of a query's file source may hide behind the cached copy: only a server that
cannot be reached. A missing file, a refused login or an unsafe path is a setting to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.connections.folder import FolderResource
from resources.connections.query_source import (
    SourceRefused,
    SourceUnreachable,
    cached_fetch,
    fetch_file,
)
from resources.connections.sftp import SftpResource
from tests.servers_ssh import free_port


def _cached(tmp_path: Path) -> Path:
    cache = tmp_path / "cache" / "step-abc.sql"
    cache.parent.mkdir()
    cache.write_text("select 'stale'")
    return cache


@pytest.mark.fault
@pytest.mark.parametrize("path", ["missing.sql", "../outside.sql"])
def test_a_missing_file_or_unsafe_path_is_refused_despite_the_cache(
        tmp_path: Path, path: str) -> None:
    folder = FolderResource(path=str(tmp_path / "queries"), retries=0)
    (tmp_path / "outside.sql").write_text("select 1")
    with pytest.raises(SourceRefused):
        cached_fetch(lambda: fetch_file(folder, path), _cached(tmp_path))


@pytest.mark.fault
def test_a_refused_login_is_refused_despite_the_cache(
        tmp_path: Path, sshd, sftp_password_account) -> None:
    account = sftp_password_account
    (account.folder / "q.sql").write_text("select 1")
    conn = SftpResource(host=sshd.host, port=sshd.port, username=account.username,
                        password="not-the-password", known_hosts=str(sshd.known_hosts_path),
                        base_path=str(account.folder), retries=0)
    with pytest.raises(SourceRefused) as refused:
        cached_fetch(lambda: fetch_file(conn, "q.sql"), _cached(tmp_path))
    assert "not-the-password" not in str(refused.value)


@pytest.mark.fault
def test_an_unreachable_server_falls_back_to_the_cache(tmp_path: Path, sshd) -> None:
    conn = SftpResource(host="127.0.0.1", port=free_port(), username="nobody",
                        password="x", known_hosts=str(sshd.known_hosts_path), retries=0,
                        timeout_seconds=5)
    with pytest.raises(SourceUnreachable):
        fetch_file(conn, "q.sql")
    fetched = cached_fetch(lambda: fetch_file(conn, "q.sql"), _cached(tmp_path))
    assert fetched.text == "select 'stale'" and "using the copy cached" in fetched.warning
