"""docs/launching.md's webhook snippets, run as written (ports aside) under a real `dagster dev`
serving the demo workflow with the doc's own trigger declaration: the token the shell exports
reaches the webhook and the `curl` line, each launch answers 201 with a run id, and the runs
carry the tags the doc lists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.doc_snippets import REPO, fragment, merge, named, snippets
from tests.e2e.dagster_dev import DagsterDev, run_details, running_dagster_dev

pytestmark = pytest.mark.timeout(600)
DOC = REPO / "docs" / "launching.md"
SNIPPETS = [s for s in snippets(DOC) if s.kind == "run-e2e"]


@pytest.fixture(scope="module")
def demo_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """`dagster dev` on the demo spec with the doc's declaration of its webhook trigger."""
    root = tmp_path_factory.mktemp("doc_webhook")
    shutil.copytree(REPO / "workflows", root / "workflows")
    spec_file = root / "workflows" / "acme_retail.yaml"
    spec = merge(yaml.safe_load(spec_file.read_text()), fragment(named()["webhook_params"]))
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    (root / "dagster_home").mkdir()
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home")}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR", "ACME_WEBHOOK_TOKEN"):
        env.pop(name, None)
    with running_dagster_dev(root, root / "workflows", env) as dev:
        yield dev


def test_the_webhook_snippets_launch_runs_tagged_as_documented(demo_dev: DagsterDev):
    assert len(SNIPPETS) == 2, [s.where for s in SNIPPETS]
    port = free_port()
    script = "\n".join(s.text for s in SNIPPETS)
    script = (script.replace("http://127.0.0.1:3000", demo_dev.url)
              .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
              .replace("--port 8080", f"--port {port}"))
    checkout = demo_dev.root / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {**os.environ, "PYTHONPATH": str(REPO), "STAGECOACH_WORKFLOWS_DIR":
           str(demo_dev.workflows), "STAGECOACH_DATA_DIR": str(demo_dev.root / "data"),
           "DAGSTER_HOME": str(demo_dev.root / "dagster_home")}
    env.pop("ACME_WEBHOOK_TOKEN", None)  # the snippet exports its own
    env.pop("STAGECOACH_WAREHOUSE_URL", None)
    # The snippet's webhook runs in the background: its process group ends with the script.
    wrapped = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
    done = subprocess.run(["bash", "-c", wrapped], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert done.stdout.startswith("ok"), done.stdout
    run_ids = re.findall(r'"run_id":\s*"([^"]+)"', done.stdout)
    assert len(run_ids) == 2, done.stdout
    plain, with_params = (run_details(demo_dev, run_id)["tags"] for run_id in run_ids)
    for tags in (plain, with_params):
        assert tags["stagecoach/trigger"] == "webhook partner_file_request", tags
        assert tags["webhook/ticket"] == "OPS-1" and "stagecoach/webhook_caller" in tags, tags
        assert "stagecoach/webhook_request_id" in tags and "stagecoach/triggered_by" not in tags
    assert "partner-portal" in plain["stagecoach/webhook_caller"], plain
    assert with_params["stagecoach/webhook_request_id"] == "order-000123", with_params
    assert yaml.safe_load(with_params["stagecoach/params"]) == {"threshold": 5, "region": "us"}
