"""docs/operations-cli.md, run as written: every `python -m orchestration` command and the
GraphQL example against a real `dagster dev` serving the demo workflow (its files generated
for every day from its start_date to the last complete day; a PostgreSQL warehouse, so
concurrent runs and sensors never wait for DuckDB's one writer), and `make dev PORT=...`.

Each command's effect is read back from Dagster: the runs and backfill it launched, with the
day and partition the rule gives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orchestration.cli.demo_data import generate
from tests.conftest import free_port, fresh_database
from tests.e2e.dagster_dev import (
    REPO,
    DagsterDev,
    http_ok,
    run_details,
    running_dagster_dev,
    stop_group,
    wait_for_run,
)

pytestmark = pytest.mark.timeout(900)
DOC = REPO / "docs" / "operations-cli.md"
NY = ZoneInfo("America/New_York")
START = date(2026, 11, 1)  # the demo spec's start_date
TOKEN = "ops-" + "0123456789abcdef" * 2


def doc_blocks(language: str) -> list[str]:
    """The fenced blocks of the doc in `language`."""
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def doc_commands() -> list[str]:
    return [line.strip() for block in doc_blocks("sh") for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


def last_complete_day() -> date:
    return datetime.now(UTC).astimezone(NY).date() - timedelta(days=1)


@pytest.fixture(scope="module")
def demo_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DagsterDev, dict]]:
    root = tmp_path_factory.mktemp("operations")
    landing, outbox, workflows = root / "landing", root / "outbox", root / "workflows"
    for folder in (landing, outbox, workflows, root / "data", root / "dagster_home"):
        folder.mkdir(exist_ok=True)
    shutil.copytree(REPO / "workflows" / "sql", workflows / "sql")
    text = (REPO / "workflows" / "acme_retail.yaml").read_text(encoding="utf-8")
    text = text.replace("path: ../data/demo/landing", f"path: {landing}").replace(
        "path: ../data/demo/outbox", f"path: {outbox}")
    # A webhook on the dated nightly job too (the demo's own is on the undated audiences).
    text = text.replace("triggers:\n", "triggers:\n  nightly_request:\n    job: nightly\n"
                        "    when: {kind: webhook, token: {env: ACME_WEBHOOK_TOKEN}}\n", 1)
    (workflows / "acme_retail.yaml").write_text(text, encoding="utf-8")
    last = last_complete_day()
    generate(landing, [START + timedelta(days=n) for n in range((last - START).days + 1)],
             customers=300, orders_per_day=50)
    # The shipped instance config, as `make dev` copies it.
    shutil.copyfile(REPO / "deploy" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    with fresh_database("stagecoach_ops") as warehouse:
        env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(workflows),
               "STAGECOACH_DATA_DIR": str(root / "data"),
               "DAGSTER_HOME": str(root / "dagster_home"),
               "STAGECOACH_WAREHOUSE_URL": warehouse, "ACME_WEBHOOK_TOKEN": TOKEN,
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        env.pop("STAGECOACH_EXECUTOR", None)
        with running_dagster_dev(root, workflows, env) as dev:
            yield dev, {**env, "STAGECOACH_DAGSTER_URL": dev.url}


def cli(command: str, env: dict) -> subprocess.CompletedProcess:
    """One of the doc's commands, as written (`python` is this interpreter)."""
    args = command.split()
    assert args[:3] == ["python", "-m", "orchestration"], command
    done = subprocess.run([sys.executable, *args[1:]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def launched(output: str) -> list[str]:
    return re.findall(r"^run ([0-9a-f-]{36}): ", output, re.MULTILINE)


def test_every_command_of_the_doc_is_run_here() -> None:
    """The list below is what the tests of this module run; the doc may not grow a command
    that no test runs."""
    exercised = {
        "python -m orchestration jobs",
        "python -m orchestration run acme_retail_nightly_job --dry-run",
        "python -m orchestration run acme_retail_nightly_job",
        "python -m orchestration run acme_retail_nightly_job --day 2026-11-03",
        "python -m orchestration run acme_retail_audiences_job --from 2026-11-04 --to 2026-11-05",
        "python -m orchestration backfill acme_retail_nightly_job --from 2026-11-04 --to "
        "2026-11-05",
        "make dev PORT=3001",
    }
    assert set(doc_commands()) == exercised


def test_make_dev_takes_a_port_and_says_what_it_starts(tmp_path: Path) -> None:
    """`make dev PORT=...` as the doc writes it, on a free port, with a fresh DAGSTER_HOME."""
    [command] = [c for c in doc_commands() if c.startswith("make dev")]
    port = free_port()
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "STAGECOACH_DATA_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("STAGECOACH_WAREHOUSE_URL", None)
    log = tmp_path / "make_dev.log"
    # -o: the virtualenv is there; make must not reinstall it.
    args = [*command.replace("PORT=3001", f"PORT={port}").split()[:2], f"PORT={port}",
            "-o", ".venv/.installed"]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and process.poll() is None:
            if http_ok(f"http://127.0.0.1:{port}/server_info"):
                break
            time.sleep(1)
        text = log.read_text(errors="replace")
        assert http_ok(f"http://127.0.0.1:{port}/server_info"), text[-3000:]
    finally:
        survivors = stop_group(process)
    assert not survivors
    assert f"deploy/dagster.yaml copied to {home}/dagster.yaml" in text
    assert "ON  schedule acme_retail_nightly_schedule" in text
    assert f"on http://127.0.0.1:{port}" in text
    assert "enabled: false" in (home / "dagster.yaml").read_text()
    assert "As an open-source project, we collect usage statistics" not in text


def test_jobs_lists_the_days_and_what_dagster_starts(demo_dev: tuple[DagsterDev, dict]) -> None:
    _, env = demo_dev
    out = cli("python -m orchestration jobs", env).stdout
    last = last_complete_day()
    assert (f"acme_retail_nightly_job  [courier group `nightly` of acme_retail] dated; now: "
            f"partition {last} (last complete day, America/New_York)") in out
    assert "acme_retail_audiences_job  [orchestration group `audiences` of acme_retail] undated" \
        in out
    assert ("ON  schedule acme_retail_nightly_schedule: 0 3 * * * (America/New_York) -> "
            "acme_retail_nightly_job") in out
    assert "ON  sensor   acme_retail_audiences_after_sensor -> acme_retail_audiences_job" in out
    dry = cli("python -m orchestration run acme_retail_nightly_job --dry-run", env).stdout
    assert dry.startswith(f"would launch acme_retail_nightly_job for {last} (partition {last};")
    assert launched(dry) == []


def test_run_uses_the_rule_or_the_day_given(demo_dev: tuple[DagsterDev, dict]) -> None:
    dev, env = demo_dev
    last = last_complete_day()
    [ruled] = launched(cli("python -m orchestration run acme_retail_nightly_job", env).stdout)
    [given] = launched(cli("python -m orchestration run acme_retail_nightly_job --day 2026-11-03",
                           env).stdout)
    for run_id, day in ((ruled, last.isoformat()), (given, "2026-11-03")):
        status = wait_for_run(dev, run_id)
        details = run_details(dev, run_id)
        assert status == "SUCCESS", details
        assert details["tags"]["dagster/partition"] == day
        assert details["tags"]["stagecoach/day"] == day
        assert details["tags"]["stagecoach/trigger"].startswith("cli by ")


def test_a_range_of_an_undated_job_is_one_run_per_day(demo_dev: tuple[DagsterDev, dict]) -> None:
    dev, env = demo_dev
    out = cli("python -m orchestration run acme_retail_audiences_job --from 2026-11-04 --to "
              "2026-11-05", env).stdout
    runs = launched(out)
    assert len(runs) == 2, out
    days = []
    for run_id in runs:
        wait_for_run(dev, run_id)  # its outcome depends on the nightly runs; its day does not
        tags = run_details(dev, run_id)["tags"]
        assert "dagster/partition" not in tags
        days.append(tags["stagecoach/day"])
    assert days == ["2026-11-04", "2026-11-05"]


BACKFILL_QUERY = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
    ... on PartitionBackfill { status partitionNames
        runs(limit: 10) { runId status tags { key value } } } } }
