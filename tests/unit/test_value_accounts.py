"""Every value accounted for: `on_invalid`, `keep_raw`, invalid/changed counts, the
`standardisation` check, missing source columns, `empty_file` and `max_shrink`, loaded through
the real workflow into DuckDB and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from resources.warehouse import WarehouseResource
from tests.conftest import WorkflowRun

SPEC = """\
workflow: {{name: accounts}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  people: {{from: inbox, path: people.csv}}
domain_tables:
  people:
    from: people
{table}
"""
MESSY = ("id,email,phone,born,name\n"
         "1, Ann@Example.COM ,+1 212 555 0134,1975-03-02,Anne-Sophie\n"
         "2,n/a,call me,not a date,O'Brien\n"
         "3,not-an-email,,1980-01-01,ANNE-SOPHIE  MCDONALD\n"
         "4,bob@example.com,212.555.0135,,van der Berg\n")


def write(root: Path, table: str, content: str | bytes) -> Path:
    workflows = root / "workflows"
    (workflows / "inbox").mkdir(parents=True, exist_ok=True)
    (workflows / "accounts.yaml").write_text(SPEC.format(table=table))
    target = workflows / "inbox" / "people.csv"
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    return workflows


def warehouse(root: Path, url: str | None) -> WarehouseResource:
    return WarehouseResource(url=url or f"duckdb:///{root / 'data' / 'warehouse.duckdb'}")


def failure(run: WorkflowRun) -> str:
    for event in run.result.all_events:
        if event.is_step_failure and event.step_key == "domain__people":
            data = event.step_failure_data
            return data.user_failure_data.description if data.user_failure_data else \
                data.error.message
    raise AssertionError(f"domain__people did not fail: {run.failures()}")


ACCOUNTED = """\
    bad_rows: skip
    standardisation: {blocking: false}
    columns:
      id: {tag: id}
      email: {tag: email, keep_raw: true, max_invalid: 10%}
      phone: {tag: phone, default_country_code: "1", on_invalid: keep}
      born: {tag: date, on_invalid: reject}
      name: {tag: full_name}
"""


def test_every_value_is_accounted_for(warehouse_url: str | None, stagecoach_env: Path,
                                      workflow_runner: Callable[..., WorkflowRun]) -> None:
    workflows = write(stagecoach_env, ACCOUNTED, MESSY)
    run = workflow_runner(workflows, "accounts")
    assert run.success, run.failures()
    meta = run.metadata("domain", "people")
    assert (meta["invalid/email"], meta["changed/email"]) == (2, 1)
    assert (meta["invalid/phone"], meta["changed/phone"]) == (1, 2)
    assert (meta["invalid/born"], meta["changed/born"]) == (1, 0)  # typed: never "changed"
    assert meta["invalid_examples/email"] == "n/a, not-an…"  # never a whole value
    assert meta["invalid_examples/phone"] == "cal…"
    assert (meta["invalid/name"], meta["changed/name"]) == (0, 1)  # only the all-caps one
    assert meta["rows_rejected"] == 1 and meta["dagster/row_count"] == 3
    said = [e.user_message for e in run.instance.all_logs(run.result.run_id)
            if "bad row" in e.user_message]
    assert said and said[0].startswith(  # `bad_rows: skip`, yet this row went to the rejects
        "domain table `people`: 1 bad row rejected to stagecoach.rejects: "), said
    wh = warehouse(stagecoach_env, warehouse_url)
    rows = sorted(wh.fetch('SELECT id, email, email_raw, phone, name FROM "domain"."people"'))
    assert rows == [("1", "ann@example.com", "Ann@Example.COM", "+12125550134", "Anne-Sophie"),
                    ("3", None, "not-an-email", None, "Anne-Sophie McDonald"),
                    ("4", "bob@example.com", "bob@example.com", "+12125550135", "van der Berg")]
    columns = {r[0] for r in wh.fetch("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'people'")}
    assert not [c for c in columns if c.startswith("_stagecoach")], columns  # helpers dropped
    assert wh.fetch(f"SELECT line, reason FROM stagecoach.rejects WHERE run_id = "
                    f"{wh.placeholder.format('run')}", {"run": run.result.run_id}) == [
        (3, "`born`: 'not a…' is not a valid date")]
    [check] = run.result.get_asset_check_evaluations()
    assert check.check_name == "standardisation" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == "`email`: 2 of 4 values invalid (50.0%, max 10%)"


def test_on_invalid_fail_names_file_line_column_and_a_masked_value(
        warehouse_url: str | None, stagecoach_env: Path,
        workflow_runner: Callable[..., WorkflowRun]) -> None:
    table = """\
    columns:
      id: {tag: id}
      email: {tag: email, on_invalid: fail}
      phone: {tag: text}
      born: {tag: text}
      name: {tag: text}
"""
    workflows = write(stagecoach_env, table, "id,email,phone,born,name\n1,a@b.co,,,\n")
    assert workflow_runner(workflows, "accounts").success
    (workflows / "inbox" / "people.csv").write_text(MESSY)
    run = workflow_runner(workflows, "accounts")
    src = workflows / "inbox" / "people.csv"
    assert failure(run) == (
        "domain table `people`: 2 rows with a value that `on_invalid: fail` column(s) email "
        f"cannot read, nothing was loaded; domain.people is unchanged: {src}:3: `email`: 'n/a' "
        f"is not a valid email; {src}:4: `email`: 'not-an…' is not a valid email. Fix the "
        "file, or set `on_invalid: null`, "
        "`keep` or `reject` on the column")
    assert "not-an-email" not in failure(run)  # the raw line would show the value whole
    assert warehouse(stagecoach_env, warehouse_url).fetch(
        'SELECT id, email FROM "domain"."people"') == [("1", "a@b.co")]


def test_a_misspelt_source_column_fails_and_an_optional_one_is_reported(
        stagecoach_env: Path, workflow_runner: Callable[..., WorkflowRun]) -> None:
    table = """\
    columns:
      id: {tag: id}
      phone: {source: phone_num, tag: phone, default_country_code: "1"}
"""
    workflows = write(stagecoach_env, table, MESSY)
    src = workflows / "inbox" / "people.csv"
    assert failure(workflow_runner(workflows, "accounts")) == (
        f"domain table `people`: {src}:1: missing required column(s) phone_num (column "
        "`phone`) (the header has: id, email, phone, born, name). Fix the file or the feed's "
        "`source:` names (or set `optional: true` on a column a file may lack); nothing was "
        "loaded; domain.people is unchanged.")
    write(stagecoach_env, table.replace("tag: phone,", "tag: phone, optional: true,"), MESSY)
    run = workflow_runner(workflows, "accounts")
    assert run.success, run.failures()
    assert run.metadata("domain", "people")["absent_columns"] == (
        f"- `phone` (source `phone_num`) is not in `{src}`")


@pytest.mark.parametrize(("policy", "expected"), [
    ("fail", None), ("zero_rows", []), ("keep_table", [("1",), ("2",), ("3",)])])
def test_empty_file(policy: str, expected: list | None, warehouse_url: str | None,
                    stagecoach_env: Path, workflow_runner: Callable[..., WorkflowRun]) -> None:
    table = f"    empty_file: {policy}\n    columns:\n      id: {{tag: id}}\n"
    workflows = write(stagecoach_env, table, "id\n1\n2\n3\n")
    assert workflow_runner(workflows, "accounts").success
    (workflows / "inbox" / "people.csv").write_bytes(b"")
    run = workflow_runner(workflows, "accounts")
    rows = sorted(warehouse(stagecoach_env, warehouse_url).fetch(
        'SELECT id FROM "domain"."people"'))
    if expected is None:
        assert failure(run) == (
            f"domain table `people`: {workflows / 'inbox' / 'people.csv'}: the file is empty "
            "(0 bytes), so it has no header; ask the sender to send it again (it may have been "
            "sent before it was written). Nothing was loaded; domain.people is unchanged.")
        assert rows == [("1",), ("2",), ("3",)]
    else:
        assert run.success, run.failures()
        assert rows == expected


def test_max_shrink_refuses_a_collapse_and_keeps_the_table(
        warehouse_url: str | None, stagecoach_env: Path,
        workflow_runner: Callable[..., WorkflowRun]) -> None:
    table = "    columns:\n      id: {tag: id}\n"
    workflows = write(stagecoach_env, table, "id\n" + "".join(f"{i}\n" for i in range(1000)))
    assert workflow_runner(workflows, "accounts").success
    (workflows / "inbox" / "people.csv").write_text("id\n1\n2\n3\n")
    run = workflow_runner(workflows, "accounts")
    src = workflows / "inbox" / "people.csv"
    assert failure(run) == (
        "domain table `people`: the load would take domain.people from 1,000 rows to 3 (100% "
        "fewer), more than `max_shrink: 90%` allows; nothing was loaded; domain.people is "
        f"unchanged. Check the files ({src}); if the drop is expected, raise `max_shrink` on "
        "domain_tables.people (100% allows any drop)")
    wh = warehouse(stagecoach_env, warehouse_url)
    assert wh.fetch('SELECT count(*) FROM "domain"."people"') == [(1000,)]
    (workflows / "inbox" / "people.csv").write_text("id\n")  # header only: the same refusal
    assert "from 1,000 rows to 0" in failure(workflow_runner(workflows, "accounts"))
    write(stagecoach_env, table + "    max_shrink: 100%\n", "id\n1\n2\n3\n")
    assert workflow_runner(workflows, "accounts").success
    assert wh.fetch('SELECT count(*) FROM "domain"."people"') == [(3,)]


def test_a_blocking_standardisation_check_stops_the_run(
        stagecoach_env: Path, workflow_runner: Callable[..., WorkflowRun]) -> None:
    table = ACCOUNTED.replace("blocking: false", "blocking: true")
    run = workflow_runner(write(stagecoach_env, table, MESSY), "accounts")
    [check] = run.result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert not run.success  # a failed blocking check fails the run


def test_changed_flags_past_one_mask_are_counted_per_column() -> None:
    """64 text-result columns need two changed masks (62 bits each): every column's count comes
    from its own bit, the highest bit of the first mask included."""
    import duckdb

    from assets import spec, value_accounts
    from resources.warehouse import quote_ident

    names = [f"c{i}" for i in range(64)]
    table = spec.DomainTable.model_validate(
        {"from": "people", "columns": {n: {"tag": "email"} for n in names}})
    bits = value_accounts.changed_bits(table, names)
    assert bits["c61"] == ("_stagecoach_changed_0", 1 << 61)
    assert bits["c62"] == ("_stagecoach_changed_1", 1)
    # column i changed in rows 0..i (i + 1 rows of 64), never invalid
    changed = {n: f"row <= {i}" for i, n in enumerate(names)}
    items = ", ".join([*(f"'x' AS {quote_ident(n)}" for n in names),
                       *(f"CAST(NULL AS VARCHAR) AS {quote_ident(value_accounts.INVALID + n)}"
                         for n in names),
                       *value_accounts.changed_masks(table, names, changed)])
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE t AS SELECT {items} FROM range(64) r(row)")
        accounts = value_accounts.count(lambda sql, a: con.execute(sql, a).fetchall(), "t",
                                        table, names)
    assert {n: a.changed for n, a in accounts.items()} == {n: i + 1 for i, n in enumerate(names)}
    assert all(a.invalid == 0 and a.present == 64 for a in accounts.values())


DATED = """\
workflow: {{name: dated_{backend}, start_date: 2026-11-01}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  people: {{from: inbox, path: "people_{{{{ ds_nodash }}}}.csv"}}
domain_tables:
  dated_people_{backend}:
    from: people
    columns:
      id: {{tag: id}}
      email: {{tag: email}}
      name: {{tag: name}}
"""


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_changed_counts_of_a_day_loaded_into_an_existing_table(
        backend: str, stagecoach_env: Path, monkeypatch: pytest.MonkeyPatch,
        workflow_runner: Callable[..., WorkflowRun], request: pytest.FixtureRequest) -> None:
    """The second day goes into the table the first made (the changed mask is added to it,
    counted for that day's rows alone, then dropped with the other helper columns)."""
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", url)
    else:
        url = f"duckdb:///{stagecoach_env / 'data' / 'warehouse.duckdb'}"
    workflows = stagecoach_env / "workflows"
    (workflows / "inbox").mkdir(parents=True)
    (workflows / "dated.yaml").write_text(DATED.format(backend=backend))
    (workflows / "inbox" / "people_20261102.csv").write_text(
        "id,email,name\n1,Ann@Example.COM,ANN\n2,bob@example.com,Bob\n")
    (workflows / "inbox" / "people_20261103.csv").write_text(
        "id,email,name\n3,cy@example.com,cy\n4,n/a,Dee\n5,Ed@Example.com,ed\n")
    table = f"dated_people_{backend}"
    instance = dg.DagsterInstance.ephemeral()
    for day, expected in (("2026-11-02", (1, 0, 1)), ("2026-11-03", (1, 1, 2))):
        run = workflow_runner(workflows, f"dated_{backend}", day, instance=instance)
        assert run.success, run.failures()
        meta = run.metadata("domain", table)
        assert (meta["changed/email"], meta["invalid/email"], meta["changed/name"]) == expected
    columns = [c for (c,) in WarehouseResource(url=url).fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = "
        f"'{table}'")]
    assert not [c for c in columns if c.startswith("_stagecoach")], columns


def masked(value: str) -> str:
    """The mask as specified: values of up to 4 characters whole, else the first
    min(7, half) characters then `…`."""
    return value if len(value) <= 4 else value[:min(7, len(value) // 2)] + "…"


def test_the_stored_mask_is_the_specified_mask() -> None:
    """The load stores invalid values masked by DuckDB (`mask_sql`): the text the spec says
    for short, long and non-ASCII values, combining accents included."""
    import duckdb

    from assets import value_accounts

    values = ["", "x", "n/a", "abcd", "abcde", "not-an-email", "+44 20 7946 0000",
              "josé.garcía@exämple", "李小龙李小龙", "e\u0301e\u0301e\u0301e\u0301", "a" * 300,
              "\U0001f600" * 9]
    with duckdb.connect() as con:
        got = [con.execute(f"SELECT {value_accounts.mask_sql('$v')}", {"v": v}).fetchone()[0]
               for v in values]
    assert got == [masked(v) for v in values]
    assert got[5] == "not-an…" and got[3] == "abcd"
