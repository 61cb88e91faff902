"""Load benchmark: a workflow of 1,000 couriers and 1,000 activations, loaded by Stagecoach
(YAML parse + checks + Definitions + the resolved repository, what the code server does at
start and on every reload) against hand-written Dagster Definitions of the same graph, built
in the same process.

    .venv/bin/python benchmarks/definitions_load.py                # 1,000 + 1,000, 5 rounds
    .venv/bin/python benchmarks/definitions_load.py --couriers 200 --activations 200
    .venv/bin/python benchmarks/definitions_load.py --profile      # cProfile of one load

The spec is realistic and connected: couriers on a folder, an SFTP server and S3 (half of them
dated, so daily-partitioned), one domain table per courier (six tagged columns, a primary key),
a `mart` database whose tables union ten domain tables each, queries over the mart with a
row-count check, activations delivering the queries as CSV or PSV to a folder or SFTP, ten
courier groups (schedules) and ten orchestration groups (run-after sensors).

The hand-written side declares the same assets with plain `@dg.asset` calls (same keys, deps,
groups, owners, kinds, partitions, metadata, checks, resource keys) and the same jobs,
schedules and sensors; before timing, both repositories are compared and must match. Rounds
alternate the two sides; the table shows medians and the ratio Stagecoach / hand-written.
Targets (issue 20): ratio <= 1.15 and Stagecoach under 5 s.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from orchestration.definitions import load_code_location  # noqa: E402
from orchestration.spec_loader import load_workflows  # noqa: E402

WORKFLOW = "bench_scale"
OWNERS = ["team:data"]
START = date(2026, 11, 1)
MART_WIDTH = 10  # domain tables unioned by each mart table
TARGET_RATIO = 1.15  # Stagecoach / hand-written (issue 20)
COLUMNS = {  # domain column: (source column, tag, type the warehouse gets)
    "customer_id": ("Customer ID", "id", "varchar"),
    "email": ("E-mail", "email", "varchar"),
    "phone": ("Phone", "phone", "varchar"),
    "full_name": ("Name", "name", "varchar"),
    "signed_up": ("Signup", "date", "date"),
    "amount": ("Amount", "decimal", "decimal(18,4)"),
}


# ---------------------------------------------------------------- the workflow, as plain data


def courier_connection(i: int) -> str:
    return "landing" if i % 10 < 7 else "vendor_sftp" if i % 10 < 9 else "lake"


def courier_path(i: int) -> str:
    if i % 2 == 0:  # dated: one file a day
        return f"vendor_{i % 50}/c_{i:04d}_{{{{ ds_nodash }}}}.csv"
    return f"snapshots/c_{i:04d}.csv"


def mart_sql(j: int) -> str:
    parts = [f"select customer_id, email, amount from domain.d_{k:04d}"
             for k in range(j * MART_WIDTH, (j + 1) * MART_WIDTH)]
    return "\n  union all ".join(parts)


def query_sql(k: int, marts: int) -> str:
    return (f"select customer_id, email, sum(amount) as amount from mart.t_{k % marts:03d} "
            "group by customer_id, email having sum(amount) >= {{ params.threshold }}")


def sizes(couriers: int, activations: int) -> tuple[int, int]:
    """(mart tables, queries) that connect `couriers` domain tables to `activations`."""
    return max(1, couriers // MART_WIDTH), max(1, activations // 2)


def spec_text(root: Path, couriers: int, activations: int, groups: int = 10) -> str:
    marts, queries = sizes(couriers, activations)
    out = [f"""workflow:
  name: {WORKFLOW}
  owners: [{', '.join(OWNERS)}]
  timezone: UTC
  start_date: {START.isoformat()}
  params: {{threshold: 100}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
  outbox: {{kind: folder, path: {root / 'outbox'}}}
  vendor_sftp:
    kind: sftp
    host: sftp.vendor.example
    username: acme
    password: {{env: VENDOR_SFTP_PASSWORD}}
    known_hosts: {root / 'known_hosts'}
    base_path: /outgoing
  lake: {{kind: s3, bucket: acme-lake, prefix: incoming/, region: eu-west-1}}
couriers:"""]
    for i in range(couriers):
        out.append(f"  c_{i:04d}: {{from: {courier_connection(i)}, path: \"{courier_path(i)}\"}}")
    out.append("domain_tables:")
    for i in range(couriers):
        out.append(f"  d_{i:04d}:\n    from: c_{i:04d}\n    primary_key: [customer_id]\n"
                   "    columns:")
        for name, (source, tag, _) in COLUMNS.items():
            extra = ", required: true, not_null: true" if name == "customer_id" else ""
            out.append(f"      {name}: {{source: {source}, tag: {tag}{extra}}}")
    out.append("databases:\n  mart:\n    description: Customers by vendor.\n    tables:")
    for j in range(marts):
        sql = mart_sql(j).replace("\n", "\n        ")
        out.append(f"      t_{j:03d}:\n        sql: |\n          {sql}")
    out.append("queries:")
    for k in range(queries):
        out.append(f"  q_{k:03d}:\n    sql: \"{query_sql(k, marts)}\"\n"
                   "    checks: {min_rows: 1}")
    out.append("activations:")
    for i in range(activations):
        if i % 2 == 0:
            target = (f"to: outbox, path: crm, file: {{name: \"a_{i:04d}_{{{{ ds }}}}.csv\"}}")
        else:
            target = (f"to: vendor_sftp, path: audiences, file: {{type: psv, "
                      f"name: \"a_{i:04d}_{{{{ ds_nodash }}}}.txt\"}}")
        out.append(f"  a_{i:04d}: {{query: q_{i % queries:03d}, {target}}}")
    out.append("courier_groups:")
    for g in range(groups):
        members = ", ".join(f"c_{i:04d}" for i in range(couriers) if i % groups == g)
        out.append(f"  g_{g}:\n    couriers: [{members}]\n    run: load_and_build\n"
                   f"    schedule: {{cron: \"0 {g % 24} * * *\"}}")
    out.append("orchestration_groups:")
    for g in range(groups):
        members = ", ".join(f"a_{i:04d}" for i in range(activations) if i % groups == g)
        out.append(f"  o_{g}:\n    activations: [{members}]\n    after: g_{g}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- hand-written Definitions


def hand_written(root: Path, couriers: int, activations: int, groups: int = 10
                 ) -> dg.Definitions:
    """The same graph written directly against Dagster's API, as a team would by hand."""
    from resources.connections.folder import FolderResource
    from resources.connections.s3 import S3BucketResource
    from resources.connections.sftp import SftpResource
    from resources.staging import StagingResource
    from resources.warehouse import WarehouseResource

    marts, queries = sizes(couriers, activations)
    daily = dg.DailyPartitionsDefinition(start_date=START.isoformat(), timezone="UTC")
    retry = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)
    schema = dg.TableSchema(columns=[
        dg.TableColumn(c, kind, description=f"{tag} from `{source}`",
                       constraints=dg.TableColumnConstraints(nullable=c != "customer_id"))
        for c, (source, tag, kind) in COLUMNS.items()])
    fmt = {"type": "csv", "delimiter": None, "header": True, "quote": '"', "escape": None,
           "encoding": "utf-8", "compression": "auto", "sheet": None, "skip_rows": 0}
    conn_kind = {"landing": "folder", "vendor_sftp": "sftp", "lake": "s3", "outbox": "folder"}
    assets: list[dg.AssetsDefinition] = []

    # What a hand-written asset would do lives in its own function, as in a hand-written
    # module (one `def` per asset); loading never calls it. One function shared by every asset
    # would let Dagster's one-entry signature cache (per op function) skip two signature
    # inspections per asset, which no real module gets. No docstring: Dagster parses one per
    # asset, and Stagecoach's assets have none either. The signature is Stagecoach's, set as
    # objects (this module's annotations are strings, which dg.asset refuses).
    def body():
        def compute(context):
            return None

        compute.__annotations__ = {"context": dg.AssetExecutionContext,
                                   "return": dg.MaterializeResult}
        return compute

    for i in range(couriers):
        conn = courier_connection(i)
        assets.append(dg.asset(
            key=["courier", f"c_{i:04d}_file"], group_name=WORKFLOW, owners=OWNERS,
            description=f"Pulls `{courier_path(i)}` from connection `{conn}` "
                        f"({conn_kind[conn]}).",
            kinds={conn_kind[conn], "csv"}, partitions_def=daily if i % 2 == 0 else None,
            required_resource_keys={f"{WORKFLOW}__{conn}", "staging"},
            metadata={"connection": conn, "source": courier_path(i),
                      "format": dg.MetadataValue.json(fmt)},
            retry_policy=retry)(body()))
    for i in range(couriers):
        key = dg.AssetKey(["domain", f"d_{i:04d}"])
        assets.append(dg.asset(
            key=key, group_name=WORKFLOW, owners=OWNERS, kinds={"table", "duckdb"},
            description=f"Domain table from courier `c_{i:04d}`.",
            check_specs=[dg.AssetCheckSpec("primary_key_unique", asset=key, blocking=True,
                                           description="No two rows share (customer_id).")],
            partitions_def=daily if i % 2 == 0 else None, deps=[["courier", f"c_{i:04d}_file"]],
            required_resource_keys={"warehouse", "staging"},
            metadata={"dagster/column_schema": schema,
                      "dagster/table_name": f"domain.d_{i:04d}"})(body()))
    for j in range(marts):
        assets.append(dg.asset(
            key=["db", "mart", f"t_{j:03d}"], group_name=WORKFLOW, owners=OWNERS,
            kinds={"sql", "duckdb"}, description="Customers by vendor.",
            deps=[["domain", f"d_{k:04d}"] for k in range(j * MART_WIDTH,
                                                         (j + 1) * MART_WIDTH)],
            required_resource_keys={"warehouse"},
            metadata={"sql": dg.MetadataValue.md(f"```sql\n{mart_sql(j)}\n```"),
                      "dagster/table_name": f"mart.t_{j:03d}"})(body()))
    for k in range(queries):
        key = dg.AssetKey(["query", f"q_{k:03d}"])
        assets.append(dg.asset(
            key=key, group_name=WORKFLOW, owners=OWNERS, kinds={"sql", "duckdb"},
            description=f"Query/segment `q_{k:03d}`.", deps=[["db", "mart",
                                                               f"t_{k % marts:03d}"]],
            check_specs=[dg.AssetCheckSpec("row_count_in_bounds", asset=key, blocking=True,
                                           description="Rows between 1 and any.")],
            required_resource_keys={"warehouse"},
            metadata={"sql": dg.MetadataValue.md(f"```sql\n{query_sql(k, marts)}\n```"),
                      "dagster/table_name": f"query.q_{k:03d}"})(body()))
    for i in range(activations):
        to, ftype = ("outbox", "csv") if i % 2 == 0 else ("vendor_sftp", "psv")
        assets.append(dg.asset(
            key=["activation", f"a_{i:04d}"], group_name=WORKFLOW, owners=OWNERS,
            kinds={conn_kind[to], ftype}, deps=[["query", f"q_{i % queries:03d}"]],
            description=f"Delivers query `q_{i % queries:03d}` to `{to}`.",
            required_resource_keys={"warehouse", "staging", "archive", f"{WORKFLOW}__{to}"},
            metadata={"destinations": to, "path_template": "crm" if i % 2 == 0 else "audiences",
                      "file": dg.MetadataValue.json({"type": ftype, "name": f"a_{i:04d}"}),
                      "seal": "none", "empty_result": "skip", "overwrite": True,
                      "file_history": "table stagecoach.file_history"},
            retry_policy=retry)(body()))
    jobs: list = [dg.define_asset_job(f"{WORKFLOW}_job",
                                      selection=dg.AssetSelection.groups(WORKFLOW))]

    @dg.op(name=f"{WORKFLOW}_resend_file",
           required_resource_keys={"warehouse", "staging", "archive", f"{WORKFLOW}__outbox",
                                   f"{WORKFLOW}__vendor_sftp"})
    def resend_file(context) -> None:  # the file-history re-send job; loading never calls it
        return None

    @dg.job(name=f"{WORKFLOW}_resend_job")
    def resend_job() -> None:
        resend_file()

    jobs.append(resend_job)
    schedules, sensors = [], []
    for g in range(groups):
        loaded = dg.AssetSelection.assets(
            *[dg.AssetKey(["courier", f"c_{i:04d}_file"]) for i in range(couriers)
              if i % groups == g],
            *[dg.AssetKey(["domain", f"d_{i:04d}"]) for i in range(couriers) if i % groups == g])
        load = dg.define_asset_job(f"{WORKFLOW}_g_{g}_job", selection=loaded.downstream()
                                   - dg.AssetSelection.key_prefixes(["activation"]))
        deliver = dg.define_asset_job(f"{WORKFLOW}_o_{g}_job", selection=dg.AssetSelection.assets(
            *[dg.AssetKey(["activation", f"a_{i:04d}"]) for i in range(activations)
              if i % groups == g]))
        jobs += [load, deliver]
        schedules.append(dg.ScheduleDefinition(
            name=f"{WORKFLOW}_g_{g}_schedule", job_name=load.name,
            cron_schedule=f"0 {g % 24} * * *", execution_timezone="UTC",
            required_resource_keys={f"{WORKFLOW}__landing", f"{WORKFLOW}__vendor_sftp",
                                    f"{WORKFLOW}__lake"},
            run_config_fn=lambda context: {}))

        @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS,
                              name=f"{WORKFLOW}_o_{g}_after_sensor", monitored_jobs=[load],
                              request_job=deliver)
        def after(context: dg.RunStatusSensorContext) -> dg.RunRequest:
            return dg.RunRequest(run_key=f"after:{context.dagster_run.run_id}")

        sensors.append(after)
    data = root / "data"
    resources = {
        f"{WORKFLOW}__landing": FolderResource(path=str(root / "landing")),
        f"{WORKFLOW}__outbox": FolderResource(path=str(root / "outbox")),
        f"{WORKFLOW}__vendor_sftp": SftpResource(
            host="sftp.vendor.example", username="acme",
            password=dg.EnvVar("VENDOR_SFTP_PASSWORD"), known_hosts=str(root / "known_hosts"),
            base_path="/outgoing"),
        f"{WORKFLOW}__lake": S3BucketResource(bucket="acme-lake", prefix="incoming/",
                                              region_name="eu-west-1"),
        "warehouse": WarehouseResource(url=f"duckdb:///{data / 'warehouse.duckdb'}"),
        "staging": StagingResource(data_dir=str(data)),
        "archive": FolderResource(path=str(data / "archive")),
    }
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                          resources=resources, executor=dg.in_process_executor)