"""


def test_backfill_goes_through_dagsters_backfill(demo_dev: tuple[DagsterDev, dict]) -> None:
    dev, env = demo_dev
    out = cli("python -m orchestration backfill acme_retail_nightly_job --from 2026-11-04 --to "
              "2026-11-05", env).stdout
    [backfill_id] = re.findall(r"^backfill (\w+) of 2 partition", out, re.MULTILINE)
    assert f"{dev.url}/runs/b/{backfill_id}" in out
    deadline, found = time.monotonic() + 300, {}
    while time.monotonic() < deadline:
        found = dev.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        runs = found.get("runs") or []
        if len(runs) == 2 and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED")
                                  for r in runs):
            break
        time.sleep(3)
    assert found["__typename"] == "PartitionBackfill", found
    assert sorted(found["partitionNames"]) == ["2026-11-04", "2026-11-05"]
    runs = found["runs"]
    partitions = sorted({t["value"] for r in runs for t in r["tags"]
                         if t["key"] == "dagster/partition"})
    assert partitions == ["2026-11-04", "2026-11-05"], found
    assert {r["status"] for r in runs} == {"SUCCESS"}, (found, dev.log_tail())


def test_the_graphql_example_with_its_partition_tag(demo_dev: tuple[DagsterDev, dict],
                                                    capsys: pytest.CaptureFixture) -> None:
    dev, _ = demo_dev
    [example] = doc_blocks("python")
    exec(example.replace("port_number=3000", f"port_number={dev.port}"), {})
    run_id = capsys.readouterr().out.strip()
    assert wait_for_run(dev, run_id) == "SUCCESS", run_details(dev, run_id)
    assert run_details(dev, run_id)["tags"]["dagster/partition"] == "2026-11-06"


def test_a_graphql_launch_without_a_partition_gets_the_rules_day(
        demo_dev: tuple[DagsterDev, dict]) -> None:
    """A bare GraphQL launch of the dated nightly job (no tags): the shipped instance's run
    coordinator gives it the last complete day, as the schedule would. An undated job's run is
    left as it came."""
    dev, _ = demo_dev
    client = dev.client()
    dated = client.submit_job_execution(
        "acme_retail_nightly_job", repository_location_name="stagecoach",
        repository_name="__repository__")
    given = client.submit_job_execution(
        "acme_retail_nightly_job", repository_location_name="stagecoach",
        repository_name="__repository__", tags={"stagecoach/day": "2026-11-03"})
    undated = client.submit_job_execution(
        "acme_retail_audiences_job", repository_location_name="stagecoach",
        repository_name="__repository__")
    for run_id, day in ((dated, last_complete_day().isoformat()), (given, "2026-11-03")):
        status = wait_for_run(dev, run_id)
        details = run_details(dev, run_id)
        assert status == "SUCCESS", details
        assert details["tags"]["dagster/partition"] == day
        assert details["tags"]["stagecoach/day"] == day
    wait_for_run(dev, undated)  # its outcome depends on the nightly runs; its tags do not
    assert "dagster/partition" not in run_details(dev, undated)["tags"]


def test_a_webhook_launch_without_a_partition_gets_the_rules_day(
        demo_dev: tuple[DagsterDev, dict], tmp_path: Path) -> None:
    """The webhook resolves the day when the caller sends none: the last complete day for the
    dated nightly job, today for the undated audiences."""
    import http.client
    import threading

    from orchestration.cli.webhook import (
        graphql_launcher,
        make_server,
        request_id_store,
        webhook_targets,
    )
    from orchestration.spec_loader import load_workflows

    dev, env = demo_dev
    targets, raw = webhook_targets(load_workflows(Path(env["STAGECOACH_WORKFLOWS_DIR"])),
                                   {"ACME_WEBHOOK_TOKEN": TOKEN})
    server = make_server("127.0.0.1", 0, targets, graphql_launcher(dev.url),
                         request_id_store(f"duckdb:///{tmp_path / 'requests.duckdb'}", 600), raw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        days = {}
        for job in ("acme_retail_nightly_job", "acme_retail_audiences_job"):
            connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1],
                                                    timeout=60)
            connection.request("POST", f"/launch/{job}", body=b"{}", headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            answer = connection.getresponse()
            body = answer.read().decode()
            connection.close()
            assert answer.status == 201, body
            run_id = re.search(r'"run_id": ?"([0-9a-f-]{36})"', body)
            assert run_id, body
            tags = run_details(dev, run_id[1])["tags"]
            days[job] = (tags.get("dagster/partition"), tags["stagecoach/day"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    last = last_complete_day().isoformat()
    today = datetime.now(UTC).astimezone(NY).date().isoformat()
    assert days == {"acme_retail_nightly_job": (last, last),
                    "acme_retail_audiences_job": (None, today)}
