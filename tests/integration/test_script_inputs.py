"""Python steps' inputs as the README documents them, run from the README's own example: the
input files come first in argv, then `args`, and every file a step reports reaches the next
step, in order. Real scripts (tests/fixtures/scripts) run as their own processes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import build_definitions

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tests" / "fixtures" / "scripts"
README = (REPO / "docs" / "spec-reference.md").read_text(encoding="utf-8")
DAY = {"dagster/scheduled_execution_time": "2026-12-07T04:00:00+00:00"}


def readme_block(language: str, containing: str) -> str:
    """The README's fenced block of that language holding `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README, re.S)
    [block] = [b for b in blocks if containing in b]
    return block


def test_the_readme_shows_the_split_script_as_it_is():
    shown = readme_block("python", "Split a CSV into one file per row")
    assert shown == (SCRIPTS / "split_rows.py").read_text(encoding="utf-8")


def test_the_readme_split_example_hands_every_file_on_in_order(stagecoach_env: Path):
    export = stagecoach_env / "exports"
    export.mkdir()
    workflows = stagecoach_env / "workflows"
    shutil.copytree(SCRIPTS, workflows / "scripts")
    automations = readme_block("yaml", "split_orders:").replace("/srv/exports", str(export))
    (workflows / "auto.yaml").write_text("workflow: {name: auto}\n" + automations,
                                         encoding="utf-8")
    defs = build_definitions(workflows)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("auto_split_orders_job").execute_in_process(
            instance=instance, tags=DAY, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_step_failure]
        split = result.output_for_node("split_orders__split")
    parts = [str(export / f"orders_20261207-{n}.csv") for n in (0, 1)]
    # split got [orders.csv, "orders_20261207"]: the file first, then its args
    assert (export / "orders_20261207-1.csv").read_text() == "order_id,amount\n2,7.25\n"
    assert split["files"] == parts
    # send got both parts, in order (not only the first)
    assert (export / "sent.txt").read_text().splitlines() == parts
    [materialized] = [e for e in result.all_events if e.is_successful_output
                      and e.step_key == "split_orders__split"]
    shown = materialized.event_specific_data.metadata["files"].value
    assert shown == parts  # the op's output names every file
