"""Courier and orchestration groups: jobs, schedules and sensors built from a spec, evaluated
tick by tick against real folders and a real (ephemeral) instance."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from orchestration.connections import resource_for
from orchestration.definitions import build_definitions
from orchestration.spec_loader import load_workflows
from resources.connections.folder import FolderResource

pytestmark = pytest.mark.timeout(300)



def spec(root: Path, groups: str) -> Path:
    landing = root / "landing"
    landing.mkdir(exist_ok=True)
    folder = root / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / "grp.yaml").write_text(f"""
workflow: {{name: grp, owners: [team:data], timezone: UTC, start_date: 2026-11-01}}
connections:
  landing: {{kind: folder, path: {landing}}}
  outbox: {{kind: folder, path: {root / 'outbox'}}}
couriers:
  customers: {{from: landing, path: customers.csv}}
  orders: {{from: landing, path: "orders_{{{{ ds_nodash }}}}.csv"}}
domain_tables:
  customers: {{from: customers, columns: {{id: {{tag: id}}, name: {{tag: name}}}}}}
  orders: {{from: orders, columns: {{id: {{tag: id}}, customer: {{tag: id}}}}}}
queries:
  everyone: {{sql: "select c.id, c.name from domain.customers c order by c.id"}}
activations:
  export: {{query: everyone, to: outbox, file: {{name: everyone.csv}}}}
{groups}
""")
    return folder


def defs_and_resources(folder: Path) -> tuple[dg.Definitions, dict]:
    [loaded] = load_workflows(folder)
    resources = {f"grp__{n}": resource_for(c) for n, c in loaded.spec.connections.items()}
    return build_definitions(folder), resources


def schedule_tick(defs: dg.Definitions, name: str, resources: dict, when: datetime,
                  instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    schedule = defs.resolve_schedule_def(name)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                        resources=resources,
                                        repository_def=defs.get_repository_def())
    result = schedule.evaluate_tick(context)
    if result.skip_message:
        return dg.SkipReason(result.skip_message)
    [request] = result.run_requests
    return request


NIGHTLY = """
courier_groups:
  nightly:
    couriers: [customers, orders]
    schedule: {cron: "0 2 * * *"}
    missing_files: MISSING
    duration_alert: 90m
    concurrency: CONCURRENCY
orchestration_groups:
  campaigns:
    activations: [export]
    queries: [everyone]
    after: nightly
