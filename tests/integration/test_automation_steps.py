"""The automation steps beyond inline SQL, on a real instance: queries fetched at run time (a
loopback HTTP server, an SFTP server), ETL on DuckDB and PostgreSQL, PDF reports read back."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pypdf
import pytest
import sqlalchemy as sa

from tests import servers_http
from tests.integration.test_automations import WF, run, warehouse, write_spec
from tests.servers_http import HttpRecorder, Reply, closed_port_url

pytestmark = pytest.mark.timeout(180)
stoppable_http = servers_http.stoppable_http


def failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step's own message (a retryable error's, not Dagster's wrapper)."""
    errors = [e.event_specific_data.error for e in result.all_events if e.is_step_failure]
    return [re.sub(r"^[\w.]+: ", "", (error.cause or error).message.strip(), count=1)
            for error in errors]


def logs_of(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.message for e in instance.all_logs(result.run_id))


def output_metadata(result: dg.ExecuteInProcessResult, op: str) -> dict:
    [event] = [e for e in result.all_events
               if e.event_type_value == "STEP_OUTPUT" and e.step_key == op]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


FETCHED = """-- the nightly numbers
USE other_database;
SET threads = 1;
select range as n, {{ params.region }} as region, 'lit-4f2a' as tag  -- ; not an end
from range(10) where range >= {{ params.minimum }};
"""


@pytest.mark.fault
def test_a_query_over_http_is_cached_and_used_while_the_server_is_down(
        stagecoach_env: Path, stoppable_http: tuple[HttpRecorder, object],
        monkeypatch: pytest.MonkeyPatch):
    server, stop = stoppable_http
    path = server.unique_path("sql")
    server.script(path, then=Reply(200, FETCHED))
    monkeypatch.setenv("QUERY_TOKEN", "tok-9c1d7e3f5a")
    defs = write_spec(stagecoach_env, f"""
  nightly:
    params: {{minimum: 6}}
    steps:
      - {{name: numbers, kind: sql, into: work.numbers,
         sql_url: {{url: "{server.url}{path}", token: {{env: QUERY_TOKEN}}}}}}
  never_fetched:
    steps:
      - {{name: numbers, kind: sql, sql_url: "{closed_port_url()}/nightly.sql"}}
""")
    with dg.instance_for_test() as instance:
        first = run(defs, "nightly", instance)
        first_logs = logs_of(instance, first)
        stop()  # the query server goes away
        params = {"minimum": 8, "region": "eu"}
        config = {"ops": {"nightly__numbers": {"config": {"params": params}}}}
        second = run(defs, "nightly", instance, config)
        second_logs = logs_of(instance, second)
        missing = run(defs, "never_fetched", instance)
    assert first.success, failures(first)
    [request] = server.requests(path)
    assert request.headers["Authorization"] == "Bearer tok-9c1d7e3f5a"
    assert "removed 2 statement(s) of a type not allowed" in first_logs
    assert "USE other_database; SET threads = 1" in first_logs
    preview = output_metadata(first, "nightly__numbers")["query"]
    assert preview.startswith("```sql\nselect range as n")  # comments go with their statement
    assert "USE" not in preview and "SET" not in preview
    assert "lit-4f2a" not in preview and "as region, '…' as tag" in preview  # masked
    [cached] = (stagecoach_env / "data" / "query_cache" / WF).glob("nightly__numbers-*.sql")
    assert cached.read_text() == FETCHED  # kept as fetched: parameters are applied per run
    assert second.success, failures(second)
    assert warehouse(stagecoach_env, "select count(*), min(region) from work.numbers") == [
        (2, "eu")]  # the cached query, with this launch's minimum
    assert re.search(r"http://127\.0\.0\.1:\d+/sql-\w+ cannot be reached: .*; using the copy "
                     r"cached \d{4}-\d\d-\d\d", second_logs), second_logs
    assert "tok-9c1d7e3f5a" not in first_logs + second_logs
    [message] = failures(missing)
    assert message.startswith("step never_fetched__numbers: query source http://127.0.0.1:")
    assert "/nightly.sql cannot be reached" in message
    assert "no copy is cached yet" in message


