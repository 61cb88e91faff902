"""The reliability and security suite's figures, printed after a pytest run (`make reliability`
selects the suite with `-m "fault or bad_input or security"`; `make test` prints them too).

Any test joins the suite with a marker (registered in pyproject.toml):
- `fault`: a fault Stagecoach must survive (a killed process, a lost connection, a retry);
- `bad_input`: a bad spec, file or request refused with a clear message;
- `security`: an escape, a leaked secret, an untrusted server or a forged request refused.
Each passed test counts once per parametrised case. A test that tries many inputs in one case
(a Hypothesis property) adds them with `count_cases(marker, n, label)`; a test that checks rows
after a fault reports them through the `reliability` fixture (`rows_checked(...)`), and the
secret scan reports what it found with `secrets_scanned(...)`.

Under pytest-xdist (`make test` runs `-n 2`) each worker counts its own tests and hands its
tally to the controller when it finishes (xdist's `workeroutput`); the controller adds them up
and prints the one table. The totals at the end:

    reliability and security suite
      fault scenarios survived           14 of 14
      bad inputs tried                   431 (all refused cleanly)
        tests/unit/test_spec_catalogue.py  64
        hypothesis examples                200
      ...
      secrets leaked                     0 (8 secrets; 25 files, 7 tables scanned)
      rows lost or duplicated            0 (in 5 checks)
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

MARKERS = ("fault", "bad_input", "security")


@dataclass
class Tally:
    passed: Counter = field(default_factory=Counter)  # marker -> passed cases
    failed: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    extra: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    secrets_leaked: int | None = None
    secrets_detail: list[str] = field(default_factory=list)
    rows_off: int = 0
    row_checks: int = 0
    row_failures: list[str] = field(default_factory=list)


TALLY = Tally()


def tally_to_json(tally: Tally) -> dict:
    """The tally as plain data (what an xdist worker can send to the controller)."""
    return {"passed": dict(tally.passed), "failed": dict(tally.failed),
            "by_source": {k: dict(v) for k, v in tally.by_source.items()},
            "extra": {k: dict(v) for k, v in tally.extra.items()},
            "secrets_leaked": tally.secrets_leaked, "secrets_detail": tally.secrets_detail,
            "rows_off": tally.rows_off, "row_checks": tally.row_checks,
            "row_failures": tally.row_failures}


def merge_tally(into: Tally, data: dict) -> None:
    """Add one worker's tally (from `tally_to_json`) to `into`."""
    into.passed.update(data["passed"])
    into.failed.update(data["failed"])
    for mark, counts in data["by_source"].items():
        into.by_source[mark].update(counts)
    for mark, counts in data["extra"].items():
        into.extra[mark].update(counts)
    if data["secrets_leaked"] is not None:
        into.secrets_leaked = (into.secrets_leaked or 0) + data["secrets_leaked"]
    into.secrets_detail.extend(data["secrets_detail"])
    into.rows_off += data["rows_off"]
    into.row_checks += data["row_checks"]
    into.row_failures.extend(data["row_failures"])


def count_cases(marker: str, cases: int, label: str) -> None:
    """Count `cases` inputs or scenarios of `marker` tried by the running test (e.g. the
    examples of a Hypothesis property) on their own line under `label`; the test's own pass
    then adds nothing more."""
    assert marker in MARKERS, marker
    TALLY.extra[marker][label] += cases
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    _COUNTED_BY_CASES.add(current.rsplit(" (", 1)[0])


def secrets_scanned(leaks: int, detail: str) -> None:
    TALLY.secrets_leaked = (TALLY.secrets_leaked or 0) + leaks
    TALLY.secrets_detail.append(detail)


class Reliability:
    """What a test hands to the report (the `reliability` fixture)."""

    def rows_checked(self, where: str, expected: int, found: int) -> None:
        """Rows a fault or re-run must neither lose nor duplicate: `found` against
        `expected`; the difference counts as lost or duplicated rows in the report."""
        TALLY.row_checks += 1
        if found != expected:
            TALLY.rows_off += abs(found - expected)
            TALLY.row_failures.append(f"{where}: {found} rows, expected {expected}")


@pytest.fixture
def reliability() -> Reliability:
    return Reliability()


_MARKS: dict[str, set[str]] = {}
_COUNTED_BY_CASES: set[str] = set()  # tests whose cases were counted with count_cases


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marks = {m.name for m in item.iter_markers() if m.name in MARKERS}
        if marks:
            _MARKS[item.nodeid] = marks


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Each process counts the tests it ran; the xdist controller also sees every worker's
    # reports, but it collected nothing (no `_MARKS`) and gets the workers' tallies instead.
    marks = _MARKS.get(report.nodeid)
    if not marks:
        return
    if report.when == "call" and report.passed and report.nodeid not in _COUNTED_BY_CASES:
        for mark in marks:
            TALLY.passed[mark] += 1
            TALLY.by_source[mark][report.nodeid.split("::")[0]] += 1
    elif report.failed:
        for mark in marks:
            TALLY.failed[mark] += 1


def figures() -> list[tuple[str, str]]:
    """(label, value) lines of the report."""
    def total(mark: str) -> int:
        return TALLY.passed[mark] + sum(TALLY.extra[mark].values())

    def tried(mark: str) -> str:
        failed = TALLY.failed[mark]
        return f"{total(mark)} of {total(mark) + failed}" if failed else str(total(mark))

    lines = [("fault scenarios survived", tried("fault"))]
    refused = "all refused cleanly" if not TALLY.failed["bad_input"] else \
        f"{TALLY.failed['bad_input']} NOT refused cleanly"
    lines.append(("bad inputs tried", f"{total('bad_input')} ({refused})"))
    for source, count in sorted(TALLY.by_source["bad_input"].items()):
        lines.append((f"  {source}", str(count)))
    for label, count in sorted(TALLY.extra["bad_input"].items()):
        lines.append((f"  {label}", str(count)))
    lines.append(("security checks passed", tried("security")))
    if TALLY.secrets_leaked is None:
        lines.append(("secrets leaked", "not measured (the secret scan did not run)"))
    else:
        lines.append(("secrets leaked", f"{TALLY.secrets_leaked} "
                                        f"({'; '.join(TALLY.secrets_detail)})"))
    if TALLY.row_checks:
        lines.append(("rows lost or duplicated", f"{TALLY.rows_off} (in {TALLY.row_checks} "
                                                 f"checks)"))
    else:
        lines.append(("rows lost or duplicated", "not measured (no row check ran)"))
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its tally goes to the controller
        workeroutput["reliability_tally"] = tally_to_json(TALLY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist's controller: a worker finished; add its tally (none if it crashed)."""
    data = getattr(node, "workeroutput", {}).get("reliability_tally")
    if data is not None:
        merge_tally(TALLY, data)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = sum(TALLY.passed.values()) + sum(TALLY.failed.values())
    if not ran:
        return
    terminalreporter.section("reliability and security suite")
    lines = figures()
    width = max(len(label) for label, _ in lines) + 2
    for label, value in lines:
        terminalreporter.write_line(f"  {label.ljust(width)}{value}")
    for failure in TALLY.row_failures:
        terminalreporter.write_line(f"  ! {failure}")
