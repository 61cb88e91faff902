"""The bad-spec catalogue of the fetched-query, etl, report and deliver steps: each mistake with its
exact messages (the other automation mistakes are in test_spec_catalogue.py)."""

from pathlib import Path

import pytest

from orchestration.spec_loader import load_workflow_text
from tests.unit.test_spec_catalogue import VALID, errors_of

STEPS = """\
automations:
  reports:
    steps:
      - {name: fetch, kind: sql, sql_source: {connection: vendor_sftp, path: queries/daily.sql}}
      - name: remote
        kind: sql
        sql_url: {url: "https://queries.example.com/daily.sql", token: {env: QUERY_TOKEN}}
      - {name: check, kind: alarm, query_url: "https://queries.example.com/count.sql",
         allow_statements: [select], condition: ">", threshold: 0}
      - {name: shape, kind: etl, from: sales.daily, into: work.daily,
         computed: {double: "amount * 2"}, filter: "amount > {{ params.threshold }}"}
      - {name: totals, kind: etl, from: sales.daily, into: work.totals, group_by: [order_id],
         aggregates: {total: "sum(amount)"}}
      - name: pdf
        kind: report
        title: Daily
        tables: [{sql: "select * from work.totals", max_rows: 20}]
        chart: {type: bar, sql: "select order_id, total from work.totals"}
      - {name: send, kind: deliver, to: [vendor_sftp], path: "out/{{ ds }}",
         file: {name: "daily_{{ source_name }}"}, seal: {zip: true}}
"""
WITH_STEPS = VALID + STEPS
REPORT_CONTENT = """\
        tables: [{sql: "select * from work.totals", max_rows: 20}]
        chart: {type: bar, sql: "select order_id, total from work.totals"}
"""

URL_FIX = ("keep credentials out of the URL (it shows in logs and the spec): send them with "
           "`token: {env: VARIABLE_NAME}` (with `header:` and `scheme:` as the server expects)")

