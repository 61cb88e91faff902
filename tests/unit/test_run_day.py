"""The one rule for a run's day (assets/run_day.py), as every launcher applies it."""

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from assets.names import PARTITION_TAG, RUN_DAY_TAG
from assets.run_day import day_tags, file_day, job_dated, resolve_day, run_partition
from orchestration.spec_loader import load_workflow_text
from tests.unit.test_spec_catalogue import GROUPS, VALID

NY = ZoneInfo("America/New_York")
UNDATED = VALID.replace("path: orders_{{ ds_nodash }}.csv", "path: orders.csv")


def workflow(tmp_path: Path, text: str = VALID + GROUPS, zone: str = "America/New_York"):
    return load_workflow_text(text.replace("  owners: [team:data]\n",
                                           f"  owners: [team:data]\n  timezone: {zone}\n"),
                              "wf.yaml", tmp_path)


def test_a_dated_job_works_on_the_last_complete_day(tmp_path: Path) -> None:
    wf = workflow(tmp_path)
    assert job_dated(wf, "nightly") and job_dated(wf, "workflow")
    assert not job_dated(wf, "exports")  # it delivers a query, no dated courier
    # 02:30 UTC on 8 Dec is 21:30 on 7 Dec in New York: the 6th is the last complete day.
    at = datetime(2026, 12, 8, 2, 30, tzinfo=ZoneInfo("UTC"))
    partition, day = resolve_day(wf.workflow, True, at)
    assert (partition, day) == ("2026-12-06", datetime(2026, 12, 6, tzinfo=NY))
    assert run_partition(wf, "nightly", at) == "2026-12-06"
    assert day_tags(partition, day) == {RUN_DAY_TAG: "2026-12-06", PARTITION_TAG: "2026-12-06"}


def test_a_file_arrival_works_on_the_files_day_and_a_rule_overrides_the_default(
        tmp_path: Path) -> None:
    wf = workflow(tmp_path)
    at = datetime(2026, 12, 8, 15, 0, tzinfo=NY)
    assert resolve_day(wf.workflow, True, at, file_day=date(2026, 12, 8))[0] == "2026-12-08"
    assert resolve_day(wf.workflow, True, at, "last_complete_day")[0] == "2026-12-07"
    # Before the start date there is no partition to run.
    assert resolve_day(wf.workflow, True, at, file_day=date(2026, 10, 31))[0] is None


def test_an_undated_job_works_on_today_unless_told(tmp_path: Path) -> None:
    wf = workflow(tmp_path, UNDATED + GROUPS)
    assert not job_dated(wf, "nightly")
    at = datetime(2026, 12, 8, 15, 0, tzinfo=NY)
    assert resolve_day(wf.workflow, False, at) == (None, at)
    assert resolve_day(wf.workflow, False, at, "today") == (None, datetime(2026, 12, 8,
                                                                             tzinfo=NY))
    partition, day = resolve_day(wf.workflow, False, at, "last_complete_day")
    assert (partition, day.date()) == (None, date(2026, 12, 7))
    assert day_tags(partition, day) == {RUN_DAY_TAG: "2026-12-07"}


@pytest.mark.parametrize(("path", "expected"), [
    ("drops/orders_20261107.csv", date(2026, 11, 7)),
    ("drops/2026/11/orders_2026-11-07.csv.gz", date(2026, 11, 7)),
    ("drops/orders_2026_11_07_v2.csv", date(2026, 11, 7)),
    ("drops/batch_120261107999.csv", date(2026, 12, 1)),  # no date in the name: its mtime
    ("drops/orders_20261399.csv", date(2026, 12, 1)),  # not a date
])
def test_the_day_of_a_file(path: str, expected: date) -> None:
    mtime = datetime(2026, 12, 1, 23, 30, tzinfo=NY).timestamp()  # 04:30 UTC on the 2nd
    assert file_day(path, mtime, "America/New_York") == expected
