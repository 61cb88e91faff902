"""Data-quality checks as asset checks on a real run: each kind passes or fails on real rows,
a blocking failure stops what is downstream, a warning does not, and a failure is an alarm."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import build_definitions
from orchestration.spec_loader import SpecInvalid, load_workflows

pytestmark = pytest.mark.timeout(180)

ORDERS = """id,email,country,ordered_at,amount
1,a@x.com,US,2026-11-20 10:00:00,10
2,,FR,2026-11-21 10:00:00,-5
3,c@x.com,ZZ,2026-11-22 10:00:00,7
3,d@x.com,US,2026-11-22 11:00:00,8
"""


def workflow(root: Path, quality: str, query_quality: str = "") -> Path:
    (root / "landing").mkdir(exist_ok=True)
    (root / "landing" / "orders.csv").write_text(ORDERS)
    folder = root / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / "dq.yaml").write_text(f"""
workflow: {{name: dq}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
couriers:
  orders: {{from: landing, path: orders.csv}}
domain_tables:
  orders:
    from: orders
    columns:
      id: {{tag: integer}}
      email: {{tag: email}}
      country: {{tag: upper}}
      ordered_at: {{tag: datetime}}
      amount: {{tag: decimal}}
    quality:
{quality}
queries:
  spend:
    sql: "select country, sum(amount) as total from domain.orders group by country"
    quality:
{query_quality or '      - {kind: row_count, min: 1}'}
""")
    return folder


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str | None]]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            found[evaluation.check_name] = (evaluation.passed, evaluation.description)
    return found


def run(folder: Path) -> dg.ExecuteInProcessResult:
    defs = build_definitions(folder)
    return defs.resolve_job_def("dq_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def test_each_kind_of_check_on_real_rows(stagecoach_env: Path):
    folder = workflow(stagecoach_env, """
      - {kind: row_count, min: 1, max: 10, blocking: false}
      - {kind: not_null, columns: [id, email], blocking: false}
      - {kind: unique, columns: [id], blocking: false}
      - {kind: accepted_values, column: country, values: [US, FR], blocking: false}
      - {kind: freshness, column: ordered_at, max_age: 3650d, blocking: false}
      - {kind: freshness, name: fresh_today, column: ordered_at, max_age: 1h, blocking: false}
      - {kind: sql, name: no_negative_amounts, blocking: false,
         sql: "select count(*) from domain.orders where amount < 0"}
""")
    result = run(folder)
    found = evaluations(result)
    assert found["row_count"] == (True, None)
    assert found["not_null_id_email"] == (False, "1 null(s) in email")
    assert found["unique_id"] == (False, "1 value(s) of (id) appear more than once")
    assert found["accepted_values_country"] == (False,
                                                "1 row(s) with other values, e.g. ['ZZ']")
    assert found["freshness_ordered_at"] == (True, None)
    passed, why = found["fresh_today"]
    assert not passed and "older than 1h" in why
    assert found["no_negative_amounts"] == (False, "1 failing row(s)")
    assert result.success  # warnings only: the query downstream still ran
    assert any(e.is_step_success and e.step_key == "query__spend" for e in result.all_events)


def test_a_blocking_failure_stops_what_is_downstream(stagecoach_env: Path):
    folder = workflow(stagecoach_env, """
      - {kind: accepted_values, column: country, values: [US, FR]}
""")
    result = run(folder)
    assert not result.success
    assert evaluations(result)["accepted_values_country"][0] is False
    ran = {e.step_key for e in result.all_events if e.is_step_success}
    assert "query__spend" not in ran  # the query never built on bad data


def test_quality_mistakes_are_spec_errors(stagecoach_env: Path):
    folder = workflow(stagecoach_env, """
      - {kind: not_null, columns: [emial]}
      - {kind: row_count}
      - {kind: unique, columns: [id]}
      - {kind: unique, columns: [id]}
""")
    with pytest.raises(SpecInvalid) as raised:
        load_workflows(folder)
    messages = [e.message for e in raised.value.errors]
    assert messages == [
        "unknown column 'emial' (known: _partition, _source_file, amount, country, email, id, "
        "ordered_at)",
        "a row_count check needs `min:` and/or `max:`",
        "two checks are named 'unique_id'; give one a `name:`"]