@pytest.mark.bad_input
def test_a_refusing_query_server_fails_at_once_without_the_cache(
        stagecoach_env: Path, stoppable_http: tuple[HttpRecorder, object]):
    server, _ = stoppable_http
    path = server.unique_path("sql")
    server.script(path, Reply(200, "select 1 as x"), then=Reply(401, "who are you?"))
    defs = write_spec(stagecoach_env, f"""
  guarded:
    retry: {{count: 2, delay: 1s}}
    steps:
      - {{name: one, kind: sql, into: work.one, sql_url: "{server.url}{path}"}}
""")
    with dg.instance_for_test() as instance:
        assert run(defs, "guarded", instance).success  # fetched, and cached
        refused = run(defs, "guarded", instance)
    [message] = failures(refused)
    assert re.fullmatch(r"step guarded__one: the query source refused: http://127\.0\.0\.1:\d+"
                        r"/sql-\w+ answered 401; check the token", message), message
    assert len(server.requests(path)) == 2  # a refusal is not retried
    assert not [e for e in refused.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


SFTP_SCRIPT = """
create schema if not exists fetched;
create or replace table fetched.events as select 1 as id, 'a;b' as note;
ATTACH '{attach}' AS elsewhere;
insert into fetched.events values (2, $$it's; fine$$);
COPY fetched.events TO '{copy}';
INSTALL httpfs; LOAD httpfs;
PRAGMA enable_profiling;
/* a comment; with /* nested */ semicolons; */
insert into fetched.events values (3, 'E''s');
"""


@pytest.mark.security
def test_a_query_from_sftp_runs_only_the_allowed_statements(stagecoach_env: Path, sshd):
    base = sshd.root / f"queries-{stagecoach_env.name}"
    base.mkdir()
    attach, copy = stagecoach_env / "attached.duckdb", stagecoach_env / "copied.csv"
    (base / "events.sql").write_text(SFTP_SCRIPT.format(attach=attach, copy=copy))
    (base / "count.sql").write_text("SET threads = 1; select count(*) from fetched.events")
    defs = write_spec(stagecoach_env, """
  from_sftp:
    steps:
      - {name: load, kind: sql, sql_source: {connection: queries, path: events.sql}}
      - {name: enough, kind: alarm, query_source: {connection: queries, path: count.sql},
         allow_statements: [select], condition: "<", threshold: 3}
""", extra=f"""  queries:
    kind: sftp
    host: {sshd.host}
    port: {sshd.port}
    username: {sshd.username}
    private_key_path: {sshd.private_key_path}
    known_hosts: {sshd.known_hosts_path}
    base_path: {base}""")
    with dg.instance_for_test() as instance:
        result = run(defs, "from_sftp", instance)
        logs = logs_of(instance, result)
    assert result.success, failures(result)
    assert warehouse(stagecoach_env, "select id, note from fetched.events order by id") == [
        (1, "a;b"), (2, "it's; fine"), (3, "E's")]
    assert not attach.exists() and not copy.exists()
    assert "removed 5 statement(s)" in logs
    for removed in ("ATTACH", "COPY fetched.events TO", "INSTALL httpfs", "LOAD httpfs",
                    "PRAGMA enable_profiling"):
        assert removed in logs
    assert output_metadata(result, "from_sftp__enough")["value"] == 3.0
    assert "removed 1 statement(s) of a type not allowed (allowed: select)" in logs


def test_etl_filters_computes_and_groups_on_each_warehouse(
        stagecoach_env: Path, warehouse_url: str | None):
    url = warehouse_url
    defs = write_spec(stagecoach_env, """
  sales_etl:
    params: {minimum: 2}
    steps:
      - {name: sales, kind: sql, into: etl.sales, sql: "
          select 'north' as region, 3 as qty, 2.5 as price union all
          select 'north', 1, 10.0 union all select 'south', 4, 1.0 union all
          select 'south', 1, 100.0 union all select 'east', 2, 3.0"}
      - name: lines
        kind: etl
        from: etl.sales
        into: etl.lines
        computed: {amount: "qty * price", label: "upper(region)"}
        filter: "qty >= {{ params.minimum }} and label <> 'EAST'"
        columns: [region, amount, label]
      - name: totals
        kind: etl
        from: etl.sales
        into: etl.totals
        computed: {amount: "qty * price"}
        group_by: [region]
        aggregates: {orders: "count(*)", revenue: "sum(amount)"}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "sales_etl", instance)
    assert result.success, failures(result)
    queries = ["select region, amount, label from etl.lines order by region",
               "select region, orders, revenue from etl.totals order by region"]
    if url:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            lines, totals = ([tuple(r) for r in conn.execute(sa.text(q))] for q in queries)
            conn.execute(sa.text("drop schema etl cascade"))
            conn.commit()
        engine.dispose()
    else:
        lines, totals = (warehouse(stagecoach_env, q) for q in queries)
    assert [(r, float(a), label) for r, a, label in lines] == [
        ("north", 7.5, "NORTH"), ("south", 4.0, "SOUTH")]
    assert [(r, int(n), float(v)) for r, n, v in totals] == [
        ("east", 1, 6.0), ("north", 2, 17.5), ("south", 2, 104.0)]
    sql = output_metadata(result, "sales_etl__totals")["sql"]
    assert 'GROUP BY "region"' in sql and 'FROM "etl"."sales"' in sql


@pytest.mark.bad_input
def test_etl_with_a_bad_expression_fails_without_touching_the_table(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, """
  broken_etl:
    retry: {count: 2, delay: 1s}
    steps:
      - {name: source, kind: sql, into: etl.source, sql: "select 1 as a"}
      - {name: first, kind: etl, from: etl.source, into: etl.out}
      - {name: bad, kind: etl, from: etl.source, into: etl.out,
         computed: {b: "no_such_column + 1"}}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "broken_etl", instance)
    [message] = failures(result)
    assert message.startswith("step broken_etl__bad: the ETL from etl.source failed: ")
    assert "no_such_column" in message and message.endswith("(not retried)")
    assert warehouse(stagecoach_env, "select a from etl.out") == [(1,)]  # the old table stays


NEXT_STEP = """
import sys
from pathlib import Path
report = Path(sys.argv[1])
print(f"got {report.name} of {report.stat().st_size} bytes, starts {report.read_bytes()[:5]!r}")
"""


def test_a_report_renders_tables_and_a_chart_into_a_pdf_the_next_step_gets(
        stagecoach_env: Path):
    scripts = stagecoach_env / "workflows" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "receive.py").write_text(NEXT_STEP)
    defs = write_spec(stagecoach_env, """
  monthly_report:
    steps:
      - {name: sales, kind: sql, into: rep.sales, sql: "
          select 'north' as region, 12.5 as revenue union all
          select 'south <b>&', 7.0 union all select 'east', 3.25"}
      - name: report
        kind: report
        title: Monthly sales
        file_name: "sales_{{ ds_nodash }}.pdf"
        tables:
          - {title: By region, sql: "select region, revenue from rep.sales order by revenue desc"}
          - {title: Many rows, sql: "select range as n from range(500)", max_rows: 40}
        chart: {type: bar, title: Revenue, sql: "select region, revenue from rep.sales order
                by region"}
      - {name: receive, kind: python, script: scripts/receive.py}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "monthly_report", instance)
        logs = logs_of(instance, result)
    assert result.success, failures(result)
    [pdf] = (stagecoach_env / "data" / "reports" / WF / result.run_id).iterdir()
    assert re.fullmatch(r"sales_\d{8}\.pdf", pdf.name)
    assert f"got {pdf.name} of {pdf.stat().st_size} bytes, starts b'%PDF-'" in logs
    assert output_metadata(result, "monthly_report__report")["report"] == str(pdf)
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)
    lines = text.splitlines()
    assert "Monthly sales" in lines and "By region" in lines and "Revenue" in lines
    for region, revenue in (("north", "12.50"), ("south <b>&", "7.00"), ("east", "3.25")):
        assert region in lines and revenue in lines  # escaped: a value is never markup
    assert "39" in lines and "40" not in lines  # rows 0..39 shown, the rest cut
    assert "Only the first 40 rows are shown; the query returned more (raise max_rows to " \
           "show more)." in text.replace("\n", " ")


@pytest.mark.bad_input
def test_a_report_chart_needs_numbers(stagecoach_env: Path):
    defs = write_spec(stagecoach_env, """
  bad_chart:
    steps:
      - name: report
        kind: report
        title: Words
        chart: {type: line, sql: "select 'a' as label, 'many' as amount"}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "bad_chart", instance)
    assert failures(result) == ["step bad_chart__report: the chart's amount column holds "
                                "'many', not a number"]
    assert not (stagecoach_env / "data" / "reports" / WF / result.run_id).exists()


