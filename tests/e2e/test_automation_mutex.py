"""The seed's mutex example under a real daemon: one automation sleeping 10 s and one printing
"hello world", both with `mutex: nightly_batch`, launched together over GraphQL. The run queue
of deploy/dagster.yaml (the instance `make dev` uses) must run them one after the other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e.dagster_dev import REPO, DagsterDev, running_dagster_dev, wait_for_run

pytestmark = pytest.mark.timeout(600)
WF = "mtx"

RUN_TIMES = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { status startTime endTime
    tags { key value } } } }
"""


def spec(sshd) -> str:
    host = f"""{{kind: sftp, host: {sshd.host}, port: {sshd.port}, username: {sshd.username},
          private_key_path: {sshd.private_key_path}, known_hosts: {sshd.known_hosts_path}}}"""
    return f"""
workflow: {{name: {WF}}}
connections:
  batch: {host}
automations:
  slow_script:
    mutex: nightly_batch
    steps:
      - {{kind: ssh, connection: batch, command: "sleep 10; echo slept"}}
  hello:
    mutex: nightly_batch
    steps:
      - {{kind: ssh, connection: batch, command: "echo hello world"}}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, sshd) -> Iterator[DagsterDev]:
    root = tmp_path_factory.mktemp("mutex")
    for folder in ("workflows", "data", "dagster_home"):
        (root / folder).mkdir()
    (root / "workflows" / f"{WF}.yaml").write_text(spec(sshd))
    instance = (REPO / "deploy" / "dagster.yaml").read_text()
    (root / "dagster_home" / "dagster.yaml").write_text(
        instance + "telemetry:\n  enabled: false\n")
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home")}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    with running_dagster_dev(root, root / "workflows", env) as dev:
        yield dev


def _times(dev: DagsterDev, run_id: str) -> tuple[float, float]:
    run = dev.graphql(RUN_TIMES, {"runId": run_id})["runOrError"]
    assert {"key": "stagecoach/mutex", "value": "nightly_batch"} in run["tags"]
    return run["startTime"], run["endTime"]


def test_two_automations_sharing_a_mutex_never_overlap(daemon: DagsterDev):
    client = daemon.client()
    slow = client.submit_job_execution(f"{WF}_slow_script_job")
    time.sleep(0.5)  # the slow one is queued first
    hello = client.submit_job_execution(f"{WF}_hello_job")
    assert wait_for_run(daemon, slow) == "SUCCESS", daemon.log_tail()
    assert wait_for_run(daemon, hello) == "SUCCESS", daemon.log_tail()
    (slow_start, slow_end), (hello_start, hello_end) = (_times(daemon, r) for r in (slow,
                                                                                    hello))
    assert slow_end - slow_start >= 10
    # One after the other: the hello run started only once the sleeping one had ended.
    assert hello_start >= slow_end or slow_start >= hello_end, (slow_start, slow_end,
                                                                hello_start, hello_end)
