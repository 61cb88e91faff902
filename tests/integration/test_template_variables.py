"""Every template variable the README lists renders in every place the README lists: parsed
from the README (so the test breaks when the docs drift), checked at load for each variable
in each place, then rendered for real in one workflow run (SQL, file names, a zip, a mail)
and one automation run (SQL, alarm, ETL, report, Python args)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from orchestration.definitions import build_definitions
from orchestration.spec_loader import SpecInvalid, load_workflow_text
from tests import servers_mail

pytestmark = pytest.mark.timeout(240)
smtp_plain = servers_mail.smtp_plain
README = (Path(__file__).resolve().parents[2] / "docs" / "spec-reference.md").read_text(
    encoding="utf-8")
TEMPLATES = README.split("## Templates\n", 1)[1].split("\n## ", 1)[0]
DAY = "2026-11-07"
PARAM = "region"
KNOWN = {  # the README's "section | keys" table, as (section, key) → where it goes in a spec
    ("couriers", "path"), ("couriers", "query"), ("databases", "sql"), ("queries", "sql"),
    ("activations", "path"), ("activations", "file.name"), ("activations", "seal.zip_name"),
    ("activations", "mail.subject"), ("activations", "mail.body"),
    ("automations", "sql"), ("automations", "query"), ("automations", "computed"),
    ("automations", "filter"), ("automations", "aggregates"), ("automations", "tables.sql"),
    ("automations", "chart.sql"), ("automations", "file_name"), ("automations", "args"),
    ("automations", "path"), ("automations", "file.name"), ("automations", "seal.zip_name"),
    ("automations", "mail.subject"), ("automations", "mail.body"),
    ("triggers", "when.path")}
DELIVER_KEYS = {"path", "file.name", "seal.zip_name", "mail.subject", "mail.body"}
SQL_KEYS = {"query", "sql", "computed", "filter", "aggregates", "tables.sql", "chart.sql"}


def documented_variables() -> list[str]:
    sentence = TEMPLATES.split("time zone:", 1)[1].split("In SQL", 1)[0]
    names = re.findall(r"`([^`]+)`", sentence)
    return [name.replace("<name>", PARAM) for name in names]


def documented_places() -> dict[tuple[str, str], bool]:
    """(section, key) → True where `run_id` is refused (the ¹ note)."""
    places = {}
    for row in re.findall(r"^\| (`.+?) \| (.+) \|$", TEMPLATES, re.M):
        for section in re.findall(r"`(\w+)`", row[0]):
            for key, mark in re.findall(r"`([\w.]+)`(¹?)", row[1]):
                places[(section, key)] = bool(mark)
    return places


VARIABLES = documented_variables()
PLACES = documented_places()


def test_the_readme_lists_the_variables_and_places_this_test_renders():
    assert VARIABLES[:2] == ["ds", "ds_nodash"] and {"run_id", "workflow"} <= set(VARIABLES)
    assert f"params.{PARAM}" in VARIABLES
    assert set(PLACES) == KNOWN, "a documented place this test does not render (or the reverse)"


def expression(variable: str, sql: bool) -> str:
    return f"x = {{{{ {variable} }}}}" if sql else f"f_{{{{ {variable} }}}}.txt"


def spec_with(place: tuple[str, str], template: str) -> str:
    """A small valid spec with `template` at `place` (and plain text everywhere else)."""
    section, key = place
    tree: dict = {"workflow": {"name": "tpl", "start_date": "2026-11-01",
                               "params": {PARAM: "eu"}},
                  "connections": {"landing": {"kind": "folder", "path": "landing"},
                                  "mailer": {"kind": "smtp", "host": "127.0.0.1",
                                             "security": "none", "from_address": "s@x.io"},
                                  "crm": {"kind": "sql", "url": {"env": "CRM_DB_URL"}}}}
    sql = f"select 1 as x where {template}"
    if section == "couriers":
        courier = ({"from": "landing", "path": template} if key == "path"
                   else {"from": "crm", "query": sql})
        tree["couriers"] = {"people": courier}
    elif section in ("databases", "queries"):
        table = {"sql": sql}
        tree[section] = ({"t": {"tables": {"vars": table}}} if section == "databases"
                         else {"vars": table})
    elif section == "activations":
        activation = {"query": "vars", "to": ["landing", "mailer"], "file": {"name": "a.csv"},
                      "mail": {"to": ["ops@x.io"]}, "seal": {"zip": True}}
        first, _, second = key.partition(".")
        target = activation if not second else activation.setdefault(first, {})
        target[second or first] = template
        tree["queries"] = {"vars": {"sql": "select 1 as x"}}
        tree["activations"] = {"out": activation}
    elif section == "automations" and key in DELIVER_KEYS:
        step = {"kind": "deliver", "to": ["landing", "mailer"], "mail": {"to": ["ops@x.io"]},
                "seal": {"zip": True}}
        first, _, second = key.partition(".")
        target = step if not second else step.setdefault(first, {})
        target[second or first] = template
        tree["automations"] = {"auto": {"steps": [step]}}
    elif section == "automations":
        step = {
            "sql": {"kind": "sql", "sql": sql},
            "query": {"kind": "alarm", "query": sql, "condition": ">", "threshold": 1},
            "computed": {"kind": "etl", "from": "a.b", "into": "c.d", "computed": {"y": template}},
            "filter": {"kind": "etl", "from": "a.b", "into": "c.d", "filter": template},
            "aggregates": {"kind": "etl", "from": "a.b", "into": "c.d", "group_by": ["x"],
                           "aggregates": {"n": f"count(*) filter (where {template})"}},
            "tables.sql": {"kind": "report", "title": "t", "tables": [{"sql": sql}]},
            "chart.sql": {"kind": "report", "title": "t", "chart": {"type": "bar", "sql": sql}},
            "file_name": {"kind": "report", "title": "t", "file_name": template + ".pdf",
                          "tables": [{"sql": "select 1"}]},
            "args": {"kind": "python", "script": __file__, "args": [template]},
        }[key]
        tree["automations"] = {"auto": {"steps": [step]}}
    else:
        tree["automations"] = {"auto": {"steps": [{"kind": "sql", "sql": "select 1"}]}}
        tree["triggers"] = {"drop": {"job": "auto", "when": {
            "kind": "file_change", "connection": "landing", "path": template}}}
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


@pytest.mark.parametrize("place", sorted(KNOWN), ids=lambda p: ".".join(p))
def test_every_documented_variable_loads_in_every_documented_place(place: tuple[str, str],
                                                                    tmp_path: Path):
    (tmp_path / "landing").mkdir()
    sql = place[1] in SQL_KEYS
    for variable in VARIABLES:
        text = spec_with(place, expression(variable, sql))
        if variable == "run_id" and PLACES[place]:
            with pytest.raises(SpecInvalid, match=r"\{\{ run_id \}\} is unknown here"):
                load_workflow_text(text, "wf.yaml", tmp_path)
            continue
        try:
            load_workflow_text(text, "wf.yaml", tmp_path)
        except SpecInvalid as invalid:
            pytest.fail(f"{variable} in {'.'.join(place)}: {invalid}")


def all_text(variables: list[str]) -> str:
    return "_".join(f"{{{{ {v} }}}}" for v in variables)


def all_sql(variables: list[str]) -> str:
    return "select " + ", ".join(f"{{{{ {v} }}}} as v{i}" for i, v in enumerate(variables))


def all_equal(variables: list[str]) -> str:
    return " and ".join(f"v{i} = {{{{ {v} }}}}" for i, v in enumerate(variables))


def expected(run_id: str) -> list[str]:
    values = {"ds": DAY, "ds_nodash": "20261107", "yesterday_ds": "2026-11-06",
              "yesterday_ds_nodash": "20261106", "month_start": "2026-11-01", "year": "2026",
              "month": "11", "day": "07", f"params.{PARAM}": "eu", "run_id": run_id,
              "workflow": "tpl"}
    return [values[v] for v in VARIABLES]


def test_every_variable_renders_in_a_real_workflow_run(
        stagecoach_env: Path, smtp_plain: servers_mail.SmtpServer):
    root = stagecoach_env
    without_run = [v for v in VARIABLES if v != "run_id"]
    landing, outbox = root / "landing", root / "outbox"
    landing.mkdir()
    outbox.mkdir()
    arrived = [value for v, value in zip(VARIABLES, expected(""), strict=True) if v != "run_id"]
    (landing / ("_".join(arrived) + ".csv")).write_text("id\n1\n")
    (root / "workflows").mkdir()
    text = all_text(VARIABLES)
    (root / "workflows" / "tpl.yaml").write_text(f"""