"""


def nightly(root: Path, missing: str = "notify_and_stop", concurrency: str = "queue") -> Path:
    return spec(root, NIGHTLY.replace("MISSING", missing).replace("CONCURRENCY", concurrency))


def land(root: Path, day: str = "20261106") -> None:
    (root / "landing" / "customers.csv").write_text("id,name\n1,ada\n")
    (root / "landing" / f"orders_{day}.csv").write_text("id,customer\n10,1\n")


TICK = datetime(2026, 11, 7, 2, 0, tzinfo=UTC)


def test_groups_become_jobs_schedules_and_sensors(stagecoach_env: Path):
    defs, _ = defs_and_resources(nightly(stagecoach_env))
    job = defs.resolve_job_def("grp_nightly_job")
    assert job.tags["stagecoach/duration_alert_seconds"] == "5400"
    assert job.tags["stagecoach/serial"] == "grp_nightly_job"
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    # load, build and activate (the default run type): everything downstream of the couriers
    assert keys == {"courier/customers_file", "courier/orders_file", "domain/customers",
                    "domain/orders", "query/everyone", "activation/export"}
    campaigns = defs.resolve_job_def("grp_campaigns_job")
    assert {k.to_user_string() for k in campaigns.asset_layer.executable_asset_keys} == {
        "query/everyone", "activation/export"}
    schedule = defs.resolve_schedule_def("grp_nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    after = defs.resolve_sensor_def("grp_campaigns_after_sensor")
    assert after.default_status == dg.DefaultSensorStatus.RUNNING


@pytest.mark.parametrize(("run", "expected"), [
    ("load", {"courier/customers_file", "courier/orders_file", "domain/customers",
              "domain/orders"}),
    ("load_and_build", {"courier/customers_file", "courier/orders_file", "domain/customers",
                        "domain/orders", "query/everyone"}),
])
def test_run_types_select_their_assets(stagecoach_env: Path, run: str, expected: set[str]):
    folder = spec(stagecoach_env, f"courier_groups:\n  nightly:\n    couriers: [customers, "
                                  f"orders]\n    run: {run}\n    enabled: false\n"
                                  "    schedule: {cron: '0 2 * * *'}\n")
    defs, _ = defs_and_resources(folder)
    job = defs.resolve_job_def("grp_nightly_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == expected
    assert defs.resolve_schedule_def("grp_nightly_schedule").default_status == \
        dg.DefaultScheduleStatus.STOPPED  # disabled: created, but stopped


def test_schedule_loads_yesterdays_files_when_they_are_there(stagecoach_env: Path):
    root = stagecoach_env
    defs, resources = defs_and_resources(nightly(root))
    land(root, "20261106")
    with dg.instance_for_test() as instance:
        request = schedule_tick(defs, "grp_nightly_schedule", resources, TICK, instance)
        assert isinstance(request, dg.RunRequest)
        assert request.partition_key == "2026-11-06"  # the last complete day at 02:00
        assert "stagecoach/missing_files" not in request.tags


def test_notify_and_stop_names_the_missing_files_and_runs_nothing(stagecoach_env: Path):
    root = stagecoach_env
    defs, resources = defs_and_resources(nightly(root))
    (root / "landing" / "customers.csv").write_text("id,name\n1,ada\n")
    with dg.instance_for_test() as instance:
        skipped = schedule_tick(defs, "grp_nightly_schedule", resources, TICK, instance)
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message == ("missing files, so nothing runs (notify and stop): "
                                    "orders: landing/orders_20261106.csv")


def test_notify_and_continue_runs_without_the_missing_files(stagecoach_env: Path):
    root = stagecoach_env
    defs, resources = defs_and_resources(nightly(root, "notify_and_continue"))
    (root / "landing" / "customers.csv").write_text("id,name\n1,ada\n")
    with dg.instance_for_test() as instance:
        request = schedule_tick(defs, "grp_nightly_schedule", resources, TICK, instance)
        assert isinstance(request, dg.RunRequest)
        assert request.tags["stagecoach/missing_files"] == "orders: landing/orders_20261106.csv"
        assert request.tags["stagecoach/optional_couriers"] == "orders"
        # The run itself goes on: the courier without a file loads nothing, the rest runs.
        result = defs.resolve_job_def("grp_nightly_job").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags,
            raise_on_error=False)
        assert result.success
        assert (root / "outbox" / "everyone.csv").read_text() == "id,name\n1,Ada\n"


def test_a_courier_may_override_its_groups_policy(stagecoach_env: Path):
    root = stagecoach_env
    folder = nightly(root)  # the group stops on a missing file...
    text = (folder / "grp.yaml").read_text().replace(
        'orders: {from: landing, path: "orders_{{ ds_nodash }}.csv"}',
        'orders: {from: landing, path: "orders_{{ ds_nodash }}.csv", '
        'missing_files: notify_and_continue}')  # ...but orders may be late
    (folder / "grp.yaml").write_text(text)
    defs, resources = defs_and_resources(folder)
    (root / "landing" / "customers.csv").write_text("id,name\n1,ada\n")
    with dg.instance_for_test() as instance:
        request = schedule_tick(defs, "grp_nightly_schedule", resources, TICK, instance)
    assert isinstance(request, dg.RunRequest)
    assert request.tags["stagecoach/optional_couriers"] == "orders"


class CountingFolder(FolderResource):
    """A real folder that counts its listings (one per directory per tick is the promise)."""

    def list_files(self, pattern: str) -> list:
        calls = Path(self.path) / ".listings"
        calls.write_text(str(int(calls.read_text() or 0) + 1) if calls.exists() else "1")
        return super().list_files(pattern)


def wait_spec(root: Path, up_to: str = "1d", then: str = "notify_and_stop") -> Path:
    return spec(root, f"""
