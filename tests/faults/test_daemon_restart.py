"""The daemon is restarted between sensor ticks: no file is taken twice, none is missed.

A real `dagster-daemon run` ticks a `file_change` trigger (every 1 s) on a folder. Files land
before, during and while the daemon is down (SIGKILL of its process group, then a new daemon on
the same DAGSTER_HOME); every file must appear in exactly one requested run. The run queue is
held at zero concurrent runs, so the requested runs stay queued and cost nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import TickStatus

from assets.names import TRIGGER_TAG
from tests.conftest import need_server
from tests.e2e.dagster_dev import REPO, stop_group

pytestmark = [pytest.mark.timeout(420), pytest.mark.fault]

WF, SENSOR = "restart", "restart_drops_sensor"
WAIT = 120.0

SPEC = """
workflow: {{name: restart}}
connections:
  landing: {{kind: folder, path: {landing}}}
couriers:
  drops: {{from: landing, path: "drops/*.csv"}}
courier_groups:
  intake:
    couriers: [drops]
triggers:
  drops:
    job: intake
    every: 1s
    when: {{kind: file_change, connection: landing, path: "drops/*.csv"}}
"""

INSTANCE = """
telemetry: {enabled: false}
concurrency:
  runs:
    max_concurrent_runs: 0   # requested runs stay queued: this test counts requests only
"""


def start_daemon(root: Path, env: dict[str, str], attempt: int) -> subprocess.Popen:
    daemon = REPO / ".venv" / "bin" / "dagster-daemon"
    if not os.access(daemon, os.X_OK):
        need_server("dagster-daemon", f"{daemon} is missing (pip install -e '.[dev]')")
    with open(root / f"daemon_{attempt}.log", "wb") as log:
        return subprocess.Popen([str(daemon), "run", "-w", str(REPO / "workspace.yaml")],
                                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(what: str, condition: Callable[[], bool], root: Path,
               timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(root.glob("*.log")))
    pytest.fail(f"timed out waiting for {what}; daemon logs:\n{logs}", pytrace=False)


def sensor_ticks(instance: dg.DagsterInstance) -> list:
    """The sensor's finished ticks (a tick still evaluating may list the folder later)."""
    ticks = []
    for state in instance.all_instigator_state():
        if state.instigator_name == SENSOR:
            ticks += [t for t in instance.get_ticks(state.instigator_origin_id,
                                                    state.selector_id, limit=1000)
                      if t.status != TickStatus.STARTED]
    return ticks


def requested_files(instance: dg.DagsterInstance) -> list[str]:
    """Every file named by a run the sensor requested, once per run that names it."""
    files = []
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR})):
        changed = run.tags[TRIGGER_TAG].split(": ", 1)[1]
        files += re.findall(r"drops/[a-z0-9_]+\.csv", changed)
    return files


def test_a_restarted_daemon_takes_every_file_once(tmp_path: Path, reliability) -> None:
    root = tmp_path
    drops = root / "landing" / "drops"
    drops.mkdir(parents=True)
    (drops / "already_there.csv").write_text("id\n0\n")  # recorded by the first look only
    for folder in ("workflows", "data", "dagster_home"):
        (root / folder).mkdir()
    (root / "workflows" / f"{WF}.yaml").write_text(SPEC.format(landing=root / "landing"))
    (root / "dagster_home" / "dagster.yaml").write_text(INSTANCE)
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home")}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)

    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        def ticks() -> int:
            return len(sensor_ticks(instance))

        def land(name: str) -> None:
            (drops / f"{name}.csv").write_text(f"id\n{name}\n")

        started = time.monotonic()
        daemon = start_daemon(root, env, 1)
        try:
            wait_until("the sensor's first look", lambda: ticks() >= 1, root)
            land("first")
            wait_until("a run for drops/first.csv",
                       lambda: "drops/first.csv" in requested_files(instance), root)
            # The daemon dies right after a tick that began once drops/second.csv had landed:
            # the file is in the stored cursor as seen once, not yet stable, so not taken.
            landed = time.time()
            land("second")
            wait_until("a tick after drops/second.csv landed", lambda: any(
                t.timestamp > landed for t in sensor_ticks(instance)), root)
        finally:
            survivors = stop_group(daemon, term_wait=0.0)  # SIGTERM then SIGKILL at once
        assert not survivors, survivors
        # While no daemon runs, another file lands.
        land("third")
        before_restart = ticks()

        daemon = start_daemon(root, env, 2)
        try:
            wait_until("runs for drops/second.csv and drops/third.csv",
                       lambda: {"drops/second.csv", "drops/third.csv"}
                       <= set(requested_files(instance)), root)
            land("fourth")
            wait_until("a run for drops/fourth.csv",
                       lambda: "drops/fourth.csv" in requested_files(instance), root)
            # A few more ticks with nothing new: nothing is requested again.
            settled = ticks()
            wait_until("three more ticks", lambda: ticks() >= settled + 3, root)
        finally:
            survivors = stop_group(daemon)
        assert not survivors, survivors
        assert ticks() > before_restart

        files = requested_files(instance)
        expected = ["drops/first.csv", "drops/fourth.csv", "drops/second.csv",
                    "drops/third.csv"]
        reliability.rows_checked("files taken by a file_change sensor across a daemon restart",
                                 len(expected), len(files))
        assert sorted(files) == expected, files
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR}))
        run_keys = [r.tags["dagster/run_key"] for r in runs]
        assert len(run_keys) == len(set(run_keys)), run_keys
        print(f"{len(runs)} runs for {len(files)} files over {ticks()} ticks and one restart "
              f"in {time.monotonic() - started:.0f} s", file=sys.stderr)
