"""The README's quick start as a newcomer runs it: `python -m orchestration demo` (what
`make demo` runs after its set-up) in a scratch checkout prints the figures the README shows
(rows, bytes, md5, file names, the generated counts), and a second run says
`already_delivered`, as the README says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from assets.run_day import last_complete_day
from tests.doc_snippets import REPO, snippets

pytestmark = pytest.mark.timeout(400)
README = (REPO / "README.md").read_text(encoding="utf-8")
DELIVERY = re.compile(r"^  (?P<name>\w+): (?P<rows>\d+) rows, (?P<bytes>\d+) bytes, md5 "
                      r"(?P<md5>[0-9a-f]+)…? -> \S*?/(?P<file>[^/\s]+) \[(?P<status>\w+)",
                      re.M)


def documented() -> dict[str, dict[str, str]]:
    [output] = [block.text for block in snippets(REPO / "README.md")
                if not block.language and block.text.startswith("workflow run ")]
    return {found["name"]: found.groupdict() for found in DELIVERY.finditer(output)}


def run_demo(root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "STAGECOACH_WORKFLOWS_DIR":
           str(root / "workflows"), "STAGECOACH_DATA_DIR": str(root / "data"),
           "DAGSTER_HOME": str(root / "data" / "dagster_home")}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "orchestration", "demo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def test_the_demo_prints_the_readme_figures_then_already_delivered(tmp_path: Path):
    expected = documented()
    assert set(expected) == {"partner_file", "crm_csv"}, expected
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    first = run_demo(tmp_path)
    counts = re.search(r"\(([\d,]+) customers, ([\d,]+) products, ([\d,]+) orders a day "
                       r"for the last (\d+) complete days\)", " ".join(README.split()))
    assert counts, "the README no longer says what the demo generates"
    customers, products, per_day, days = (int(g.replace(",", "")) for g in counts.groups())
    loyalty = re.search(r"loyalty export of ([\d,]+) members", " ".join(README.split()))
    assert loyalty, "the README no longer says how many loyalty members the demo generates"
    members = int(loyalty.group(1).replace(",", ""))
    assert (f"generated {{'customers': {customers}, 'loyalty_members': {members}, "
            f"'products': {products}, 'orders': {per_day * days}}}") in first, first
    assert re.search(r"^workflow run \S+ succeeded; warehouse: \S+/data/warehouse\.duckdb$",
                     first, re.M), first
    printed = {found["name"]: found.groupdict() for found in DELIVERY.finditer(first)}
    assert set(printed) == set(expected), first
    day = last_complete_day("America/New_York", datetime.now(UTC))  # the demo's run day
    for name, shown in expected.items():
        got = printed[name]
        file = (shown["file"].replace("YYYYMMDD", f"{day:%Y%m%d}")
                .replace("YYYY-MM-DD", day.isoformat()))
        assert (got["rows"], got["bytes"], got["file"], got["status"]) == (
            shown["rows"], shown["bytes"], file, shown["status"]), (name, got, shown)
        assert got["md5"].startswith(shown["md5"]), (name, got["md5"], shown["md5"])
    again = {found["name"]: found["status"] for found in DELIVERY.finditer(run_demo(tmp_path))}
    assert again == dict.fromkeys(expected, "already_delivered"), again