courier_groups:
  nightly:
    couriers: [customers, orders]
    schedule: {{cron: "* * * * *"}}
    missing_files: wait
    wait: {{up_to: {up_to}, every: 30s, then: {then}}}
""")


def wait_tick(defs: dg.Definitions, resources: dict, cursor: str | None,
              instance: dg.DagsterInstance) -> tuple[list, str | None, str | None]:
    sensor = defs.resolve_sensor_def("grp_nightly_missing_files_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                      definitions=defs)
    result = sensor.evaluate_tick(context)
    return result.run_requests or [], result.skip_message, result.cursor


def today() -> str:
    """The day a dated group loads: the last complete one."""
    return (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d")


def test_wait_sensor_takes_files_once_they_are_stable(stagecoach_env: Path):
    root = stagecoach_env
    defs, resources = defs_and_resources(wait_spec(root))
    resources["grp__landing"] = CountingFolder(path=str(root / "landing"))
    with dg.instance_for_test() as instance:
        requests, skip, cursor = wait_tick(defs, resources, None, instance)
        assert not requests and "customers: landing/customers.csv" in skip
        assert (root / "landing" / ".listings").read_text() == "1"  # one folder, one listing

        land(root, today())
        orders = root / "landing" / f"orders_{today()}.csv"
        old = time.time() - 7 * 86400  # an mtime older than any tick: still taken
        os.utime(orders, (old, old))
        requests, skip, cursor = wait_tick(defs, resources, cursor, instance)
        assert not requests and "looking again" in skip  # first sight: not yet stable

        with open(orders, "a") as growing:  # still being written between two looks
            growing.write("11,1\n")
        requests, skip, cursor = wait_tick(defs, resources, cursor, instance)
        assert not requests and f"orders_{today()}.csv (new or still being written" in skip

        requests, skip, cursor = wait_tick(defs, resources, cursor, instance)
        [request] = requests
        assert request.run_key.startswith("grp_nightly_job:")
        assert json.loads(cursor)["done"] == "launched"

        # The next ticks of the same window (a daemon restart reads the stored cursor) do not
        # launch again.
        requests, skip, _ = wait_tick(defs, resources, cursor, instance)
        assert not requests and "is done (launched)" in skip


class ListingCounter(FolderResource):
    """A real folder connection that counts its listings by (folder, directory pattern)."""

    listings: ClassVar[Counter] = Counter()

    def list_files(self, pattern: str) -> list:
        ListingCounter.listings[(Path(self.path).name, pattern)] += 1
        return super().list_files(pattern)


def many_couriers_spec(root: Path) -> Path:
    """45 couriers in three directories of two folder connections, in one scheduled group:
    dated names, fixed names and globs side by side in the same directory."""
    couriers = {f"c_{i:02d}": ("landing", f"drop/c_{i:02d}_{{{{ ds_nodash }}}}.csv")
                for i in range(30)}
    couriers |= {f"r_{i}": ("landing", f"drop/r_{i}_*.csv") for i in range(5)}
    couriers |= {f"s_{i}": ("landing", f"snap/s_{i}.csv") for i in range(5)}
    couriers |= {f"p_{i}": ("partner", f"p_{i}_{{{{ ds_nodash }}}}.csv") for i in range(5)}
    lines = ["workflow: {name: many, owners: [team:data], timezone: UTC, "
             "start_date: 2026-11-01}", "connections:",
             f"  landing: {{kind: folder, path: {root / 'landing'}}}",
             f"  partner: {{kind: folder, path: {root / 'partner'}}}", "couriers:"]
    lines += [f'  {name}: {{from: {conn}, path: "{path}"}}'
              for name, (conn, path) in couriers.items()]
    lines += ["courier_groups:", f"  everything: {{couriers: [{', '.join(couriers)}], "
              "run: load, schedule: {cron: '0 2 * * *'}}"]
    folder = root / "workflows"
    folder.mkdir()
    (folder / "many.yaml").write_text("\n".join(lines) + "\n")
    return folder


def test_a_schedule_tick_lists_each_directory_once(stagecoach_env: Path):
    root = stagecoach_env
    drop, snap, partner = root / "landing" / "drop", root / "landing" / "snap", root / "partner"
    for folder in (drop, snap, partner):
        folder.mkdir(parents=True)
    for day in ("20261104", "20261105", "20261106"):  # older days' files stay in the folder
        for i in range(30):
            (drop / f"c_{i:02d}_{day}.csv").write_text("id\n1\n")
        for i in range(5):
            (partner / f"p_{i}_{day}.csv").write_text("id\n1\n")
    for i in range(5):
        (drop / f"r_{i}_{i}.csv").write_text("id\n1\n")
        (snap / f"s_{i}.csv").write_text("id\n1\n")
    [loaded] = load_workflows(many_couriers_spec(root))
    defs = build_definitions(root / "workflows")
    resources = {f"many__{n}": ListingCounter(path=c.path)
                 for n, c in loaded.spec.connections.items()}
    once_each = {("landing", "drop/*"): 1, ("landing", "snap/*"): 1, ("partner", "./*"): 1}
    with dg.instance_for_test() as instance:
        ListingCounter.listings.clear()
        request = schedule_tick(defs, "many_everything_schedule", resources, TICK, instance)
        assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-11-06"
        assert dict(ListingCounter.listings) == once_each  # 45 couriers, three listings

        # A file still being uploaded (a partial name) is not the courier's file, and the
        # glob `r_3_*.csv` is not satisfied by r_30 or r_3.csv.
        (drop / "c_07_20261106.csv").rename(drop / ".c_07_20261106.csv.1a2b3c4d.partial")
        (drop / "r_3_3.csv").rename(drop / "r_30.csv")
        (drop / "r_3.csv").write_text("id\n1\n")
        ListingCounter.listings.clear()
        skipped = schedule_tick(defs, "many_everything_schedule", resources, TICK, instance)
        assert isinstance(skipped, dg.SkipReason)
        assert skipped.skip_message.endswith(
            "c_07: landing/drop/c_07_20261106.csv; r_3: landing/drop/r_3_*.csv"), \
            skipped.skip_message
        assert dict(ListingCounter.listings) == once_each


@pytest.mark.parametrize("then", ["notify_and_stop", "notify_and_continue"])
def test_wait_deadline_applies_the_follow_up_policy(stagecoach_env: Path, then: str):
    root = stagecoach_env
    defs, resources = defs_and_resources(wait_spec(root, up_to="1s", then=then))
    (root / "landing" / "customers.csv").write_text("id,name\n1,ada\n")
    earlier = json.dumps({"window": "an earlier window", "done": "launched"})
    if (into_minute := time.time() % 60) < 1.1:  # the 1 s deadline of this minute's tick
        time.sleep(1.1 - into_minute)
    with dg.instance_for_test() as instance:
        requests, skip, cursor = wait_tick(defs, resources, earlier, instance)
    if then == "notify_and_stop":
        assert not requests
        assert skip == ("missing files at the deadline, so nothing runs (notify and stop): "
                        f"orders: landing/orders_{today()}.csv")
    else:
        [request] = requests
        assert request.tags["stagecoach/optional_couriers"] == "orders"
    assert json.loads(cursor)["done"].startswith("deadline passed")


def test_concurrency_skip_and_cancel_running(stagecoach_env: Path):
    root = stagecoach_env
    for policy in ("skip", "cancel_running"):
        defs, resources = defs_and_resources(nightly(root, concurrency=policy))
        land(root, "20261106")
        with dg.instance_for_test() as instance:
            stuck = dg.DagsterRun(job_name="grp_nightly_job", run_id=f"stuck-{policy}",
                                  status=dg.DagsterRunStatus.STARTED)
            instance.add_run(stuck)
            outcome = schedule_tick(defs, "grp_nightly_schedule", resources, TICK, instance)
            if policy == "skip":
                assert isinstance(outcome, dg.SkipReason)
                assert outcome.skip_message.startswith(
                    "grp_nightly_job is still queued or running (stuck-skip (started))")
            else:
                assert isinstance(outcome, dg.RunRequest)
                assert instance.get_run_by_id(stuck.run_id).status in (
                    dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING)


def test_orchestration_group_runs_once_after_a_successful_courier_group(stagecoach_env: Path):
    root = stagecoach_env
    defs, _ = defs_and_resources(nightly(root))
    land(root, "20261106")
    with dg.instance_for_test() as instance:
        upstream = defs.resolve_job_def("grp_nightly_job").execute_in_process(
            instance=instance, partition_key="2026-11-06")
        assert upstream.success
        sensor = defs.resolve_sensor_def("grp_campaigns_after_sensor")
        [success] = [e.dagster_event for e in instance.all_logs(
            upstream.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)]
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=upstream.dagster_run,
            dagster_event=success, repository_def=defs.get_repository_def())
        request = sensor(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == f"after:{upstream.run_id}"  # one run per upstream run
        assert request.tags["stagecoach/upstream_run"] == upstream.run_id


def test_triggers_are_wired_to_their_jobs(stagecoach_env: Path):
    root = stagecoach_env
    folder = spec(root, NIGHTLY.replace("MISSING", "notify_and_stop").replace(
        "CONCURRENCY", "skip") + """