# ---------------------------------------------------------------- the two loads


def stagecoach_load(folder: Path) -> dg.RepositoryDefinition:
    """What the code server does: parse and check every spec, build, resolve (the code
    location's own entry point, `defs`, calls load_code_location)."""
    return load_code_location(folder).get_repository_def()


def graph_of(repo: dg.RepositoryDefinition) -> dict:
    """What both sides must agree on: per asset its deps, group, kinds, owners, partitioning
    and checks; and the job, schedule and sensor names. Metadata keys are kept apart: the
    hand-written side declares those Stagecoach had when this was written, and Stagecoach may
    have added some since (it then does a little more work, never less)."""
    graph = repo.asset_graph
    assets, metadata = {}, {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets[key.to_user_string()] = (
            sorted(k.to_user_string() for k in node.parent_keys), node.group_name,
            sorted(node.kinds), tuple(node.owners), node.partitions_def is not None,
            sorted(c.name for c in node.check_keys))
        metadata[key.to_user_string()] = set(node.metadata)
    return {"assets": assets, "metadata": metadata,
            "jobs": sorted(j.name for j in repo.get_all_jobs()),
            "schedules": sorted(s.name for s in repo.schedule_defs),
            "sensors": sorted(s.name for s in repo.sensor_defs)}


def graph_differences(ours: dict, theirs: dict) -> list[str]:
    """Why the two repositories are not the same graph (empty: they are)."""
    problems = [f"{part} differ: {sorted(set(ours[part]) ^ set(theirs[part]))[:5]}"
                for part in ("jobs", "schedules", "sensors") if ours[part] != theirs[part]]
    for key in sorted(set(ours["assets"]) | set(theirs["assets"])):
        if ours["assets"].get(key) != theirs["assets"].get(key):
            problems.append(f"{key}: {ours['assets'].get(key)} / {theirs['assets'].get(key)}")
        elif not theirs["metadata"][key] <= ours["metadata"][key]:
            problems.append(f"{key}: metadata {sorted(theirs['metadata'][key])} not all in "
                            f"{sorted(ours['metadata'][key])}")
    return problems


def snapshot(repo: dg.RepositoryDefinition) -> None:
    """The serialisable snapshot the code server sends to the webserver and the daemon."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    RepositorySnap.from_def(repo, defer_snapshots=True)


def cold_caches() -> None:
    """Empty Stagecoach's in-process caches (compiled templates, SQL bindings, ...): a code
    server loads once per process, so a round that found them warm would time less work than
    a real load does (the SQL binding and the templates were ~1.5 s of CPU of 1,000 + 1,000)."""
    from assets import common, sql_bind

    sql_bind._RECENT.clear()
    common._SIGNATURES.clear()
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in {"assets", "orchestration", "sensors", "resources"}:
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def timed(fn: Callable[[], object], cpu: list[float] | None = None) -> tuple[float, object]:
    """Wall seconds of `fn` (and its CPU seconds appended to `cpu`: on a shared machine they
    move less than wall time when other processes compete for the cores)."""
    # Each load as in a fresh code server: the previous round's objects, which Stagecoach's
    # load froze out of the collector's passes (gc.freeze), are collectable again and gone,
    # and Stagecoach's own caches are empty.
    cold_caches()
    gc.unfreeze()
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = fn()
    if cpu is not None:
        cpu.append(time.process_time() - cpu_started)
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--couriers", type=int, default=1000)
    parser.add_argument("--activations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one Stagecoach load")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stagecoach_load_") as tmp:
        root = Path(tmp)
        workflows = root / "workflows"
        workflows.mkdir()
        (root / "known_hosts").write_text("")
        (workflows / f"{WORKFLOW}.yaml").write_text(
            spec_text(root, args.couriers, args.activations))
        os.environ["STAGECOACH_DATA_DIR"] = str(root / "data")
        os.environ.pop("STAGECOACH_WAREHOUSE_URL", None)
        os.environ.pop("STAGECOACH_EXECUTOR", None)
        lines = (workflows / f"{WORKFLOW}.yaml").read_text().count("\n")
        print(f"spec: {args.couriers:,} couriers, {args.activations:,} activations, "
              f"{lines:,} lines of YAML; {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}, dagster {dg.__version__}")

        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(stagecoach_load, workflows)
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(45)
            print(text.getvalue())
            return 0

        ours, theirs = stagecoach_load(workflows), hand_written(root, args.couriers,
                                                                args.activations)
        theirs_repo = theirs.get_repository_def()
        mine, other = graph_of(ours), graph_of(theirs_repo)
        problems = graph_differences(mine, other)
        extra = sorted({k for key, keys in mine["metadata"].items()
                        for k in keys - other["metadata"][key]})
        print(f"the same graph on both sides: {not problems} ({len(mine['assets']):,} assets, "
              f"{len(mine['jobs'])} jobs, {len(mine['schedules'])} schedules, "
              f"{len(mine['sensors'])} sensors)"
              + (f"; metadata only Stagecoach adds: {', '.join(extra)}" if extra else ""))
        if problems:
            print("\n".join(f"  {p}" for p in problems[:10]))
            return 1

        phases: dict[str, list[float]] = {"hand": [], "ours": [], "ours_parse": []}
        cpu: dict[str, list[float]] = {"hand": [], "ours": []}
        for _ in range(args.rounds):
            phases["hand"].append(timed(lambda: hand_written(
                root, args.couriers, args.activations).get_repository_def(), cpu["hand"])[0])
            phases["ours"].append(timed(lambda: stagecoach_load(workflows), cpu["ours"])[0])
            phases["ours_parse"].append(timed(lambda: load_workflows(workflows))[0])
        # Once each (slow): the snapshot the code server then sends to the webserver and daemon.
        hand_snap = timed(lambda: snapshot(theirs_repo))[0]
        ours_snap = timed(lambda: snapshot(ours))[0]
        med = {name: statistics.median(values) for name, values in phases.items()}
        low = {name: min(values) for name, values in phases.items()}
        print(f"\n{args.rounds} alternating rounds in one process; median (fastest); ratio = "
              "Stagecoach / hand-written, lower is better\n")
        print(f"| {'load':<52} | {'hand-written s':>14} | {'Stagecoach s':>14} | "
              f"{'ratio':>11} |")
        print(f"|{'-' * 54}|{'-' * 16}|{'-' * 16}|{'-' * 13}|")
        print(f"| {'YAML parse + checks':<52} | {'-':>14} | "
              f"{med['ours_parse']:>6.2f} ({low['ours_parse']:>5.2f}) | {'':>11} |")
        print(f"| {'parse + Definitions + resolved repository':<52} | "
              f"{med['hand']:>6.2f} ({low['hand']:>5.2f}) | {med['ours']:>6.2f} "
              f"({low['ours']:>5.2f}) | {med['ours'] / med['hand']:>4.2f} "
              f"({low['ours'] / low['hand']:>4.2f}) |")
        print(f"| {'repository snapshot (once each)':<52} | {hand_snap:>14.2f} | "
              f"{ours_snap:>14.2f} | {ours_snap / hand_snap:>11.2f} |")
        cpu_med = {name: statistics.median(values) for name, values in cpu.items()}
        print(f"| {'the load in CPU seconds of the process':<52} | "
              f"{cpu_med['hand']:>14.2f} | {cpu_med['ours']:>14.2f} | "
              f"{cpu_med['ours'] / cpu_med['hand']:>11.2f} |")
        print(f"\nrounds (s): hand-written {', '.join(f'{v:.2f}' for v in phases['hand'])}; "
              f"Stagecoach {', '.join(f'{v:.2f}' for v in phases['ours'])}")
        ratio = med["ours"] / med["hand"]
        met = ratio <= TARGET_RATIO and med["ours"] < 5.0
        print(f"targets (median ratio <= {TARGET_RATIO}, Stagecoach < 5 s): "
              f"ratio {'met' if ratio <= TARGET_RATIO else 'MISSED'}, "
              f"time {'met' if med['ours'] < 5.0 else 'MISSED'}")
        return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
