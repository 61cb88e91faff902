"""Missing-files benchmark: one tick of a courier group's checks over 1,000 couriers watching
one folder that holds 10,000 files, timed, with the directory listings counted.

    .venv/bin/python benchmarks/missing_files_tick.py                 # 1,000 couriers, 10,000 files
    .venv/bin/python benchmarks/missing_files_tick.py --couriers 200 --files 2000

Three ticks are measured, each evaluated as the daemon does (`evaluate_tick` on the definition,
a real folder, a real instance):
- the courier group's schedule (`missing_files: notify_and_stop`): every file there, so it asks
  for a run;
- the same schedule when one courier's file is missing: it names the file and runs nothing;
- the `missing_files: wait` sensor's first look (sensors/groups.py, sensors/missing_files.py).
The folder connection is Stagecoach's FolderResource with its `list_files` counted (a subclass,
not a mock): the promise is one listing per directory per tick, whatever the number of
couriers. Beside each tick, the same folder listed once with `os.scandir` (what any check of
that folder must at least do) gives the side-by-side ratio. Targets: each tick under 2 s, one
listing per directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from orchestration.connections import resource_for  # noqa: E402
from orchestration.definitions import build_definitions  # noqa: E402
from orchestration.spec_loader import load_workflows  # noqa: E402
from resources.connections.folder import FolderResource  # noqa: E402

WORKFLOW = "tick_scale"
TICK = datetime(2026, 11, 7, 2, 0, tzinfo=UTC)  # loads the 6th: the last complete day
DAY = date(2026, 11, 6)
EARLIER_WINDOW = json.dumps({"window": "an earlier window", "done": "launched"})


class CountingFolder(FolderResource):
    """Stagecoach's folder connection, counting every listing by directory pattern."""

    listings: ClassVar[Counter] = Counter()

    def list_files(self, pattern: str) -> list:
        CountingFolder.listings[pattern] += 1
        return super().list_files(pattern)


def spec_text(landing: Path, couriers: int) -> str:
    lines = [f"workflow: {{name: {WORKFLOW}, owners: [team:data], timezone: UTC, "
             f"start_date: 2026-11-01}}",
             "connections:", f"  landing: {{kind: folder, path: {landing}}}", "couriers:"]
    lines += [f"  c_{i:04d}: {{from: landing, path: \"drop/c_{i:04d}_{{{{ ds_nodash }}}}.csv\"}}"
              for i in range(couriers)]
    members = ", ".join(f"c_{i:04d}" for i in range(couriers))
    lines += ["courier_groups:",
              f"  nightly: {{couriers: [{members}], run: load, "
              "schedule: {cron: \"0 2 * * *\"}, missing_files: notify_and_stop}",
              f"  patient: {{couriers: [{members}], run: load, "
              "schedule: {cron: \"0 2 * * *\"}, missing_files: wait, "
              "wait: {up_to: 23h, every: 5m}}"]
    return "\n".join(lines) + "\n"


def land(folder: Path, couriers: int, files: int) -> None:
    """Each courier's file of DAY, then earlier days' files until `files` are there."""
    folder.mkdir(parents=True, exist_ok=True)
    written, back = 0, 0
    while written < files:
        day = DAY - timedelta(days=back)
        for i in range(couriers):
            if written == files:
                break
            (folder / f"c_{i:04d}_{day:%Y%m%d}.csv").write_text("id\n1\n")
            written += 1
        back += 1


