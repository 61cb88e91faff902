"""The web UI in a real browser: headless Chromium (Debian's package, driven by Playwright)
opens the demo workflow's asset graph under `dagster dev`, launches the demo job from the job
page, waits on the runs page until the run succeeded, and finds the delivered file's md5 on the
activation's asset page.

Screenshots of each stage go to test-artifacts/ (web_ui_*.png) for a person to look at.
Without Chromium or Playwright the test skips outside CI and fails in CI (`CI=true`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from orchestration.cli.demo_data import generate
from tests.conftest import need_server
from tests.e2e.dagster_dev import REPO, DagsterDev, run_details, running_dagster_dev
from tests.integration.test_postgres import demo_workflows

pytestmark = pytest.mark.timeout(600)
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
WORKFLOW, JOB = "acme_retail", "acme_retail_job"
DAY = date(2026, 11, 1)  # the demo's first daily partition
# The demo's asset graph: name → how many nodes carry it (a courier is `<name>_file`, so it
# is told from the domain table loaded from it; the web customers' name is also identity
# resolution's unified table).
ASSET_NAMES = {"customers": 2, "customers_file": 1, "loyalty_members": 1,
               "products": 1, "products_file": 1, "orders": 1,
               "orders_file": 1, "customers_map": 1, "customers_pairs": 1,
               "unified_customers": 1, "lifetime_value": 1, "crm_csv": 1, "partner_file": 1}
LONG_NAME = "high_value_customers"  # shown shortened on its node; its tooltip has it whole
UI_TIMEOUT_MS = 60_000  # any one element; the UI's first load compiles GraphQL and the graph
RUN_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        need_server("chromium", f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as missing:
        need_server("playwright", f"playwright is not installed: {missing}")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except Error as failed:
            need_server("chromium", f"{CHROMIUM} did not start: {failed}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """`dagster dev` serving the demo spec, its landing folder holding the first day's files."""
    root = tmp_path_factory.mktemp("web_ui")
    for folder in ("landing", "outbox", "data", "dagster_home"):
        (root / folder).mkdir()
    workflows = demo_workflows(root / "workflows", root / "landing", root / "outbox")
    generate(root / "landing", [DAY])
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(workflows),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           "ACME_WEBHOOK_TOKEN": secrets.token_urlsafe(16)}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    with running_dagster_dev(root, workflows, env) as dev:
        yield dev


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"web_ui_{name}.png"
    page.screenshot(path=str(path))
    return path


