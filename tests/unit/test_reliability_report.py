"""The reliability table adds up the same under pytest-xdist as in one process: each worker
hands its tally to the controller, which prints one table (tests/reliability_report.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

SUITE = '''
import pytest
from tests.reliability_report import count_cases, secrets_scanned


@pytest.mark.fault
@pytest.mark.parametrize("case", range(3))
def test_fault(case, reliability):
    reliability.rows_checked(f"case {case}", 10, 10 if case else 9)


@pytest.mark.bad_input
@pytest.mark.parametrize("case", range(4))
def test_bad(case):
    pass


@pytest.mark.bad_input
def test_many():
    count_cases("bad_input", 50, "generated examples")


@pytest.mark.security
def test_scan():
    secrets_scanned(0, "2 secrets; 3 files scanned")


@pytest.mark.security
def test_refused():
    assert False
'''

INI = """
[pytest]
markers =
    fault: f
    bad_input: b
    security: s
"""


def table(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess("-p", "tests.reliability_report",
                                           "-p", "no:cacheprovider", *args)
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "reliability and security suite" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    assert any("2 failed" in line and "18 passed" in line for line in lines), lines[-3:]
    return lines[start + 1:end]


def test_the_table_adds_up_the_same_on_two_workers(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO),
                                                      os.environ.get("PYTHONPATH", "")]))
    pytester.makeini(INI)
    for n in range(2):  # two files, so that loadfile gives each worker one
        pytester.makepyfile(**{f"test_suite_{n}": SUITE})

    serial = table(pytester)
    parallel = table(pytester, "-n", "2", "--dist", "loadfile")
    assert parallel == serial
    figures = {line.split("  ")[1].strip(): line.split("  ")[-1].strip()
               for line in serial if not line.startswith("   ")}
    assert figures["fault scenarios survived"] == "6"
    assert figures["bad inputs tried"] == "108 (all refused cleanly)"
    assert figures["security checks passed"] == "2 of 4"
    assert figures["secrets leaked"] == "0 (2 secrets; 3 files scanned; 2 secrets; 3 files scanned)"
    assert figures["rows lost or duplicated"] == "2 (in 6 checks)"