workflow: {{name: tpl, start_date: 2026-11-01, params: {{{PARAM}: eu}}}}
connections:
  landing: {{kind: folder, path: {landing}}}
  outbox: {{kind: folder, path: {outbox}}}
  mailer: {{kind: smtp, host: 127.0.0.1, port: {smtp_plain.port}, security: none,
            from_address: stagecoach@example.com}}
couriers:
  people: {{from: landing, path: "{all_text(without_run)}.csv"}}
domain_tables:
  people: {{from: people, columns: {{id: {{tag: id}}}}}}
databases:
  t:
    tables:
      vars: {{sql: "{all_sql(VARIABLES)} from domain.people"}}
queries:
  vars: {{sql: "select * from t.vars where {all_equal(VARIABLES)}"}}
activations:
  out:
    query: vars
    to: [outbox, mailer]
    path: "{text}"
    file: {{name: "{text}.csv"}}
    seal: {{zip: true, zip_name: "{text}.zip"}}
    mail: {{to: [ops@example.com], subject: "{text}", body: "{text}"}}
""", encoding="utf-8")
    defs = build_definitions(root / "workflows")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("tpl_job").execute_in_process(
            instance=instance, partition_key=DAY, raise_on_error=False)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events
                            if e.is_step_failure]
    rendered = "_".join(expected(result.run_id))
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as db:
        rows = db.execute("select * from query.vars").fetchall()
    assert [list(map(str, row)) for row in rows] == [expected(result.run_id)]
    assert (outbox / rendered / f"{rendered}.zip").is_file()
    [mail] = [m.message() for m in smtp_plain.all_received()
              if m.message()["Subject"] == rendered]
    assert mail.get_body(("plain",)).get_content().strip() == rendered


PRINT_ARGV = "import sys, pathlib\npathlib.Path(sys.argv[1]).with_suffix('.argv').write_text(" \
             "'\\n'.join(sys.argv[1:]))\n"


def test_every_variable_renders_in_a_real_automation_run(stagecoach_env: Path):
    root = stagecoach_env
    (root / "workflows").mkdir()
    (root / "workflows" / "argv.py").write_text(PRINT_ARGV, encoding="utf-8")
    text, equal = all_text(VARIABLES), all_equal(VARIABLES)
    computed = {f"c{i}": f"{{{{ {v} }}}}" for i, v in enumerate(VARIABLES)}
    aggregates = {f"a{i}": f"max({{{{ {v} }}}})" for i, v in enumerate(VARIABLES)}
    steps = [
        {"name": "vars", "kind": "sql", "into": "work.vars", "sql": all_sql(VARIABLES)},
        {"name": "check", "kind": "alarm", "query": f"select count(*) from work.vars where "
         f"{equal}", "condition": "!=", "threshold": 1, "stop": True},
        {"name": "etl", "kind": "etl", "from": "work.vars", "into": "work.etl",
         "computed": computed, "filter": equal},
        {"name": "grouped", "kind": "etl", "from": "work.vars", "into": "work.grouped",
         "group_by": ["v0"], "aggregates": aggregates},
        {"name": "report", "kind": "report", "title": "t", "file_name": f"{text}.pdf",
         "tables": [{"sql": f"select * from work.vars where {equal}"}],
         "chart": {"type": "bar", "sql": f"select v0 as x, 1 as y from work.vars where {equal}"}},
        {"name": "argv", "kind": "python", "script": "argv.py",
         "args": [f"{{{{ {v} }}}}" for v in VARIABLES]},
        {"name": "deliver", "kind": "deliver", "to": "outbox", "path": text,
         "file": {"name": f"{text}_{{{{ source_name }}}}"},
         "seal": {"zip": True, "zip_name": f"{text}.zip"}},
    ]
    spec = {"workflow": {"name": "tpl", "params": {PARAM: "eu"}},
            "connections": {"outbox": {"kind": "folder", "path": str(root / "outbox")}},
            "automations": {"auto": {"steps": steps}}}
    (root / "workflows" / "tpl.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    defs = build_definitions(root / "workflows")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("tpl_auto_job").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/scheduled_execution_time": f"{DAY}T04:00:00+00:00"})
    assert result.success, [e.step_failure_data.error.message for e in result.all_events
                            if e.is_step_failure]
    values = expected(result.run_id)
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as db:
        table = db.execute("select * from work.vars").fetchall()
        etl = db.execute(f"select {', '.join(computed)} from work.etl").fetchall()
        grouped = db.execute(f"select {', '.join(aggregates)} from work.grouped").fetchall()
    assert [list(map(str, r)) for r in table] == [values]
    assert [list(map(str, r)) for r in etl] == [values]
    assert [list(map(str, r)) for r in grouped] == [values]
    pdf = root / "data" / "reports" / "tpl" / result.run_id / ("_".join(values) + ".pdf")
    assert pdf.is_file()
    # the report's file first, then the args
    assert pdf.with_suffix(".argv").read_text().splitlines() == [str(pdf), *values]
    rendered = "_".join(values)
    with zipfile.ZipFile(root / "outbox" / rendered / f"{rendered}.zip") as packed:
        assert packed.namelist() == [f"{rendered}_{pdf.name}"]  # path, zip_name and file.name