def test_demo_asset_graph_and_a_run_launched_from_the_ui(browser: Any, demo_ui: DagsterDev):
    from playwright.sync_api import expect

    started = time.monotonic()
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    # Dagster's "join the community" dialog opens once per instance, whenever it likes.
    page.add_locator_handler(page.get_by_role("button", name="Skip"),
                             lambda skip: skip.click())
    try:
        # The asset graph of the demo's group: every asset's node on screen.
        page.goto(f"{demo_ui.url}/locations/stagecoach/asset-groups/{WORKFLOW}/lineage")
        for name, nodes in ASSET_NAMES.items():
            shown = page.get_by_text(name, exact=True)
            expect(shown).to_have_count(nodes)
            for n in range(nodes):
                expect(shown.nth(n)).to_be_in_viewport()
        # Names of 20 characters are shortened on their node (the courier loyalty_members_file).
        expect(page.get_by_text(re.compile(r"^loyalty.*_file$"))).to_be_in_viewport()
        shortened = page.get_by_text(re.compile(r"^high_va.*_customers$"))
        expect(shortened).to_be_in_viewport()
        # The community dialog may open (and be skipped) mid-hover, which moves the pointer
        # off the node: hover again until the full name shows.
        full_name = page.get_by_text(LONG_NAME, exact=True)
        for _ in range(5):
            shortened.hover()
            try:
                expect(full_name).to_be_visible(timeout=5_000)
                break
            except AssertionError:
                continue
        expect(full_name).to_be_visible()
        screenshot(page, "1_asset_graph")
        graph_seen = time.monotonic()

        # The job page: Materialize all… → one partition (the demo's first day) → one run.
        page.goto(f"{demo_ui.url}/locations/stagecoach/jobs/{JOB}")
        materialize = page.get_by_role("button", name="Materialize all…")
        # While the job's partitions load the button shows a spinner and a click opens nothing
        # (seen on a loaded machine): wait until it is ready.
        expect(materialize.get_by_role("progressbar")).to_have_count(0)
        materialize.click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Launch runs to materialize 17 assets")).to_be_visible()
        partitions = dialog.get_by_placeholder("No matching partitions")
        partitions.fill(DAY.isoformat())
        partitions.press("Enter")
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        launch = dialog.get_by_role("button", name="Launch 1 run")
        expect(launch).to_be_enabled()
        screenshot(page, "2_launch_dialog")
        launch.click()
        toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))
        expect(toast).to_be_visible()
        short_id = toast.inner_text().split()[-1]
        launched = time.monotonic()

        # The runs page, reloaded until the run's row says how it ended.
        page.goto(f"{demo_ui.url}/runs")
        row = _run_row(page, short_id)
        status = _wait_for_status(page, row, RUN_TIMEOUT)
        screenshot(page, "3_runs_page")
        finished = time.monotonic()
        expect(row.get_by_text(JOB, exact=True)).to_be_visible()
        expect(row.get_by_text(f"partition: {DAY.isoformat()}")).to_be_visible()

        # The partner file's asset page: the delivery the run made, with the md5 of the file
        # that is now in the outbox.
        partner_file = demo_ui.outbox / "partner" / f"acme_high_value_{DAY:%Y%m%d}.txt"
        page.goto(f"{demo_ui.url}/assets/activation/partner_file")
        expect(page.get_by_text("Latest materialization", exact=True)).to_be_visible()
        expect(page.get_by_text(partner_file.name, exact=True)).to_be_visible()
        expect(page.get_by_text("delivered", exact=True).first).to_be_visible()
        md5 = hashlib.md5(partner_file.read_bytes()).hexdigest()
        expect(page.get_by_text(md5, exact=True).first).to_be_visible()
        screenshot(page, "4_activation_asset")
    except BaseException:  # pytest.fail too: the page as it was helps more than the message
        screenshot(page, "failure")
        print(f"dagster dev's log:\n{demo_ui.log_tail()}", file=sys.stderr)
        raise
    finally:
        page.close()

    # What the UI showed is what happened: the one run, its job and partition, its files.
    runs = demo_ui.graphql(RUNS_QUERY)["runsOrError"]["results"]
    assert [r["runId"][:8] for r in runs] == [short_id], runs
    details = run_details(demo_ui, runs[0]["runId"])
    assert status == "Success" and details["status"] == "SUCCESS", (status, details["failures"])
    assert runs[0]["jobName"] == JOB and details["tags"]["dagster/partition"] == DAY.isoformat()
    delivered = sorted(p.relative_to(demo_ui.outbox).as_posix()
                       for p in demo_ui.outbox.rglob("*") if p.is_file())
    assert delivered == [f"crm/high_value_customers_{DAY.isoformat()}.csv",
                         f"partner/acme_high_value_{DAY:%Y%m%d}.txt"], delivered
    print(f"web UI: graph checked in {graph_seen - started:.1f} s, run launched "
          f"{launched - graph_seen:.1f} s later, success on the runs page after "
          f"{finished - launched:.1f} s; screenshots in {ARTIFACTS}", file=sys.stderr)


RUNS_QUERY = """
{ runsOrError { __typename ... on Runs { results { runId jobName status } } } }
"""


def _run_row(page: Any, short_id: str) -> Any:
    """The runs table's row of one run: the innermost element holding both its link and its
    job (the table is built of divs, without row roles)."""
    link = page.locator(f'a[href^="/runs/{short_id}"]')
    return page.locator("div").filter(has=link).filter(
        has=page.get_by_role("link", name=JOB, exact=True)).last


def _wait_for_status(page: Any, row: Any, timeout: float) -> str:
    """The run's status as its row on the runs page shows it, once it is Success or Failure."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline, shown = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        for status in ("Success", "Failure", "Canceled"):
            try:
                row.get_by_text(status, exact=True).wait_for(timeout=2_000)
                return status
            except PlaywrightTimeout:
                pass
        shown = row.inner_text() if row.count() else "(no row for the run)"
        page.reload()
    pytest.fail(f"the run did not finish within {timeout:.0f} s; its row: {shown}",
                pytrace=False)
