"""The demo: generate ACME's files, then run the whole workflow on the embedded default.

Runs go to the persistent local instance in DAGSTER_HOME (default `data/dagster_home`), so
`dagster dev` afterwards shows every run, materialization and check of the demo.
"""

import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets import spec
from assets.names import activation_key, courier_key, domain_key, workflow_job_name
from assets.run_day import last_complete_day
from orchestration.cli.demo_data import generate
from orchestration.definitions import build_definitions
from orchestration.spec_loader import load_workflow
from resources import settings
from resources.settings import workflows_dir

DEMO_SPEC = "acme_retail.yaml"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def demo_days(workflow: spec.Workflow, days: int, now: datetime) -> list[date]:
    """The last `days` complete days before `now` (the workflow's time zone), so the UI's
    default partition (the latest: yesterday) has its files on a fresh clone whatever the date;
    never before the spec's start_date. The files' content does not depend on the dates, so
    the demo's row counts, sizes and md5s are the same every day."""
    start = workflow.workflow.start_date
    assert start is not None, "the demo spec is dated"
    last = last_complete_day(workflow.workflow.timezone, now)
    first = max(start, last - timedelta(days=days - 1))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)] or [start]


def run_demo(days: int = 7) -> int:
    """`demo`: generate the demo's files and run the whole workflow for `days` days."""
    loaded = load_workflow(workflows_dir() / DEMO_SPEC)
    workflow = loaded.spec
    dates = demo_days(workflow, days, datetime.now(UTC))
    folder = workflow.connections["landing"]
    assert isinstance(folder, spec.FolderConnection), "the demo lands its files in a folder"
    landing = Path(folder.path)
    counts = generate(landing, dates)
    print(f"generated {counts} into {landing}")

    os.environ.setdefault("DAGSTER_HOME", str(settings.data_dir() / "dagster_home"))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():  # SQLite storage in this folder, run queue limits
        shutil.copyfile(Path(__file__).parents[2] / "deploy" / "dagster.yaml",
                        home / "dagster.yaml")
    defs = build_definitions(workflows_dir())
    job = defs.resolve_job_def(workflow_job_name(workflow.workflow.name))
    daily = [courier_key("orders"), domain_key("orders")]
    with dg.DagsterInstance.get() as instance:
        for day in dates[:-1]:  # backfill the earlier days' orders, then run everything once
            result = job.execute_in_process(instance=instance, partition_key=day.isoformat(),
                                            asset_selection=daily, raise_on_error=False,
                                            run_config=QUIET)
            print(f"{day}: orders loaded" if result.success else f"{day}: FAILED")
            if not result.success:
                return 1
        result = job.execute_in_process(instance=instance, partition_key=dates[-1].isoformat(),
                                        raise_on_error=False, run_config=QUIET)
        if not result.success:
            print(f"the demo run {result.run_id} failed; see `dagster dev` for its logs")
            return 1
        print(f"workflow run {result.run_id} succeeded; warehouse: "
              f"{settings.warehouse_display()}")
        for name in workflow.activations:
            event = instance.get_latest_materialization_event(activation_key(name))
            meta = event.asset_materialization.metadata if event and \
                event.asset_materialization else {}
            print(f"  {name}: {meta['dagster/row_count'].value} rows, {meta['size'].value} "
                  f"bytes, md5 {meta['md5'].value} -> {meta['destination'].value} "
                  f"[{meta['status'].value}, ledger {meta['ledger_ids'].value}]")
    print("File history: `.venv/bin/python -m orchestration history`; copy a file out with "
          "`... download LEDGER_ID`; re-send one with the acme_retail_resend_job.")
    print(f"Browse the runs, assets and checks: `make dev` (DAGSTER_HOME={home}), then "
          "http://127.0.0.1:3000")
    return 0