def scandir_once(folder: Path) -> int:
    """The floor: one listing of the folder with each entry's size and mtime."""
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.is_file() and e.stat().st_size >= 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--couriers", type=int, default=1000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.files < args.couriers:
        parser.error("--files must be at least --couriers (each courier has its file)")

    with tempfile.TemporaryDirectory(prefix="stagecoach_tick_") as tmp:
        root = Path(tmp)
        drop = root / "landing" / "drop"
        land(drop, args.couriers, args.files)
        workflows = root / "workflows"
        workflows.mkdir()
        (workflows / f"{WORKFLOW}.yaml").write_text(spec_text(root / "landing", args.couriers))
        os.environ["STAGECOACH_DATA_DIR"] = str(root / "data")
        os.environ.pop("STAGECOACH_WAREHOUSE_URL", None)
        [loaded] = load_workflows(workflows)
        defs = build_definitions(workflows)
        resources = {f"{WORKFLOW}__{n}": resource_for(c)
                     for n, c in loaded.spec.connections.items()}
        resources[f"{WORKFLOW}__landing"] = CountingFolder(path=str(root / "landing"))
        schedule = defs.resolve_schedule_def(f"{WORKFLOW}_nightly_schedule")
        sensor = defs.resolve_sensor_def(f"{WORKFLOW}_patient_missing_files_sensor")
        print(f"{args.couriers:,} couriers, one folder of {len(os.listdir(drop)):,} files; "
              f"{os.cpu_count()} CPUs, dagster {dg.__version__}")

        def schedule_tick(instance: dg.DagsterInstance) -> str:
            context = dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK,
                                                resources=resources,
                                                repository_def=defs.get_repository_def())
            result = schedule.evaluate_tick(context)
            return (f"run requested ({result.run_requests[0].partition_key})"
                    if result.run_requests else f"skipped: {result.skip_message[:70]}...")

        def sensor_tick(instance: dg.DagsterInstance) -> str:
            # A cursor from an earlier window: this tick opens a new one and looks.
            context = dg.build_sensor_context(instance=instance, resources=resources,
                                              definitions=defs, cursor=EARLIER_WINDOW)
            result = sensor.evaluate_tick(context)
            return "run requested" if result.run_requests else \
                f"skipped: {(result.skip_message or '')[:70]}..."

        missing = drop / f"c_0007_{DAY:%Y%m%d}.csv"
        rows = []
        with dg.instance_for_test() as instance:
            for name, tick, prepare in (
                    ("schedule, every file there", schedule_tick, None),
                    ("schedule, one file missing", schedule_tick, "hide"),
                    ("wait sensor, first look", sensor_tick, "restore")):
                if prepare == "hide":
                    missing.rename(missing.with_suffix(".hidden"))
                elif prepare == "restore":
                    missing.with_suffix(".hidden").rename(missing)
                CountingFolder.listings.clear()
                started = time.perf_counter()
                tick(instance)  # the first: Dagster resolves the job, templates get compiled
                first = time.perf_counter() - started
                first_listings = list(CountingFolder.listings.values())
                seconds, floor, outcome = [], [], ""
                for _ in range(args.rounds):
                    CountingFolder.listings.clear()
                    started = time.perf_counter()
                    outcome = tick(instance)
                    seconds.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    scandir_once(drop)
                    floor.append(time.perf_counter() - started)
                listings = dict(CountingFolder.listings)
                rows.append((name, statistics.median(floor), first, statistics.median(seconds),
                             listings, first_listings == [1], outcome))

        print(f"\nfirst: the first tick after the code location loaded; tick: median of "
              f"{args.rounds} later ticks; ratio = tick / one os.scandir of the folder\n")
        print(f"| {'tick':<28} | {'os.scandir s':>12} | {'first s':>7} | {'tick s':>7} | "
              f"{'ratio':>6} | {'listings per directory':<24} | outcome")
        print(f"|{'-' * 30}|{'-' * 14}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 26}|---------")
        met = True
        for name, floor, first, tick_s, listings, first_listed_once, outcome in rows:
            shown = ", ".join(f"{p}: {n}" for p, n in listings.items())
            print(f"| {name:<28} | {floor:>12.4f} | {first:>7.3f} | {tick_s:>7.3f} | "
                  f"{tick_s / floor:>5.0f}x | {shown:<24} | {outcome}")
            met &= (first < 2.0 and tick_s < 2.0 and first_listed_once
                    and list(listings.values()) == [1])
        print(f"\ntargets (each tick < 2 s, exactly one listing per directory): "
              f"{'met' if met else 'MISSED'}")
        return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
