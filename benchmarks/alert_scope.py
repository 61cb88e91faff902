"""Alert sensors watching the whole code location: what attributing each run to a workflow by
its assets costs a tick.

An instance holds N failed `__ASSET_JOB` runs (an asset's Materialize button on a courier whose
file is missing). Two run-failure sensors read them, from a cursor before the first, in the
same process, alternating rounds:

- Stagecoach's `<workflow>_run_failure_alert_sensor`, whose only reporter follows another
  group (`jobs: [other]`): every run is fetched, attributed (RunScope) and found to need no
  alert, so the tick is the attribution's cost;
- the anchor: a bare `@dg.run_failure_sensor` on the same location that does nothing.

The table shows median tick times and the ratio Stagecoach / anchor. Target: ratio <= 1.5.

    .venv/bin/python benchmarks/alert_scope.py            # 200 runs, 5 rounds
    .venv/bin/python benchmarks/alert_scope.py --runs 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.names import courier_key
from orchestration.definitions import build_definitions

SPEC = """
workflow: {{name: bench}}
connections:
  landing: {{kind: folder, path: {landing}}}
couriers:
  orders: {{from: landing, path: orders.csv}}
  stock: {{from: landing, path: stock.csv}}
courier_groups:
  load: {{couriers: [orders], run: load}}
  other: {{couriers: [stock], run: load}}
alerts:
  ops: {{kind: webhook, url: {{env: BENCH_HOOK_URL}}, send_on: [failure], jobs: [other]}}
"""


@dg.run_failure_sensor(name="anchor_sensor")
def anchor(context: dg.RunFailureSensorContext) -> None:
    """Reads each failed run and does nothing: Dagster's own cost of a failure sensor."""


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, defs: dg.Definitions,
         cursor: str | None) -> tuple[float, str | None]:
    started = time.perf_counter()
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                        cursor=cursor))
    return time.perf_counter() - started, data.cursor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "landing").mkdir()
        (root / "workflows").mkdir()
        (root / "workflows" / "bench.yaml").write_text(SPEC.format(landing=root / "landing"))
        os.environ["STAGECOACH_DATA_DIR"] = str(root / "data")
        os.environ["BENCH_HOOK_URL"] = "http://127.0.0.1:9/never"
        os.environ.pop("STAGECOACH_WAREHOUSE_URL", None)
        defs = dg.Definitions.merge(build_definitions(root / "workflows"),
                                    dg.Definitions(sensors=[anchor]))
        ours = defs.resolve_sensor_def("bench_run_failure_alert_sensor")
        theirs = defs.resolve_sensor_def("anchor_sensor")
        job = defs.resolve_implicit_global_asset_job_def()
        with dg.instance_for_test() as instance:
            start = {s.name: tick(s, instance, defs, None)[1] for s in (ours, theirs)}
            for _ in range(args.runs):
                job.execute_in_process(instance=instance, asset_selection=[courier_key("orders")],
                                       raise_on_error=False,
                                       run_config={"loggers": {"console": {"config": {
                                           "log_level": "CRITICAL"}}}})
            times: dict[str, list[float]] = {ours.name: [], theirs.name: []}
            for _ in range(args.rounds):
                for sensor in (ours, theirs):
                    cursor, total = start[sensor.name], 0.0
                    while True:  # a tick reads a batch of events: drain them all
                        spent, after = tick(sensor, instance, defs, cursor)
                        total += spent
                        if after == cursor:
                            break
                        cursor = after
                    times[sensor.name].append(total)
    ours_s, theirs_s = (statistics.median(times[n]) for n in (ours.name, theirs.name))
    print(f"{args.runs} failed __ASSET_JOB runs, median of {args.rounds} rounds")
    print("| sensor | tick time | ratio |\n|---|---|---|")
    print(f"| Stagecoach failure alert (attributes each run) | {ours_s:.3f} s | "
          f"{ours_s / theirs_s:.2f} |")
    print(f"| bare run_failure_sensor (anchor) | {theirs_s:.3f} s | 1.00 |")
    return 0 if ours_s / theirs_s <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
