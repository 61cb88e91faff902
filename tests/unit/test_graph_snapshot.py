"""The whole graph a spec becomes, compared with a reviewed snapshot: asset keys, dependencies,
groups, owners, kinds, asset checks, jobs with what they run and their tags, schedules with cron
and time zone, sensors with their default status and targets.

A refactor must leave the snapshot unchanged; a change meant to alter the graph regenerates it
(`STAGECOACH_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_graph_snapshot.py`) and the diff of
tests/snapshots/*.yaml is reviewed with the change.
"""

import difflib
import os
from pathlib import Path
from typing import Any, get_args

import dagster as dg
import pytest
import yaml

from orchestration.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "tests" / "snapshots"
FULL_SPEC = SNAPSHOTS / "full_spec"
UPDATE_ENV = "STAGECOACH_UPDATE_SNAPSHOTS"

# Each snapshot: the spec (a file or a folder of them) and where its snapshot is kept.
CASES = {
    "demo": (ROOT / "workflows", SNAPSHOTS / "demo_graph.yaml"),
    "full": (FULL_SPEC / "full_workflow.yaml", SNAPSHOTS / "full_graph.yaml"),
}


def graph_of(defs: dg.Definitions) -> dict[str, Any]:
    """What the snapshot records, as plain sorted data (no paths, no object ids)."""
    graph = {
        "assets": assets_of(defs),
        "asset_checks": sorted(f"{key.asset_key.to_user_string()}:{key.name}"
                               for key in defs.resolve_asset_graph().asset_check_keys),
        "jobs": jobs_of(defs),
        "schedules": schedules_of(defs),
        "sensors": sensors_of(defs),
    }
    return {"counts": {part: len(items) for part, items in graph.items()}, **graph}


def assets_of(defs: dg.Definitions) -> dict[str, Any]:
    return {spec.key.to_user_string(): {
        "group": spec.group_name,
        "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
        "owners": list(spec.owners),
        "kinds": sorted(spec.kinds),
        "tags": {k: v for k, v in sorted(spec.tags.items()) if not k.startswith("dagster/kind/")},
        "partitioned": spec.partitions_def is not None,
    } for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())}


def jobs_of(defs: dg.Definitions) -> dict[str, Any]:
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job: every asset, nothing Stagecoach names
        jobs[job.name] = {
            "assets": sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys),
            "ops": sorted(node.name for node in job.nodes) if not job.is_asset_job else [],
            "tags": dict(sorted(job.tags.items())),
            "partitioned": job.partitions_def is not None,
        }
    return jobs


def schedules_of(defs: dg.Definitions) -> dict[str, Any]:
    schedules = [defs.resolve_schedule_def(s.name) for s in defs.schedules or []]
    return {s.name: {
        "job": s.job_name,
        "cron": s.cron_schedule,
        "timezone": s.execution_timezone,
        "default_status": s.default_status.value,
    } for s in sorted(schedules, key=lambda s: s.name)}


def sensors_of(defs: dg.Definitions) -> dict[str, Any]:
    sensors = [defs.resolve_sensor_def(s.name) for s in defs.sensors or []]
    return {s.name: {
        "type": s.sensor_type.value,
        "default_status": s.default_status.value,
        "interval_seconds": s.minimum_interval_seconds,
        "jobs": sorted({t.job_name for t in s.targets}),
    } for s in sorted(sensors, key=lambda s: s.name)}


@pytest.fixture
def snapshot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed environment: the DuckDB warehouse, a throwaway data folder, and the full spec's
    `python` trigger module importable."""
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("STAGECOACH_EXECUTOR", raising=False)
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.syspath_prepend(str(FULL_SPEC))


def as_yaml(graph: dict[str, Any]) -> str:
    return yaml.safe_dump(graph, sort_keys=False, width=100, default_flow_style=False)


@pytest.mark.usefixtures("snapshot_env")
@pytest.mark.parametrize("case", sorted(CASES))
def test_graph_matches_snapshot(case: str) -> None:
    spec, snapshot = CASES[case]
    actual = as_yaml(graph_of(build_definitions(spec)))
    if os.environ.get(UPDATE_ENV) == "1":
        snapshot.write_text(actual, encoding="utf-8")
    assert snapshot.is_file(), (f"no snapshot {snapshot}: create it with {UPDATE_ENV}=1 pytest "
                                "tests/unit/test_graph_snapshot.py and review it")
    expected = snapshot.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                        f"{snapshot.name} (stored)", f"{snapshot.name} (built)"))
    assert not diff, (f"the `{case}` graph changed:\n{diff}\nIf the change is meant, regenerate "
                      f"with {UPDATE_ENV}=1 pytest tests/unit/test_graph_snapshot.py and commit "
                      "the reviewed diff.")


@pytest.mark.usefixtures("snapshot_env")
def test_full_spec_uses_every_section_and_kind() -> None:
    """The full spec must keep covering every section and kind, or the snapshot protects less
    than it claims."""
    from assets import spec as models
    from orchestration.spec_loader import load_workflows

    [loaded] = load_workflows(CASES["full"][0])
    workflow = loaded.spec
    for section in models.Workflow.model_fields:
        assert getattr(workflow, section), f"the full spec has no `{section}:`"
    kinds = {
        "connections": {c.kind for c in workflow.connections.values()},
        "triggers": {t.when.kind for t in workflow.triggers.values()},
        "steps": {s.kind for a in workflow.automations.values() for s in a.steps},
        "alerts": {a.kind for a in workflow.alerts.values()},
    }
    unions = {"connections": models.Connection, "triggers": models.TriggerWhen,
              "steps": models.Step, "alerts": models.Alert}
    for part, union in unions.items():
        every = {get_args(m.model_fields["kind"].annotation)[0]
                 for m in get_args(get_args(union)[0])}
        assert kinds[part] == every, f"{part}: missing {sorted(every - kinds[part])}"
    assert any(a.chain for a in workflow.automations.values())
    assert any(a.seal.gpg and a.seal.zip for a in workflow.activations.values())
