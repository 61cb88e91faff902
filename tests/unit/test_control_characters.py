"""NUL bytes and other control characters behave the same on DuckDB and PostgreSQL: a row
holding a NUL byte (which PostgreSQL cannot store as text) is a bad row with its file and line,
following `bad_rows`; other control characters are text like any other and load as written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import WorkflowRun
from tests.unit.test_value_accounts import warehouse

SPEC = """\
workflow: {{name: oddities}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  oddities: {{from: inbox, path: oddities.csv}}
domain_tables:
  oddities:
    from: oddities
{table}
"""


def write(root: Path, table: str, content: str | bytes) -> Path:
    """The workflow `oddities` (its own table: the PostgreSQL test database is shared) and its
    file."""
    workflows = root / "workflows"
    (workflows / "inbox").mkdir(parents=True, exist_ok=True)
    (workflows / "oddities.yaml").write_text(SPEC.format(table=table))
    target = workflows / "inbox" / "oddities.csv"
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    return workflows


TABLE = """\
    bad_rows: {policy}
    columns:
      id: {{tag: id}}
      name: {{tag: text}}
      email: {{tag: email}}
"""
CONTENT = (b"id,name,email\n1,Ann,ann@example.com\n2,B\x00ob,bob@example.com\n"
           b"3,C\x01arl\x7f,carl@example.com\n4,Dee,dee@exa\x00mple.com\n5,\x1bEve\x0b,eve@x.io\n")
REASON = ("a NUL byte (\\0) in a value: no warehouse can store it as text; remove it from the "
          "file")


@pytest.mark.parametrize("policy", ["reject", "skip"])
def test_a_nul_byte_makes_a_bad_row_on_every_warehouse(
        policy: str, warehouse_url: str | None, stagecoach_env: Path,
        workflow_runner: Callable[..., WorkflowRun]) -> None:
    run = workflow_runner(write(stagecoach_env, TABLE.format(policy=policy), CONTENT), "oddities")
    assert run.success, run.failures()
    meta = run.metadata("domain", "oddities")
    assert meta["dagster/row_count"] == 3
    assert (meta["rows_rejected"], meta["rows_skipped"]) == ((2, 0) if policy == "reject"
                                                             else (0, 2))
    wh = warehouse(stagecoach_env, warehouse_url)
    assert sorted(wh.fetch('SELECT id, name, email FROM "domain"."oddities"')) == [
        ("1", "Ann", "ann@example.com"), ("3", "C\x01arl\x7f", "carl@example.com"),
        ("5", "\x1bEve\x0b", "eve@x.io")]
    if policy == "reject":
        assert sorted(wh.fetch(f"SELECT line, reason, raw FROM stagecoach.rejects WHERE run_id = "
                               f"{wh.placeholder.format('run')}", {"run": run.result.run_id})) == [
            (3, REASON, "2,B\\0ob,bob@example.com"), (5, REASON, "4,Dee,dee@exa\\0mple.com")]


def test_a_nul_byte_fails_a_strict_load_naming_file_and_line(
        warehouse_url: str | None, stagecoach_env: Path,
        workflow_runner: Callable[..., WorkflowRun]) -> None:
    workflows = write(stagecoach_env, TABLE.format(policy="fail"), CONTENT)
    run = workflow_runner(workflows, "oddities")
    assert not run.success
    [message] = [e.step_failure_data.user_failure_data.description
                 for e in run.result.all_events
                 if e.is_step_failure and e.step_key == "domain__oddities"
                 and e.step_failure_data.user_failure_data]
    source = workflows / "inbox" / "oddities.csv"
    assert "domain table `oddities`: 2 bad rows, nothing was loaded" in message, message
    assert f"{source}:3: {REASON}" in message and f"{source}:5: {REASON}" in message, message
