"""Every process that loads the code location (each run, each code server, each
`python -m orchestration` command) pays its imports. The libraries of one kind of connection or
alert channel (paramiko for SFTP and SSH, boto3 with dagster-aws for S3, smbprotocol for SMB,
slack_sdk for Slack: about a second of CPU together) load only in a process whose workflow has
that kind: when its resource is built, or when a Slack alert is sent."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.specs import write_workflow

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("paramiko", "boto3", "botocore", "dagster_aws", "smbclient", "smbprotocol",
            "slack_sdk", "dagster_slack")


def loaded_after_build(workflows: Path, tmp_path: Path, then: str = "") -> list[str]:
    """The OPTIONAL libraries a fresh interpreter holds after building the code location of
    `workflows` (the code server's own call), and after running the Python in `then`."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from orchestration.definitions import load_code_location
        load_code_location(Path({str(workflows)!r}))
        print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))
    """) + textwrap.dedent(then) + textwrap.dedent(f"""
        print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))
    """)
    env = {**os.environ, "STAGECOACH_DATA_DIR": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path), "KINDS_SLACK_TOKEN": "xoxb-not-sent"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    *_, built, after = done.stdout.strip().splitlines()
    return [*json.loads(built), *(f"then:{m}" for m in json.loads(after))]


def test_the_demo_loads_without_the_libraries_of_kinds_it_does_not_use(tmp_path: Path) -> None:
    assert loaded_after_build(ROOT / "workflows", tmp_path) == []


def test_a_workflow_with_those_kinds_loads_their_libraries(tmp_path: Path) -> None:
    """The other half: building SFTP, S3 and SMB connections imports their libraries, and a
    Slack alert's channel imports slack_sdk when it is built to send, so the first test's empty
    list means "not needed", not "never looked at"."""
    workflows = write_workflow(tmp_path, "kinds", textwrap.dedent("""
        workflow: {name: kinds}
        connections:
          drop: {kind: sftp, host: 127.0.0.1, username: u, password: {env: KINDS_PASSWORD}}
          bucket: {kind: s3, bucket: b}
          share: {kind: smb, host: 127.0.0.1, share: s, username: u,
                  password: {env: KINDS_PASSWORD}}
        alerts:
          team: {kind: slack, channel: "#data", token: {env: KINDS_SLACK_TOKEN}}
    """))
    loaded = loaded_after_build(workflows, tmp_path, then=f"""
        from orchestration.alert_channels import channel_factory
        from orchestration.spec_loader import load_workflows
        [workflow] = load_workflows(Path({str(workflows)!r}))
        channel_factory(workflow.spec, "team", workflow.spec.alerts["team"], lambda: "")()
    """)
    built = [m for m in loaded if not m.startswith("then:")]
    assert {"paramiko", "boto3", "dagster_aws", "smbclient"} <= set(built), loaded
    assert "slack_sdk" not in built, loaded
    assert "then:slack_sdk" in loaded, loaded
