"""Every courier file format in, every activation file format out, through a real run."""

import gzip
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl import Workbook, load_workbook

from orchestration.definitions import build_definitions

ROWS = [("1", "Ann@Example.com", "Zoë"), ("2", "bob@example.com", "Bob"),
        ("3", "cy@example.com", "Cy, Jr.")]

SPEC = """\
workflow: {name: formats}
connections:
  inbox: {kind: folder, path: inbox}
  outbox: {kind: folder, path: outbox}
couriers:
  csv_gz: {from: inbox, path: people.csv.gz}
  tsv_latin1: {from: inbox, path: people.tsv, format: {type: tsv, encoding: latin-1}}
  headerless: {from: inbox, path: people.txt, format: {type: psv, header: false}}
  xlsx: {from: inbox, path: people.xlsx, format: {type: xlsx, skip_rows: 1}}
  jsonl: {from: inbox, path: people.jsonl, format: {type: jsonl}}
  parquet: {from: inbox, path: "people_*.parquet", format: {type: parquet}}
domain_tables:
{tables}
queries:
  everyone:
    sql: |
      {union}
activations:
{activations}
"""
COURIERS = ["csv_gz", "tsv_latin1", "headerless", "xlsx", "jsonl", "parquet"]
OUTPUTS = {"csv": "everyone.csv", "tsv": "everyone.tsv", "psv": "everyone.txt",
           "jsonl": "everyone.jsonl", "parquet": "everyone.parquet", "xlsx": "everyone.xlsx"}


def write_inputs(inbox: Path) -> None:
    inbox.mkdir(parents=True)
    csv_text = "id,email,name\n" + "".join(f'{i},{e},"{n}"\n' for i, e, n in ROWS)
    with gzip.open(inbox / "people.csv.gz", "wt", encoding="utf-8") as out:
        out.write(csv_text)
    (inbox / "people.tsv").write_bytes(("id\temail\tname\n" + "".join(
        f"{i}\t{e}\t{n}\n" for i, e, n in ROWS)).encode("latin-1"))
    (inbox / "people.txt").write_text("".join(f"{i}|{e}|{n}\n" for i, e, n in ROWS))
    book = Workbook()
    sheet = book.active
    sheet.append(["exported by the CRM"])
    sheet.append(["id", "email", "name"])
    for i, e, n in ROWS:
        sheet.append([int(i), e, n])
    book.save(inbox / "people.xlsx")
    (inbox / "people.jsonl").write_text("".join(
        json.dumps({"id": int(i), "email": e, "name": n}) + "\n" for i, e, n in ROWS))
    for part, rows in (("a", ROWS[:2]), ("b", ROWS[2:])):
        pq.write_table(pa.table({"id": [r[0] for r in rows], "email": [r[1] for r in rows],
                                 "name": [r[2] for r in rows]}), inbox / f"people_{part}.parquet")


@pytest.fixture
def formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_inputs(tmp_path / "workflows" / "inbox")
    tables = "".join(
        f"  {c}:\n    from: {c}\n    columns:\n"
        f"      id: {{source: {'column0' if c == 'headerless' else 'id'}, tag: integer, "
        f"required: true}}\n"
        f"      email: {{source: {'column1' if c == 'headerless' else 'email'}, tag: email}}\n"
        f"      name: {{source: {'column2' if c == 'headerless' else 'name'}, tag: text}}\n"
        for c in COURIERS)
    union = " union all ".join(f"select '{c}' as courier, id, email, name from domain.{c}"
                               for c in COURIERS)
    activations = "".join(f"  out_{kind}:\n    query: everyone\n    to: outbox\n"
                          f"    file: {{type: {kind}, name: {name}}}\n"
                          for kind, name in OUTPUTS.items())
    (tmp_path / "workflows" / "formats.yaml").write_text(
        SPEC.replace("{tables}", tables).replace("{union}", union + " order by courier, id")
        .replace("{activations}", activations))
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    return tmp_path


def test_every_format_round_trips(formats: Path) -> None:
    defs = build_definitions(formats / "workflows")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("formats_job").execute_in_process(
            instance=instance, raise_on_error=False)
    assert result.success, [str(e.step_failure_data.error) for e in result.all_events
                            if e.is_step_failure]
    outbox = formats / "workflows" / "outbox"
    expected = sorted((c, int(i), e.lower(), n) for c in COURIERS for i, e, n in ROWS)

    parquet = pq.read_table(outbox / "everyone.parquet").to_pylist()
    assert sorted(tuple(r.values()) for r in parquet) == expected

    jsonl = [json.loads(line) for line in (outbox / "everyone.jsonl").read_text().splitlines()]
    assert sorted(tuple(r.values()) for r in jsonl) == expected

    sheet = load_workbook(outbox / "everyone.xlsx", read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("courier", "id", "email", "name")
    assert sorted(rows[1:]) == expected

    for kind, sep in (("csv", ","), ("tsv", "\t"), ("psv", "|")):
        lines = (outbox / OUTPUTS[kind]).read_text(encoding="utf-8").splitlines()
        assert lines[0] == sep.join(["courier", "id", "email", "name"])
        assert len(lines) == len(expected) + 1
    csv_lines = (outbox / "everyone.csv").read_text(encoding="utf-8").splitlines()
    assert 'csv_gz,3,cy@example.com,"Cy, Jr."' in csv_lines  # quoted only where needed
    assert "tsv_latin1,1,ann@example.com,Zoë" in csv_lines  # latin-1 decoded
