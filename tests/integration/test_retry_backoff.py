"""Step retry delays as docs/retries.md states them: the formula's own example, and a real run
whose script asks for retries (exit 75) and records when each attempt started."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from assets import spec
from assets.automations import retry_policy_for
from orchestration.definitions import build_definitions

pytestmark = pytest.mark.timeout(120)
DOC = (Path(__file__).resolve().parents[2] / "docs" / "retries.md").read_text(encoding="utf-8")
EXAMPLE = re.compile(r"`delay: (\d+)s`\s+waits (\d+) s before the first retry, (\d+) s before "
                     r"the second, (\d+) s before the third")
STARTS = """
import os, sys, time
marker = os.environ["STARTS"]
with open(marker, "a") as out:
    out.write(f"{time.time()}\\n")
sys.exit(75 if len(open(marker).read().splitlines()) < 3 else 0)  # EX_TEMPFAIL: retry me
"""


def test_the_documented_example_is_the_policy_built():
    delay, *waits = map(int, EXAMPLE.search(" ".join(DOC.split())).groups())
    policy = retry_policy_for(spec.StepRetry(count=3, delay=f"{delay}s", backoff="exponential"))
    assert [policy.calculate_delay(n) for n in (1, 2, 3)] == waits
    constant = retry_policy_for(spec.StepRetry(count=3, delay=f"{delay}s", backoff="constant"))
    assert [constant.calculate_delay(n) for n in (1, 2, 3)] == [delay] * 3


def test_exponential_retries_wait_delay_then_three_times_delay(stagecoach_env: Path):
    """`delay: 1s` exponential: the second attempt starts ~1 s after the first, the third ~3 s
    after the second (not 1 s and 1 s, not 1 s and 2 s)."""
    folder = stagecoach_env / "workflows"
    folder.mkdir()
    (folder / "starts.py").write_text(STARTS, encoding="utf-8")
    starts = stagecoach_env / "starts.txt"
    (folder / "wf.yaml").write_text(f"""
workflow: {{name: wf}}
automations:
  flaky:
    retry: {{count: 2, delay: 1s, backoff: exponential}}
    steps:
      - {{kind: python, script: starts.py, env: {{STARTS: {starts}}}}}
""", encoding="utf-8")
    job = build_definitions(folder).resolve_job_def("wf_flaky_job")
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance, raise_on_error=False).success
    first, second, third = map(float, starts.read_text().split())
    assert 1.0 <= second - first < 2.5
    assert 3.0 <= third - second < 4.5