STEP_CATALOGUE = [
    ("two query sources", ("sql_source: {connection", 'sql: "select 1", sql_source: {connection'),
     ["wf.yaml:38 automations.reports.steps.0: give exactly one of `sql:`, `sql_file:`, "
      "`sql_source:` or `sql_url:`"]),
    ("no query at all", ('query_url: "https://queries.example.com/count.sql",', ""),
     ["wf.yaml:42 automations.reports.steps.2: give exactly one of `query:`, `query_source:` "
      "or `query_url:`",
      "wf.yaml:43 automations.reports.steps.2.allow_statements: only applies to a query "
      "fetched at run time (`query_source:` or `query_url:`)"]),
    ("query source on an unknown connection", ("connection: vendor_sftp, path",
                                               "connection: vendor_ftp, path"),
     ["wf.yaml:38 automations.reports.steps.0.sql_source.connection: unknown connection "
      "'vendor_ftp' (known: landing, vendor_sftp)"]),
    ("query source path leaving the base", ("path: queries/daily.sql", "path: ../daily.sql"),
     ["wf.yaml:38 automations.reports.steps.0.sql_source.path: '../daily.sql' goes up with "
      "'..'; give a path relative to the connection's base"]),
    ("literal token", ("token: {env: QUERY_TOKEN}", "token: s3cr3t-t0ken"),
     ["wf.yaml:41 automations.reports.steps.1.sql_url.token: is a secret: write "
      "{env: VARIABLE_NAME} and set that variable in the environment; a literal value is not "
      "accepted"]),
    ("token over plain http", ("https://queries.example.com/daily.sql",
                               "http://queries.example.com/daily.sql"),
     ["wf.yaml:41 automations.reports.steps.1.sql_url.url: a token is sent only over https "
      "(http would show it to the network); use an https URL"]),
    ("not an http url", ('"https://queries.example.com/count.sql"', '"ftp://q.example.com/x"'),
     ["wf.yaml:42 automations.reports.steps.2.query_url.url: must be an http:// or https:// "
      "address without spaces"]),
    ("password in a query url", ('"https://queries.example.com/count.sql"',
                                 '"https://bob:hunter2@queries.example.com/count.sql"'),
     ["wf.yaml:42 automations.reports.steps.2.query_url.url: holds a user name or password "
      f"before '@'; {URL_FIX}"]),
    ("token in a query url's query string", ('url: "https://queries.example.com/daily.sql"',
                                             'url: "https://queries.example.com/daily.sql?'
                                             'day=1&api_token=t0k3n"'),
     ["wf.yaml:41 automations.reports.steps.1.sql_url.url: its query parameter 'api_token' "
      f"looks like a credential; {URL_FIX}"]),
    ("allow-list without a fetched query", ('query_url: "https://queries.example.com/count.sql"',
                                            'query: "select 1"'),
     ["wf.yaml:43 automations.reports.steps.2.allow_statements: only applies to a query "
      "fetched at run time (`query_source:` or `query_url:`)"]),
    ("allow-list in capitals", ("allow_statements: [select]", "allow_statements: [SELECT]"),
     ["wf.yaml:43 automations.reports.steps.2.allow_statements.0: 'SELECT' does not match "
      "the pattern ^[a-z]+( [a-z]+){0,3}$"]),
    ("etl filter with a second statement", ('filter: "amount > {{ params.threshold }}"',
                                            'filter: "amount > 1; drop table sales.daily"'),
     ["wf.yaml:45 automations.reports.steps.3.filter: holds a `;`: give one SQL expression, "
      "not statements"]),
    ("etl expression with a comment", ('{double: "amount * 2"}', '{double: "amount -- * 2"}'),
     ["wf.yaml:45 automations.reports.steps.3.computed.double: holds a comment (-- or /*), "
      "which would hide the SQL after it"]),
    ("etl expression with a backtick", ('{double: "amount * 2"}', '{double: "`amount` * 2"}'),
     ["wf.yaml:45 automations.reports.steps.3.computed.double: holds a backtick, which DuckDB "
      "reads as a quote: use \"double quotes\""]),
    ("etl aggregate with an open parenthesis", ('{total: "sum(amount)"}', '{total: "sum(amount"}'),
     ["wf.yaml:47 automations.reports.steps.4.aggregates.total: opens a parenthesis it never "
      "closes"]),
    ("etl columns beside a group by", ("group_by: [order_id],", "group_by: [order_id], "
                                                                "columns: [order_id],"),
     ["wf.yaml:46 automations.reports.steps.4.columns: with `group_by` or `aggregates` the "
      "output is the group_by columns and the aggregates: leave `columns` out"]),
    ("etl aggregate named as a group_by column", ('{total: "sum(amount)"}',
                                                  '{order_id: "sum(amount)"}'),
     ["wf.yaml:47 automations.reports.steps.4.aggregates.order_id: 'order_id' is both a "
      "group_by column and an aggregate; rename the aggregate"]),
    ("etl computed column left out of columns", ('{double: "amount * 2"},',
                                                 '{double: "amount * 2"}, columns: [amount],'),
     ["wf.yaml:45 automations.reports.steps.3.computed.double: computed column 'double' is "
      "not in `columns`, so it would be dropped; add it there"]),
    ("etl unknown parameter in the filter", ('"amount > {{ params.threshold }}"',
                                             '"amount > {{ params.limit }}"'),
     ["wf.yaml:45 automations.reports.steps.3.filter: template does not render: "
      "UndefinedError: 'dict object' has no attribute 'limit'"]),
    ("etl table name with a dash", ("into: work.daily", "into: work.daily-copy"),
     ["wf.yaml:44 automations.reports.steps.3.into: 'work.daily-copy' does not match the "
      "pattern ^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$"]),
    ("report with nothing in it", (REPORT_CONTENT, ""),
     ["wf.yaml:48 automations.reports.steps.5: a report needs `tables:` and/or a `chart:` "
      "(what to show)"]),
    ("report chart of an unknown type", ("type: bar", "type: pie"),
     ["wf.yaml:52 automations.reports.steps.5.chart.type: unknown value; input should be "
      "'bar' or 'line'"]),
    ("report table without a row limit", ("max_rows: 20", "max_rows: 0"),
     ["wf.yaml:51 automations.reports.steps.5.tables.0.max_rows: Input should be greater than "
      "or equal to 1"]),
    ("report file that is not a pdf", ("title: Daily", "title: Daily\n        file_name: a/b.csv"),
     ["wf.yaml:51 automations.reports.steps.5.file_name: a report's file name is one plain "
      "name ending in .pdf"]),
    ("report through a file connection", ("title: Daily", "title: Daily\n        connection: "
                                                          "landing"),
     ["wf.yaml:51 automations.reports.steps.5.connection: a report step needs a sql "
      "connection, not folder"]),
    ("deliver to an unknown connection", ("to: [vendor_sftp]", "to: [vendor_sfpt]"),
     ["wf.yaml:53 automations.reports.steps.6.to.0: unknown connection 'vendor_sfpt' (known: "
      "landing, vendor_sftp)"]),
    ("deliver to a mail address, not a connection", ("to: [vendor_sftp]",
                                                     "to: ops@example.com"),
     ["wf.yaml:53 automations.reports.steps.6.to: unknown connection 'ops@example.com' (known: "
      "landing, vendor_sftp)"]),
    ("deliver with mail but no smtp destination", ("seal: {zip: true}}",
                                                   "seal: {zip: true}, mail: {to: [a@b.io]}}"),
     ["wf.yaml:54 automations.reports.steps.6.mail: `mail:` is set but no destination is an "
      "`smtp` connection"]),
    ("deliver with file options it cannot apply", ('file: {name: "daily_{{ source_name }}"}',
                                                   'file: {type: psv, header: false}'),
     ["wf.yaml:54 automations.reports.steps.6.file: header, type: a deliver step sends the "
      "chain's files as they are; only `file.name` applies"]),
    ("deliver step named like an activation", ("activations:\n  export:",
                                               "activations:\n  reports__send:"),
     ["wf.yaml:53 automations.reports.steps.6.name: an activation is named 'reports__send', "
      "the name this step's files carry in the file history; rename one"]),
    ("deliver with an unknown template variable", ('path: "out/{{ ds }}"',
                                                   'path: "out/{{ params.region }}"'),
     ["wf.yaml:53 automations.reports.steps.6.path: template does not render: "
      "UndefinedError: 'dict object' has no attribute 'region'"]),
]


def test_the_steps_load(tmp_path: Path) -> None:
    workflow = load_workflow_text(WITH_STEPS, "wf.yaml", tmp_path)
    steps = workflow.automations["reports"].steps
    assert steps[1].sql_url.header == "Authorization" and steps[1].sql_url.scheme == "Bearer"
    assert steps[2].query_url.url == "https://queries.example.com/count.sql"  # the short form
    assert steps[5].tables[0].max_rows == 20
    assert steps[6].destinations == ["vendor_sftp"] and steps[6].seal.zip


@pytest.mark.bad_input
@pytest.mark.parametrize(("old", "new", "expected"),
                         [pytest.param(old, new, expected, id=name)
                          for name, (old, new), expected in STEP_CATALOGUE])
def test_bad_step(old: str, new: str, expected: list[str], tmp_path: Path) -> None:
    assert old in WITH_STEPS, "the mutation must apply to the valid base"
    assert errors_of(WITH_STEPS.replace(old, new, 1), tmp_path) == expected
