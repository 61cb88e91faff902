"""The warehouse goes away mid-load and comes back: the table is the old one or the new one,
never a mix, and a re-run completes.

The shared PostgreSQL on 5432 must stay up for other tests, so this test starts a throwaway
server of its own (initdb + postgres as the `postgres` user, on a free loopback port) and
SIGKILLs it, postmaster and backends, while a large domain-table load is in its COPY.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.conftest import free_port, need_server, wait_for_port
from tests.specs import MEMBERS_WORKFLOW

pytestmark = [pytest.mark.timeout(300), pytest.mark.fault]

PG_BIN = Path("/usr/lib/postgresql/15/bin")

FINGERPRINT = ("SELECT count(*), md5(coalesce(string_agg(member_id || '|' || "
               "coalesce(email, ''), ',' ORDER BY member_id), '')) FROM domain.members")


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL server this test may kill: `start()` (again after a kill) and `kill()`."""

    folder: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.folder / "data"), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
             "-c", "fsync=on"],
            user="postgres", stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "server.log", "ab"))  # noqa: SIM115
        if not wait_for_port(self.port, self.process, timeout=60):
            raise RuntimeError(f"the throwaway PostgreSQL did not start on port {self.port}: "
                               f"{(self.folder / 'server.log').read_text()[-2000:]}")
        # Accepting connections (crash recovery may still be running right after a kill).
        deadline = time.monotonic() + 60
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p",
                              str(self.port)], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the throwaway PostgreSQL never became ready"
            time.sleep(0.1)

    def backends(self) -> list[int]:
        """The postmaster's children (backends, checkpointer, ...), by their process ids."""
        assert self.process is not None
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                children.append(int(entry.name))
        return children

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started: the server is gone at once,
        as after a power cut, with no chance to finish what it was doing."""
        assert self.process is not None
        children = self.backends()
        os.kill(self.process.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and "zombie" not in
                  Path(f"/proc/{pid}/status").read_text().lower() for pid in children):
            assert time.monotonic() < deadline, "postgres backends survived SIGKILL"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    if not (PG_BIN / "initdb").exists():
        need_server("postgres", f"no PostgreSQL server binaries in {PG_BIN}")
    try:
        postgres_user = pwd.getpwnam("postgres")
    except KeyError:
        need_server("postgres", "no `postgres` user to run a throwaway PostgreSQL server as")
    # Not under pytest's tmp_path: its folders are private to root, and postgres may not run
    # as root.
    folder = Path(tempfile.mkdtemp(prefix="stagecoach_pg_fault_"))
    os.chown(folder, postgres_user.pw_uid, postgres_user.pw_gid)
    server = ThrowawayPostgres(folder, free_port())
    try:
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
                        "-A", "trust", "--no-sync"], user="postgres", check=True,
                       capture_output=True)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def members_csv(path: Path, prefix: str, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("member_id,email\n")
        for i in range(rows):
            out.write(f"{prefix}{i:07d},{prefix.lower()}{i}@example.com\n")


def fingerprint(url: str) -> tuple[int, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            count, digest = conn.execute(sa.text(FINGERPRINT)).one()
        return count, digest
    finally:
        engine.dispose()


def kill_during_copy(server: ThrowawayPostgres, killed: threading.Event,
                     problems: list[str]) -> None:
    """Watch pg_stat_progress_copy and kill the server once the load's COPY has rows in."""
    engine = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 120
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                copied = conn.execute(sa.text(
                    "SELECT tuples_processed FROM pg_stat_progress_copy")).scalars().all()
                if copied and copied[0] > 1000:
                    break
                time.sleep(0.01)
            else:
                problems.append("the load never reached its COPY")
                return
        engine.dispose()
        server.kill()
        killed.set()
    except Exception as failed:  # reported by the test, not lost in the thread
        problems.append(repr(failed))
    finally:
        engine.dispose()


def step_failure(run) -> dg.DagsterEvent:
    failures = [e for e in run.result.all_events if e.is_step_failure]
    assert len(failures) == 1, [e.message for e in failures]
    return failures[0]


def test_the_warehouse_killed_mid_copy_keeps_the_old_table(
        throwaway_postgres: ThrowawayPostgres, stagecoach_env: Path,
        monkeypatch: pytest.MonkeyPatch, workflow_runner, reliability) -> None:
    server = throwaway_postgres
    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", server.url)
    workflows = stagecoach_env / "workflows"
    (workflows / "inbox").mkdir(parents=True)
    (workflows / "members_load.yaml").write_text(MEMBERS_WORKFLOW)
    members = workflows / "inbox" / "members.csv"

    # The old table: 5,000 members.
    members_csv(members, "OLD", 5_000)
    first = workflow_runner(workflows, "members_load")
    assert first.success, first.failures()
    old = fingerprint(server.url)
    assert old[0] == 5_000

    # The new file is large enough that its COPY takes a while; the server dies during it.
    new_rows = 600_000
    members_csv(members, "NEW", new_rows)
    killed, problems = threading.Event(), []
    killer = threading.Thread(target=kill_during_copy, args=(server, killed, problems))
    killer.start()
    started = time.monotonic()
    second = workflow_runner(workflows, "members_load")
    killer.join(timeout=120)
    assert not problems, problems
    assert killed.is_set()
    assert not second.success
    failure = step_failure(second)
    error = failure.step_failure_data.error
    # A message for a person: the step's own Failure naming the table, the operation and the
    # warehouse, not a driver exception escaping as a raw traceback.
    assert error.cls_name == "Failure", error.to_string()
    assert "domain table `members`" in error.message
    assert "load domain.members failed" in error.message
    assert f"127.0.0.1:{server.port}" in error.message
    assert "domain.members is unchanged" in error.message
    fault_seconds = time.monotonic() - started

    # The server comes back (crash recovery): the old table, exactly.
    server.start()
    after = fingerprint(server.url)
    reliability.rows_checked("domain.members after PostgreSQL was killed mid-COPY",
                             old[0], after[0])
    assert after == old

    # A re-run completes with the new rows.
    third = workflow_runner(workflows, "members_load")
    assert third.success, third.failures()
    count, _ = fingerprint(server.url)
    reliability.rows_checked("domain.members re-run after the warehouse came back",
                             new_rows, count)
    assert count == new_rows
    engine = sa.create_engine(server.url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM domain.members "
                                    "WHERE member_id LIKE 'OLD%'")).scalar() == 0
    engine.dispose()
    print(f"killed mid-COPY and failed cleanly in {fault_seconds:.1f} s")
