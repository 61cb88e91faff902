"""The demo workflow on the embedded default (DuckDB + folders), run in process."""

import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest

from orchestration.cli.demo_data import generate
from orchestration.definitions import build_definitions

REPO = Path(__file__).resolve().parents[2]
DAYS = [date(2026, 11, 1), date(2026, 11, 2)]


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped workflows in a temp folder, with its own data dir."""
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    monkeypatch.setenv("STAGECOACH_WORKFLOWS_DIR", str(tmp_path / "workflows"))
    monkeypatch.setenv("STAGECOACH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("STAGECOACH_WAREHOUSE_URL", raising=False)
    generate(tmp_path / "data" / "demo" / "landing", DAYS, customers=300, orders_per_day=150)
    return tmp_path


def run(job: dg.JobDefinition, instance: dg.DagsterInstance, day: date,
        selection: list[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(instance=instance, partition_key=day.isoformat(),
                                  asset_selection=selection, raise_on_error=False)


def warehouse(root: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events
                     if e.is_step_failure)


ORDERS = [dg.AssetKey(["courier", "orders_file"]), dg.AssetKey(["domain", "orders"])]
CUSTOMERS = [dg.AssetKey(["courier", "customers_file"]), dg.AssetKey(["domain", "customers"])]


def test_the_demo_command_runs_end_to_end(demo: Path, capfd: pytest.CaptureFixture) -> None:
    from orchestration.cli.demo import run_demo

    assert run_demo(days=2) == 0
    out, err = capfd.readouterr()
    assert "we collect usage statistics" not in out + err  # telemetry off: no banner
    assert (demo / "dagster_home" / "dagster.yaml").read_text().startswith("# The local")
    # The last two complete days in New York, whatever today is: the UI's default partition
    # (the latest) has its files.
    last = datetime.now(ZoneInfo("America/New_York")).date() - timedelta(days=1)
    delivered = sorted(p.relative_to(demo / "data" / "demo" / "outbox").as_posix()
                       for p in (demo / "data" / "demo" / "outbox").rglob("*") if p.is_file())
    assert delivered == [f"crm/high_value_customers_{last:%Y-%m-%d}.csv",
                         f"partner/acme_high_value_{last:%Y%m%d}.txt"]
    assert (demo / "data/demo/landing/orders" / f"orders_{last:%Y%m%d}.csv.gz").exists()
    partner = (demo / f"data/demo/outbox/partner/acme_high_value_{last:%Y%m%d}.txt").read_text()
    header, first = partner.splitlines()[:2]
    assert header.startswith("customer_id|email|phone|")
    assert first.count("|") == header.count("|")
    (orders, partitions), = warehouse(
        demo, "select count(*), count(distinct _partition) from domain.orders")
    assert partitions == 2 and orders == 800  # run_demo's own generator: 400 orders a day


def test_demo_days_are_the_last_complete_days_and_never_before_the_start() -> None:
    from orchestration.cli.demo import demo_days
    from orchestration.spec_loader import load_workflow

    workflow = load_workflow(REPO / "workflows" / "acme_retail.yaml").spec
    # 03:00 UTC on 9 Dec is 22:00 on 8 Dec in New York: the last complete day is the 7th.
    now = datetime(2026, 12, 9, 3, 0, tzinfo=ZoneInfo("UTC"))
    assert demo_days(workflow, 3, now) == [date(2026, 12, 5), date(2026, 12, 6),
                                           date(2026, 12, 7)]
    early = datetime(2026, 11, 3, 12, 0, tzinfo=ZoneInfo("UTC"))  # start_date is 1 Nov
    assert demo_days(workflow, 7, early) == [date(2026, 11, 1), date(2026, 11, 2)]


def test_workflow_job_materialises_every_asset_with_metadata(demo: Path) -> None:
    defs = build_definitions()
    job = defs.resolve_job_def("acme_retail_job")
    with dg.instance_for_test() as instance:
        assert run(job, instance, DAYS[0], ORDERS).success
        result = run(job, instance, DAYS[1])
        assert result.success
        keys = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()
                for m in [m.event_specific_data.materialization]}
        assert keys == {"courier/customers_file", "courier/products_file", "courier/orders_file",
                        "courier/loyalty_members_file", "domain/loyalty_members",
                        "identity/customers", "identity/customers_map",
                        "identity/customers_pairs", "identity/customers_id_changes",
                        "domain/customers", "domain/products", "domain/orders",
                        "db/customer_360/unified_customers", "db/customer_360/lifetime_value",
                        "query/high_value_customers", "activation/partner_file",
                        "activation/crm_csv"}
        delivered = instance.get_latest_materialization_event(
            dg.AssetKey(["activation", "partner_file"])).asset_materialization.metadata
        path = Path(delivered["destination"].value)
        assert path.name == "acme_high_value_20261102.txt"
        import hashlib

        assert delivered["md5"].value == hashlib.md5(path.read_bytes()).hexdigest()
        assert delivered["size"].value == path.stat().st_size
        assert delivered["dagster/row_count"].value == len(path.read_text().splitlines()) - 1
        check = instance.get_latest_materialization_event(
            dg.AssetKey(["query", "high_value_customers"])).asset_materialization.metadata
        assert "| customer_id | email |" in check["preview"].value
        resolved = instance.get_latest_materialization_event(
            dg.AssetKey(["identity", "customers"])).asset_materialization.metadata
        assert resolved["records"].value == 300 + warehouse(
            demo, "select count(*) from domain.loyalty_members")[0][0]
        assert "| customer_id | records | sources |" in resolved["biggest_clusters"].value
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks["max_cluster_size"] and checks["id_stability"]
    assert warehouse(demo, "select count(*) from domain.customers") == [(300,)]
    # Every web customer and loyalty member has one customer id; the unified table one row each.
    assert warehouse(demo, "select count(*), count(distinct source_table || source_key) from "
                           "identity.customers_map") == warehouse(
        demo, "select (select count(*) from domain.customers) + (select count(*) from "
              "domain.loyalty_members), (select count(*) from domain.customers) + "
              "(select count(*) from domain.loyalty_members)")
    assert warehouse(demo, "select count(*) from customer_360.unified_customers") == warehouse(
        demo, "select count(distinct customer_id) from identity.customers_map")
    # Standardised values, not raw ones.
    assert warehouse(demo, "select count(*) from domain.customers where email <> "
                           "lower(trim(email)) or phone not like '+%'") == [(0,)]


@pytest.mark.fault
def test_rerunning_a_partition_replaces_its_rows(demo: Path, reliability) -> None:
    job = build_definitions().resolve_job_def("acme_retail_job")
    with dg.instance_for_test() as instance:
        for _ in range(3):
            assert run(job, instance, DAYS[0], ORDERS).success
        assert run(job, instance, DAYS[1], ORDERS).success
    counts = warehouse(demo, "select _partition, count(*) from domain.orders group by 1 "
                             "order by 1")
    reliability.rows_checked("domain.orders, a partition loaded 3 times", 300,
                             sum(n for _, n in counts))
    assert counts == [("2026-11-01", 150), ("2026-11-02", 150)]


@pytest.mark.fault
def test_a_failed_load_leaves_the_old_table(demo: Path, reliability) -> None:
    job = build_definitions().resolve_job_def("acme_retail_job")
    landing = demo / "data" / "demo" / "landing"
    with dg.instance_for_test() as instance:
        assert run(job, instance, DAYS[0], CUSTOMERS).success
        before = warehouse(demo, "select count(*), sum(hash(email)) from domain.customers")
        original = (landing / "customers.csv").read_text()

        # 1. A required column is missing: the file and the column are named.
        (landing / "customers.csv").write_text(original.replace("E-mail", "Mail", 1))
        result = run(job, instance, DAYS[0], CUSTOMERS)
        assert not result.success
        message = failure_message(result)
        assert "customers.csv:1: missing required column(s) E-mail" in message
        after = warehouse(demo, "select count(*), sum(hash(email)) from domain.customers")
        reliability.rows_checked("domain.customers after a load failed on a missing column",
                                 before[0][0], after[0][0])
        assert after == before

        # 2. A not-null column has a null in the last row: nothing of the file is loaded.
        lines = original.splitlines()
        (landing / "customers.csv").write_text("\n".join([*lines, ",x@y.z" + "," * 7]) + "\n")
        result = run(job, instance, DAYS[0], CUSTOMERS)
        assert not result.success
        assert (f"customers.csv:{len(lines) + 1}: no value in not-null column(s) customer_id"
                in failure_message(result))
        after = warehouse(demo, "select count(*), sum(hash(email)) from domain.customers")
        reliability.rows_checked("domain.customers after a load failed on a null",
                                 before[0][0], after[0][0])
        assert after == before


def test_a_missing_file_fails_with_its_path(demo: Path) -> None:
    job = build_definitions().resolve_job_def("acme_retail_job")
    with dg.instance_for_test() as instance:
        result = run(job, instance, date(2026, 11, 5), ORDERS)
    assert not result.success
    assert "no file matches" in failure_message(result)
    assert "orders/orders_20261105.csv.gz" in failure_message(result)


def test_the_code_location_loads_and_validates(demo: Path) -> None:
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = {key.to_user_string(): sorted(d.to_user_string() for d in deps)
             for key, deps in defs.resolve_asset_graph().asset_dep_graph["upstream"].items()}
    assert graph == {
        "courier/customers_file": [], "courier/products_file": [], "courier/orders_file": [],
        "courier/loyalty_members_file": [],
        "domain/customers": ["courier/customers_file"],
        "domain/products": ["courier/products_file"],
        "domain/orders": ["courier/orders_file"],
        "domain/loyalty_members": ["courier/loyalty_members_file"],
        **{f"identity/customers{suffix}": ["domain/customers", "domain/loyalty_members"]
           for suffix in ("", "_map", "_pairs", "_id_changes")},
        "db/customer_360/unified_customers": ["domain/loyalty_members", "domain/orders",
                                              "identity/customers", "identity/customers_map"],
        "db/customer_360/lifetime_value": ["db/customer_360/unified_customers"],
        "query/high_value_customers": ["db/customer_360/lifetime_value"],
        "activation/partner_file": ["query/high_value_customers"],
        "activation/crm_csv": ["query/high_value_customers"],
    }
    repository = defs.get_repository_def()
    assert sorted(j.name for j in repository.get_all_jobs()) == [
        "__ASSET_JOB", "acme_retail_audiences_job", "acme_retail_job",
        "acme_retail_nightly_job", "acme_retail_resend_job"]
    assert sorted(s.name for s in repository.schedule_defs) == ["acme_retail_nightly_schedule"]
    assert sorted(s.name for s in repository.sensor_defs) == [
        "acme_retail_audiences_after_sensor", "acme_retail_retry_watch_alert_sensor",
        "acme_retail_run_canceled_record_sensor",
        "acme_retail_run_failure_alert_sensor", "acme_retail_run_started_alert_sensor",
        "acme_retail_run_success_alert_sensor", "acme_retail_runtime_alert_sensor",
        "acme_retail_tick_alert_sensor"]
    tick_alerts = repository.get_sensor_def("acme_retail_tick_alert_sensor")
    assert tick_alerts.metadata["reporters"].value == [
        "run_history: dataset stagecoach.run_history on start, success, failure, "
        "runtime_exceeded, missing_files, alarm, sensor_error"]
    key = dg.AssetKey(["domain", "customers"])
    node = defs.resolve_assets_def(key)
    assert node.group_names_by_key[key] == "acme_retail"
    assert node.owners_by_key[key] == ["team:crm-data"]
    assert "email (email)" in node.descriptions_by_key[key].replace("`", "")
    assert node.specs_by_key[key].kinds == {"table", "duckdb"}


def test_validate_command(demo: Path, tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "orchestration", "validate"], cwd=REPO,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "workflow 'acme_retail' is valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow:\n  name: x\ncouriers:\n  a: {from: nowhere, path: a.csv}\n")
    failed = subprocess.run([sys.executable, "-m", "orchestration", "validate", str(bad)],
                            cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "bad.yaml:4 couriers.a.from: unknown connection 'nowhere' (known: none defined)" \
        in failed.stderr


def test_the_code_location_refuses_a_bad_spec(demo: Path) -> None:
    (demo / "dagster_home").mkdir()
    spec = demo / "workflows" / "acme_retail.yaml"
    spec.write_text(spec.read_text().replace("query: high_value_customers",
                                             "query: high_value_customer", 1))
    result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                             "orchestration.definitions"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "activations.partner_file.query: unknown query 'high_value_customer'" in \
        result.stdout + result.stderr


def test_duplicate_primary_keys_fail_the_load(demo: Path) -> None:
    """`bad_rows: fail` (the default): a repeated key fails the load naming both lines, and
    nothing downstream runs. (A key repeated across partitions is the blocking check's: see
    tests/unit/test_bad_files.py.)"""
    job = build_definitions().resolve_job_def("acme_retail_job")
    landing = demo / "data" / "demo" / "landing"
    lines = (landing / "customers.csv").read_text().splitlines()
    (landing / "customers.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    with dg.instance_for_test() as instance:
        assert run(job, instance, DAYS[0], ORDERS).success
        result = run(job, instance, DAYS[0])
    assert not result.success
    key = lines[1].split(",")[0]
    assert (f"customers.csv:{len(lines) + 1}: primary key (customer_id={key}) repeats line 2"
            in failure_message(result))
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "domain/customers" not in materialized
    assert "db/customer_360/unified_customers" not in materialized  # blocked downstream


def test_an_optional_courier_without_files_leaves_the_table(demo: Path) -> None:
    spec = demo / "workflows" / "acme_retail.yaml"
    spec.write_text(spec.read_text().replace(
        "    path: customers.csv\n", "    path: customers*.csv\n    required: false\n", 1))
    job = build_definitions().resolve_job_def("acme_retail_job")
    landing = demo / "data" / "demo" / "landing"
    with dg.instance_for_test() as instance:
        assert run(job, instance, DAYS[0], CUSTOMERS).success
        (landing / "customers.csv").rename(landing / "later.txt")
        result = run(job, instance, DAYS[0], CUSTOMERS)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert warehouse(demo, "select count(*) from domain.customers") == [(300,)]


def test_a_dated_job_without_a_partition_stops_naming_the_tag(demo: Path) -> None:
    """Without Stagecoach's run coordinator (e.g. the Helm chart's stock one), a run of a dated
    job that has no partition stops at its first dated asset with what to do, and loads
    nothing: undated, one file would replace every day's rows."""
    defs = build_definitions()
    job = defs.resolve_job_def("acme_retail_nightly_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        asset_selection=ORDERS)
    assert not result.success
    message = failure_message(result)
    assert "is dated (one partition per day) but run" in message, message
    assert "dagster/partition=YYYY-MM-DD" in message
    assert not (demo / "data" / "warehouse.duckdb").exists() or not warehouse(
        demo, "select count(*) from information_schema.tables where table_name = 'orders'")[0][0]
