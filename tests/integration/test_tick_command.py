"""`python -m orchestration tick NAME`: one schedule or sensor tick evaluated without the
daemon, on the demo workflow (its schedule skipping for missing files, then asking for a run
once they land; its run-status sensor) and on a file-arrival sensor over a real folder, the
cursor printed by one tick fed to the next."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest

from orchestration.__main__ import main

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]
README = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
README_EXAMPLE = re.search(r"^(schedule acme_retail_nightly_schedule .*?)^```", README,
                           re.S | re.M).group(1).splitlines()


def tick(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    code = main(["tick", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def cursor_of(lines: list[str]) -> str:
    [cursor] = [line.removeprefix("  cursor: ") for line in lines
                if line.startswith("  cursor: ")]
    return cursor


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_the_demo_schedule_skips_then_asks_for_yesterday(
        stagecoach_env: Path, dagster_home: Path, capsys: pytest.CaptureFixture):
    folder = stagecoach_env / "workflows"
    shutil.copytree(REPO / "workflows", folder)
    landing = stagecoach_env / "data" / "demo" / "landing"  # ../data/demo/landing in the spec
    at = ["acme_retail_nightly_schedule", str(folder), "--time", "2026-11-07T03:00"]

    code, lines, err = tick(capsys, *at)
    assert code == 0, err
    assert "$DAGSTER_HOME" in err
    assert lines[0] == "schedule acme_retail_nightly_schedule at 2026-11-07T03:00:00-05:00:"
    assert lines[1].startswith("  skipped: missing files, so nothing runs (notify and stop): "
                               "customers: landing/customers.csv")
    (landing / "orders").mkdir(parents=True)
    (landing / "customers.csv").write_text("Customer ID,E-mail\n1,a@b.c\n")
    (landing / "loyalty_members.csv").write_text("Member,Email\n1,a@b.c\n")
    (landing / "products.jsonl").write_text('{"sku": "x"}\n')
    (landing / "orders" / "orders_20261106.csv.gz").write_bytes(gzip.compress(b"order_id\n1\n"))

    code, lines, err = tick(capsys, *at)
    assert code == 0, err
    # The output the README shows, and the run's day tag (assets/run_day.py), which the
    # README's example does not show yet.
    assert lines == README_EXAMPLE
    assert lines[1] == ("  run request 1: job acme_retail_nightly_job, run key -, "
                        "partition 2026-11-06")
    assert "    tag dagster/partition=2026-11-06" in lines
    assert not any("skipped" in line for line in lines)


def test_the_demo_run_status_sensor_prints_its_cursor(
        stagecoach_env: Path, dagster_home: Path, capsys: pytest.CaptureFixture):
    code, lines, err = tick(capsys, "acme_retail_audiences_after_sensor",
                            str(REPO / "workflows"))
    assert code == 0, err
    assert lines[0] == "sensor acme_retail_audiences_after_sensor:"
    assert "RunStatusSensorCursor" in cursor_of(lines)


def test_a_file_arrival_sensor_over_a_real_folder(
        stagecoach_env: Path, dagster_home: Path, capsys: pytest.CaptureFixture):
    inbox = stagecoach_env / "inbox"
    inbox.mkdir()
    folder = stagecoach_env / "workflows"
    folder.mkdir()
    (folder / "drops.yaml").write_text(f"""
workflow: {{name: drops}}
connections:
  inbox: {{kind: folder, path: {inbox}}}
automations:
  load: {{steps: [{{kind: sql, sql: "select 1"}}]}}
triggers:
  new_drop:
    job: load
    when: {{kind: file_change, connection: inbox, path: "{{{{ workflow }}}}_*.csv"}}
""", encoding="utf-8")
    sensor = ["drops_new_drop_sensor", str(folder)]

    code, lines, err = tick(capsys, *sensor)
    assert code == 0, err
    assert lines[1] == ("  skipped: first look: 0 file(s) matching 'drops_*.csv' recorded, "
                        "none taken")
    (inbox / "drops_1.csv").write_text("id\n1\n")
    code, lines, err = tick(capsys, *sensor, "--cursor", cursor_of(lines))
    assert code == 0, err
    assert "waiting for 1 new or changing file(s) to be stable: drops_1.csv" in lines[1]
    code, lines, err = tick(capsys, *sensor, "--cursor", cursor_of(lines))
    assert code == 0, err
    assert lines[1].startswith("  run request 1: job drops_load_job, run key ")
    assert "run key -" not in lines[1]
    assert any(line.startswith("    tag ") for line in lines)


def test_refusals_name_what_to_do(stagecoach_env: Path, dagster_home: Path,
                                  capsys: pytest.CaptureFixture):
    workflows = str(REPO / "workflows")
    code, _, err = tick(capsys, "acme_retail_nightly", workflows)
    assert code == 1 and "no schedule or sensor named 'acme_retail_nightly' (known: " \
                          "acme_retail_nightly_schedule" in err
    code, _, err = tick(capsys, "acme_retail_nightly_schedule", workflows, "--cursor", "x")
    assert code == 1 and "schedules have no cursor" in err
    code, _, err = tick(capsys, "acme_retail_audiences_after_sensor", workflows, "--time",
                        "2026-11-07T03:00")
    assert code == 1 and "a sensor's tick is now" in err
    code, _, err = tick(capsys, "acme_retail_nightly_schedule", workflows, "--time", "7 Nov")
    assert code == 1 and "is not an ISO date and time" in err


def test_a_dagster_home_that_is_not_a_folder_is_named(
        stagecoach_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "no_such_home"))
    code, lines, err = tick(capsys, "acme_retail_nightly_schedule", str(REPO / "workflows"))
    assert code == 1 and lines == []
    assert err.strip() == (f"tick: $DAGSTER_HOME is '{tmp_path / 'no_such_home'}', which is not "
                           "a directory; create it (mkdir -p) or point DAGSTER_HOME at your "
                           "instance's folder")