@pytest.mark.fault
def test_a_report_that_fails_once_written_leaves_no_file(stagecoach_env: Path):
    """The PDF is whole under its partial name when the rename fails (a folder holds the final
    name): neither the partial file nor a final one is left behind."""
    import uuid

    defs = write_spec(stagecoach_env, """
  blocked_report:
    steps:
      - {name: report, kind: report, title: Blocked, file_name: blocked.pdf,
         tables: [{sql: "select 1 as n"}]}
""")
    run_id = str(uuid.uuid4())
    folder = stagecoach_env / "data" / "reports" / WF / run_id
    (folder / "blocked.pdf").mkdir(parents=True)
    (folder / "blocked.pdf" / "keep").write_text("a folder under the report's name")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(f"{WF}_blocked_report_job").execute_in_process(
            instance=instance, run_id=run_id, raise_on_error=False)
    [message] = failures(result)
    assert "blocked.pdf" in message, message
    assert sorted(p.name for p in folder.iterdir()) == ["blocked.pdf"]  # no partial file
    assert (folder / "blocked.pdf").is_dir()  # and no report under the final name


def test_a_report_reads_a_postgresql_connection_and_stops_at_max_rows(
        stagecoach_env: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CRM_DB_URL", postgres_url)
    defs = write_spec(stagecoach_env, """
  crm_report:
    steps:
      - name: report
        kind: report
        title: Accounts
        connection: crm
        tables:
          - {title: Accounts, max_rows: 25, sql: "select n as id, 'account ' || n as name
             from generate_series(1, 100000) as n order by n"}
        chart: {type: line, x: day, y: signups, sql: "select 'ignored' as other,
                'd' || n as day, n * n as signups from generate_series(1, 12) as n"}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "crm_report", instance)
    assert result.success, failures(result)
    [pdf] = (stagecoach_env / "data" / "reports" / WF / result.run_id).iterdir()
    lines = "\n".join(p.extract_text() for p in pypdf.PdfReader(pdf).pages).splitlines()
    assert "account 25" in lines and "account 26" not in lines
    assert "signups by day" in lines and "d12" in lines and "ignored" not in lines


@pytest.mark.bad_input
def test_into_needs_exactly_one_statement_from_a_fetched_query(
        stagecoach_env: Path, stoppable_http: tuple[HttpRecorder, object]):
    server, _ = stoppable_http
    two, none = server.unique_path("two"), server.unique_path("none")
    server.script(two, then=Reply(200, "select 1 as x; select 2 as x"))
    server.script(none, then=Reply(200, "SET threads = 1; -- nothing else"))
    defs = write_spec(stagecoach_env, f"""
  two_selects:
    steps:
      - {{name: one, kind: sql, into: work.one, sql_url: "{server.url}{two}"}}
  nothing_left:
    steps:
      - {{name: one, kind: sql, sql_url: "{server.url}{none}"}}
""")
    with dg.instance_for_test() as instance:
        two_selects, nothing_left = (run(defs, name, instance)
                                     for name in ("two_selects", "nothing_left"))
    assert failures(two_selects) == ["step two_selects__one: `into` needs one SELECT; the "
                                     "fetched query has 2 statements"]
    [message] = failures(nothing_left)
    assert re.fullmatch(r"step nothing_left__one: the query from http://127\.0\.0\.1:\d+/none-\w+"
                        r" has no statement left to run \(allowed: select, .*\; removed 1\)",
                        message), message


def test_an_alarm_query_from_s3(stagecoach_env: Path, s3_endpoint: str,
                                monkeypatch: pytest.MonkeyPatch):
    import boto3

    monkeypatch.setenv("LAKE_KEY_ID", "testing")
    monkeypatch.setenv("LAKE_SECRET", "testing")
    bucket = f"queries-{stagecoach_env.name.replace('_', '-')[-30:]}".lower()
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="acme/checks/rows.sql",
                      Body=b"\xef\xbb\xbfselect count(*) from range({{ params.size }})")
    defs = write_spec(stagecoach_env, """
  lake_check:
    params: {size: 7}
    steps:
      - {name: rows, kind: alarm, query_source: {connection: lake, path: checks/rows.sql},
         condition: ">", threshold: 5}
""", extra=f"""  lake:
    kind: s3
    bucket: {bucket}
    prefix: acme
    endpoint_url: {s3_endpoint}
    region: us-east-1
    access_key_id: {{env: LAKE_KEY_ID}}
    secret_access_key: {{env: LAKE_SECRET}}""")
    with dg.instance_for_test() as instance:
        result = run(defs, "lake_check", instance)
    assert result.success, failures(result)
    metadata = output_metadata(result, "lake_check__rows")
    assert (metadata["value"], metadata["alarm"]) == (7.0, True)
    assert metadata["query_source"] == "connection lake: checks/rows.sql"


SMUGGLING = {
    # The reviewer's payload: a non-ASCII dollar tag, a backtick DuckDB does not end on.
    "tag": "select $é$ ` $é$; copy (select 42) to '{copy}'; attach ':memory:' as evil; "
           "select $é$ ` $é$",
    # A Jinja comment hides a quote from a split made before rendering.
    "jinja": "create table work.jinja as select 1 as x {{# ' #}}; copy (select 42) to "
             "'{copy}'; select 2 {{# ' #}}",
    # A Jinja filter block turns one checked statement into two once rendered.
    "filter": "select 1 {{% filter replace('X', ';') %}}X copy (select 42) to '{copy}'"
              "{{% endfilter %}}",
    # File-reading table functions and replacement scans: refused by DuckDB itself.
    "read_text": "create table work.leak as select * from read_text('{secret}')",
    "scan": "create table work.scan as select * from '{secret}'",
}


@pytest.mark.security
def test_a_fetched_query_cannot_smuggle_statements_or_read_files_on_duckdb(
        stagecoach_env: Path, stoppable_http: tuple[HttpRecorder, object]):
    server, _ = stoppable_http
    secret = stagecoach_env / "secrets.csv"
    secret.write_text("name,value\nAPI_KEY,sk-9f8e7d\n")
    copies = {name: stagecoach_env / f"{name}.csv" for name in SMUGGLING}
    automations = ""
    for name, text in SMUGGLING.items():
        path = server.unique_path(name)
        server.script(path, then=Reply(200, text.format(copy=copies[name], secret=secret)))
        automations += f"""
  {name}:
    steps:
      - {{name: fetched, kind: sql, sql_url: "{server.url}{path}"}}
      - {{name: inline, kind: sql, into: work.{name}_after,
         sql: "select count(*) as n from read_csv('{secret}')"}}
"""
    defs = write_spec(stagecoach_env, automations)
    with dg.instance_for_test() as instance:
        results = {name: run(defs, name, instance) for name in SMUGGLING}
    assert not [p for p in copies.values() if p.exists()]  # no COPY ran
    for name in ("tag", "jinja", "filter"):
        assert results[name].success, (name, failures(results[name]))
    for name in ("read_text", "scan"):
        [message] = failures(results[name])
        assert message.startswith(f"step {name}__fetched: the query failed: "), message
    assert "file system operations are disabled" in failures(results["read_text"])[0]
    tables = {r[0] for r in warehouse(stagecoach_env, "select table_name from "
                                                      "information_schema.tables")}
    assert "leak" not in tables and "scan" not in tables and "jinja" in tables
    # The spec's own SQL in a later step of the same run keeps its file access.
    assert warehouse(stagecoach_env, "select n from work.tag_after") == [(1,)]
    attached = warehouse(stagecoach_env, "select database_name from duckdb_databases()")
    assert ("evil",) not in attached


@pytest.mark.fault
def test_a_refusing_file_source_is_not_hidden_behind_the_cache(stagecoach_env: Path):
    queries = stagecoach_env / "queries"
    queries.mkdir()
    (queries / "count.sql").write_text("select 5")
    defs = write_spec(stagecoach_env, """
  counted:
    retry: {count: 2, delay: 1s}
    steps:
      - {name: rows, kind: alarm, query_source: {connection: queries, path: count.sql},
         condition: ">", threshold: 10}
""", extra=f"  queries: {{kind: folder, path: {queries}}}")
    with dg.instance_for_test() as instance:
        first = run(defs, "counted", instance)
        (queries / "count.sql").unlink()  # a file that is gone: a setting to fix, not an outage
        second = run(defs, "counted", instance)
    assert first.success, failures(first)
    [message] = failures(second)
    assert message.startswith("step counted__rows: the query source refused: "), message
    assert "count.sql" in message
    assert not [e for e in second.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


@pytest.mark.fault
def test_the_cached_copy_belongs_to_the_whole_url(
        stagecoach_env: Path, stoppable_http: tuple[HttpRecorder, object]):
    """A query string is part of what is fetched: a copy of ?v=1 never stands in for ?v=2."""
    server, stop = stoppable_http
    path = server.unique_path("sql")
    server.script(path, then=Reply(200, "select 1 as x"))
    spec = """
  versioned:
    steps:
      - {{name: one, kind: sql, into: work.one, sql_url: "{url}"}}
"""
    with dg.instance_for_test() as instance:
        first = run(write_spec(stagecoach_env, spec.format(url=f"{server.url}{path}?v=1")),
                    "versioned", instance)
        stop()
        second = run(write_spec(stagecoach_env, spec.format(url=f"{server.url}{path}?v=2")),
                     "versioned", instance)
    assert first.success, failures(first)
    [message] = failures(second)
    assert "no copy is cached yet" in message, message


@pytest.mark.security
def test_a_fetched_query_on_postgresql_runs_its_selects_and_nothing_smuggled(
        stagecoach_env: Path, stoppable_http: tuple[HttpRecorder, object], postgres_url: str,
        monkeypatch: pytest.MonkeyPatch):
    import uuid

    monkeypatch.setenv("STAGECOACH_WAREHOUSE_URL", postgres_url)
    server, _ = stoppable_http
    role = f"smuggled_{uuid.uuid4().hex[:12]}"
    path = server.unique_path("pg")
    server.script(path, then=Reply(200, (
        "create schema if not exists fetched; "
        "create table fetched.t as select cast({{ params.minimum }} as int) as n, 'a;b' as note; "
        f"select $é$ ` $é$; create role {role}; select $é$ ` $é$; "
        "create schema sm grant create on database postgres to public; "
        "insert into fetched.t values ({{ params.minimum }} + 1, $$it's; fine$$)")))
    defs = write_spec(stagecoach_env, f"""
  pg_fetched:
    params: {{minimum: 6}}
    steps:
      - {{name: load, kind: sql, sql_url: "{server.url}{path}"}}
""")
    with dg.instance_for_test() as instance:
        result = run(defs, "pg_fetched", instance)
        logs = logs_of(instance, result)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.text(
                "select n, note from fetched.t order by n"))]
            roles = conn.execute(sa.text("select count(*) from pg_roles where rolname = :r"),
                                 {"r": role}).scalar()
            schemas = conn.execute(sa.text("select count(*) from information_schema.schemata "
                                           "where schema_name = 'sm'")).scalar()
            conn.execute(sa.text(f"drop role if exists {role}"))
            conn.commit()
    finally:
        engine.dispose()
    assert result.success, failures(result)
    assert rows == [(6, "a;b"), (7, "it's; fine")] and (roles, schemas) == (0, 0)
    assert "removed 2 statement(s)" in logs and f"create role {role}" in logs
