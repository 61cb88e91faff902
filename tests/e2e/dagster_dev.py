"""Helpers the end-to-end tests share: a real `dagster dev` on a free loopback port, GraphQL
against it, and stopping a process group whatever it started.

`dagster dev` runs in its own session (it ignores SIGTERM when started with nohup) and is
stopped by ending its process group; a process that outlives the group is reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.conftest import free_port, need_server

REPO = Path(__file__).resolve().parents[2]
LOCATION, REPOSITORY = "stagecoach", "__repository__"
START_TIMEOUT, RUN_TIMEOUT = 120.0, 180.0
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass(frozen=True)
class DagsterDev:
    port: int
    root: Path
    workflows: Path
    outbox: Path
    token: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query,
                                                    "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False


LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def location_state(dev: DagsterDev) -> tuple[str, str]:
    """(state, error message) of the `stagecoach` location: LOADING, LOADED or ERROR."""
    entries = dev.graphql(LOCATION_QUERY)["workspaceOrError"].get("locationEntries", [])
    for entry in entries:
        if entry["name"] == LOCATION:
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                return "ERROR", loaded["message"]
            return ("LOADED" if entry["loadStatus"] == "LOADED" and loaded else "LOADING"), ""
    return "LOADING", ""


def process_tree(process: subprocess.Popen) -> list[psutil.Process]:
    """The process and every descendant it has now."""
    try:
        parent = psutil.Process(process.pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_group(process: subprocess.Popen, members: list[psutil.Process] | None = None,
               term_wait: float = 20.0) -> list[str]:
    """SIGTERM the process group (a process started with start_new_session=True), SIGKILL it
    after `term_wait` s; the processes that outlived both."""
    members = members if members is not None else process_tree(process)
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        _, alive = psutil.wait_procs(members, timeout=wait)
        if not alive:
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return [f"{p.pid} {p.cmdline()}" for p in members if alive_process(p)]


def alive_process(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def listens_on(process: subprocess.Popen, port: int) -> bool:
    """True if the process or one of its descendants listens on `port`: the server answering
    there is this test's, not another pytest worker's (or another checkout's) that took the
    same free port in between."""
    for member in process_tree(process):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in member.net_connections(kind="tcp")):
                return True
    return False


@contextlib.contextmanager
def running_dagster_dev(root: Path, workflows: Path, env: Mapping[str, str],
                        token: str = "", port: int | None = None) -> Iterator[DagsterDev]:
    """`dagster dev -w workspace.yaml` on a free loopback port with `env`, until the stagecoach
    location has loaded (a location error fails the test with Dagster's message)."""
    dagster = REPO / ".venv" / "bin" / "dagster"
    if not os.access(dagster, os.X_OK):
        need_server("dagster dev", f"{dagster} is missing (pip install -e '.[dev]')")
    port, log = port or free_port(), root / "dagster_dev.log"
    dev = DagsterDev(port, root, workflows, root / "outbox", token, log)
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1",
             "-p", str(port)], cwd=REPO, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        state, error = "LOADING", ""
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if http_ok(f"{dev.url}/server_info"):
                if not listens_on(process, port):
                    pytest.fail(f"another process answers on port {port}, not this test's "
                                f"dagster dev (pid {process.pid})", pytrace=False)
                state, error = location_state(dev)
                if state != "LOADING":
                    break
            time.sleep(1)
        if state == "ERROR":
            pytest.fail(f"the code location did not load under dagster dev:\n{error}",
                        pytrace=False)
        if state != "LOADED":
            why = ("exited with " + str(process.returncode) if process.poll() is not None
                   else f"not ready after {START_TIMEOUT:.0f} s")
            print(f"dagster dev {why}; its log:\n{dev.log_tail()}", file=sys.stderr)
            need_server("dagster dev", f"dagster dev could not start ({why})")
        print(f"dagster dev ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield dev
    finally:
        survivors = stop_group(process)
    assert not survivors, f"processes outlived dagster dev's group: {survivors}"


def wait_for_run(dev: DagsterDev, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    """The run's final status (or its last one at the deadline)."""
    client, deadline, status = dev.client(), time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in TERMINAL:
            break
        time.sleep(1)
    return status


SCHEDULE_QUERY = """
query ($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) {
    __typename ... on Schedule { scheduleState { status } } } }
"""
START_SCHEDULE = """
mutation ($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) {
    __typename ... on PythonError { message } } }
"""
SENSOR_QUERY = """
query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status ticks(limit: 1) { status } } } } }
"""
START_SENSOR = """
mutation ($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
    __typename ... on PythonError { message } } }
"""


def instigator_selector(kind: str, name: str) -> dict[str, str]:
    """The GraphQL selector of the stagecoach location's schedule or sensor `name`."""
    key = "scheduleName" if kind == "schedule" else "sensorName"
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, key: name}


def start_instigator(dev: DagsterDev, kind: str, name: str) -> None:
    """Start a schedule or sensor (`kind`) unless it is running already; it must exist."""
    query, start = ((SCHEDULE_QUERY, START_SCHEDULE) if kind == "schedule"
                    else (SENSOR_QUERY, START_SENSOR))
    selector = instigator_selector(kind, name)
    state = dev.graphql(query, {"selector": selector})[f"{kind}OrError"]
    assert state["__typename"] == kind.title(), state
    if state[f"{kind}State"]["status"] != "RUNNING":
        started = dev.graphql(start, {"selector": selector})
        assert "PythonError" not in str(started), started


RUN_QUERY = """
query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
    status tags { key value }
    eventConnection { events { __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message } } } } } }
"""


def run_details(dev: DagsterDev, run_id: str) -> dict[str, Any]:
    run = dev.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    failures = [e for e in run["eventConnection"]["events"] if len(e) > 1]
    return {"status": run["status"], "tags": {t["key"]: t["value"] for t in run["tags"]},
            "failures": [json.dumps(e)[:2000] for e in failures]}