triggers:
  new_drop:
    job: nightly
    every: 30s
    when: {kind: file_change, connection: landing, path: "drops/*.csv"}
  hook:
    job: campaigns
    when: {kind: webhook, token: {env: SOME_TOKEN}}
""")
    defs, resources = defs_and_resources(folder)
    sensor = defs.resolve_sensor_def("grp_new_drop_sensor")
    assert sensor.job_name == "grp_nightly_job" and sensor.minimum_interval_seconds == 30
    names = {s.name for s in defs.get_repository_def().sensor_defs}
    assert names == {"grp_new_drop_sensor", "grp_campaigns_after_sensor"}  # webhooks: no sensor
    with dg.instance_for_test() as instance:
        instance.add_run(dg.DagsterRun(job_name="grp_nightly_job", run_id="going",
                                       status=dg.DagsterRunStatus.STARTED))
        (root / "landing" / "drops").mkdir()
        cursor = None
        for tick in range(3):  # the first look records; a new file is taken on its second look
            result = sensor.evaluate_tick(dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=resources, definitions=defs))
            cursor = result.cursor
            if tick == 0:
                (root / "landing" / "drops" / "a.csv").write_text("x\n")
        # the target group's `concurrency: skip` applies to its triggers too
        assert not result.run_requests and "still queued or running" in result.skip_message


class SlowFolder(FolderResource):
    """A folder whose listings take a while, like a remote server's under load."""

    def list_files(self, pattern: str) -> list:
        time.sleep(0.2)
        return super().list_files(pattern)


@pytest.mark.fault
def test_listings_past_the_ticks_budget_stop_without_calling_files_missing(
        stagecoach_env: Path):
    from datetime import date
    from types import SimpleNamespace

    from sensors.missing_files import expected_files, look

    root = stagecoach_env
    for folder in (root / "landing" / "drop", root / "landing" / "snap", root / "partner"):
        folder.mkdir(parents=True)
    [loaded] = load_workflows(many_couriers_spec(root))
    workflow = loaded.spec
    expected = expected_files(workflow, list(workflow.couriers), date(2026, 11, 6))
    resources = SimpleNamespace(**{f"many__{n}": SlowFolder(path=c.path)
                                   for n, c in workflow.connections.items()})
    assert len(look(workflow, expected, resources, budget_seconds=5)) == 45  # three listings
    with pytest.raises(TimeoutError, match=r"listing 1 of 3 folders took 0 s \(the budget is 0 s"
                                           r".*no file is reported missing"):
        look(workflow, expected, resources, budget_seconds=0.1)
