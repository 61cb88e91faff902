"""The whole spec, read back through the GraphQL API of a real `dagster dev` serving the demo
workflow: webhook triggers on the job they launch, connection descriptions on the Resources page,
params resolved in the SQL, declared and built column schemas, each table's own description,
owners on every schedule and sensor, the reporters of each alert sensor, and courier assets
labelled apart from their domain tables. What the UI pages show is what these fields hold.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from orchestration.cli.demo_data import generate
from tests.e2e.dagster_dev import (
    LOCATION,
    REPOSITORY,
    DagsterDev,
    run_details,
    running_dagster_dev,
    wait_for_run,
)
from tests.integration.test_postgres import demo_workflows

pytestmark = pytest.mark.timeout(600)
WORKFLOW, DAY = "acme_retail", date(2026, 11, 1)
TOKEN_ENV = "ACME_WEBHOOK_TOKEN"
REPO_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
# The demo's webhook trigger, given params a caller may pass (the demo's own declares none).
WEBHOOK = "    when: {kind: webhook, token: {env: ACME_WEBHOOK_TOKEN}}\n"
WEBHOOK_WITH_PARAMS = ("    when: {kind: webhook, token: {env: ACME_WEBHOOK_TOKEN}, "
                       "params: {since: date, limit: int}, require_request_id: true}\n")
UNIFIED = ["customer_id", "email", "phone", "first_name", "last_name", "postal_code",
           "source_records", "order_count", "revenue", "first_order_at", "last_order_at"]
SEGMENT = ["customer_id", "email", "phone", "first_name", "last_name", "postal_code",
           "order_count", "lifetime_value", "value_tier"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    root = tmp_path_factory.mktemp("ui_spec")
    for folder in ("landing", "outbox", "data", "dagster_home"):
        (root / folder).mkdir()
    workflows = demo_workflows(root / "workflows", root / "landing", root / "outbox")
    spec = workflows / "acme_retail.yaml"
    text = spec.read_text(encoding="utf-8")
    assert text.count(WEBHOOK) == 1, "the demo's webhook trigger changed"
    spec.write_text(text.replace(WEBHOOK, WEBHOOK_WITH_PARAMS), encoding="utf-8")
    generate(root / "landing", [DAY])
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(workflows),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           TOKEN_ENV: token}
    for name in ("STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    with running_dagster_dev(root, workflows, env, token) as dev:
        yield dev


JOB_QUERY = """
query ($selector: PipelineSelector!) { pipelineOrError(params: $selector) {
    __typename ... on Pipeline { description tags { key value } } } }
"""


def test_a_webhook_trigger_shows_on_the_job_it_launches(demo: DagsterDev) -> None:
    job = "acme_retail_audiences_job"
    answer = demo.graphql(JOB_QUERY, {"selector": {**REPO_SELECTOR, "pipelineName": job}})
    found = answer["pipelineOrError"]
    assert found["__typename"] == "Pipeline", found
    assert found["description"] == (
        "Deliver the high-value audience after each successful nightly load.\n\n"
        "Launched over HTTP by:\n"
        "- Webhook trigger `partner_file_request`: `POST /launch/acme_retail_audiences_job` "
        "with `Authorization: Bearer $ACME_WEBHOOK_TOKEN` (the token is the value of "
        "`ACME_WEBHOOK_TOKEN` where the webhook service runs); params: `since` (date), "
        "`limit` (int); X-Request-Id required.")
    tags = {t["key"]: t["value"] for t in found["tags"]}
    assert tags["stagecoach/webhook"] == ("partner_file_request: POST /launch/"
                                          "acme_retail_audiences_job, token $ACME_WEBHOOK_TOKEN, "
                                          "params since,limit")
    assert demo.token not in json.dumps(answer)


RESOURCE_QUERY = """
query ($selector: ResourceSelector!) { topLevelResourceDetailsOrError(resourceSelector: $selector)
    { __typename ... on ResourceDetails { description resourceType } } }
"""


def test_each_connection_is_described_by_its_spec(demo: DagsterDev) -> None:
    expected = {
        "landing": ("`landing`: a folder connection. Where the brand's systems drop their "
                    "nightly files.", "resources.connections.folder.FolderResource"),
        "outbox": ("`outbox`: a folder connection. Files for partners and the CRM.",
                   "resources.connections.folder.FolderResource")}
    for name, (description, kind) in expected.items():
        found = demo.graphql(RESOURCE_QUERY, {"selector": {
            **REPO_SELECTOR, "resourceName": f"{WORKFLOW}__{name}"}})
        details = found["topLevelResourceDetailsOrError"]
        assert (details["description"], details["resourceType"]) == (description, kind), details


ASSETS_QUERY = """
{ assetNodes { assetKey { path } description
    metadataEntries { label __typename
        ... on MarkdownMetadataEntry { mdStr }
        ... on JsonMetadataEntry { jsonString }
        ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } }
"""


def _metadata(node: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for entry in node["metadataEntries"]:
        if "schema" in entry:
            shown[entry["label"]] = [c["name"] for c in entry["schema"]["columns"]]
        else:
            shown[entry["label"]] = entry.get("mdStr") or entry.get("jsonString")
    return shown


def test_assets_show_resolved_sql_schemas_descriptions_and_labels(demo: DagsterDev) -> None:
    nodes = {"/".join(n["assetKey"]["path"]): n for n in demo.graphql(ASSETS_QUERY)["assetNodes"]}
    # A courier is labelled apart from the domain table loaded from it.
    assert {k for k in nodes if k.startswith(("courier/", "domain/"))} == {
        "courier/customers_file", "courier/loyalty_members_file", "courier/orders_file",
        "courier/products_file", "domain/customers", "domain/loyalty_members", "domain/orders",
        "domain/products"}
    # The query: its SQL with the threshold written in, the template beside it, its columns.
    segment = _metadata(nodes["query/high_value_customers"])
    assert "where lifetime_value >= 400\n" in segment["sql"] and "{{" not in segment["sql"]
    assert "{{ params.high_value_threshold }}" in segment["sql_template"]
    assert json.loads(segment["params"]) == {"high_value_threshold": 400}
    # It reads identity resolution's tables (through the database), whose columns are known
    # once built: no declared schema before the first build (the next test reads the built one).
    assert "dagster/column_schema" not in segment
    # Each table of the database has its own description, and its declared columns.
    unified = nodes["db/customer_360/unified_customers"]
    assert unified["description"] == (
        "`customer_360.unified_customers`: built by its SQL from `domain.loyalty_members`, "
        "`domain.orders`, `identity.customers`, `identity.customers_map`. Part of database "
        "`customer_360`: One row per customer (after identity resolution) with web orders and "
        "store spend rolled up.")
    assert "dagster/column_schema" not in _metadata(unified)
    assert nodes["db/customer_360/lifetime_value"]["description"] == (
        "Each customer's lifetime value and tier (bronze, silver, gold).")
    assert _metadata(nodes["domain/customers"])["dagster/column_schema"][:3] == [
        "customer_id", "email", "phone"]


INSTIGATORS_QUERY = """
query ($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) { ... on Schedules { results {
      name description owners { ... on TeamDefinitionOwner { team }
                                ... on UserDefinitionOwner { email } } } } }
  sensorsOrError(repositorySelector: $repo) { ... on Sensors { results {
      name description owners { ... on TeamDefinitionOwner { team }
                                ... on UserDefinitionOwner { email } } } } } }
"""


def test_every_schedule_and_sensor_names_its_owners_and_alerts_their_reporters(
        demo: DagsterDev) -> None:
    found = demo.graphql(INSTIGATORS_QUERY, {"repo": REPO_SELECTOR})
    schedules = found["schedulesOrError"]["results"]
    sensors = found["sensorsOrError"]["results"]
    assert [s["name"] for s in schedules] == ["acme_retail_nightly_schedule"]
    assert schedules[0]["owners"] == [{"team": "crm-data"}]
    assert len(sensors) >= 6, [s["name"] for s in sensors]
    for sensor in sensors:
        # A run-status sensor takes no owners in Dagster 1.13: its description names them.
        assert (sensor["owners"] == [{"team": "crm-data"}]
                or sensor["description"].endswith("\n\nOwners: team:crm-data")), sensor
        if "_alert_" in sensor["name"] or sensor["name"].endswith("_record_sensor"):
            assert "\n\nReporters: run_history: dataset stagecoach.run_history on " in (
                sensor["description"]), sensor


MATERIALIZATION_QUERY = """
query ($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename ... on Asset {
    assetMaterializations(limit: 1) { metadataEntries { label
        ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } } } }
"""


def test_a_build_reports_the_columns_the_warehouse_has(demo: DagsterDev) -> None:
    run_id = demo.client().submit_job_execution(
        "acme_retail_job", tags={"dagster/partition": DAY.isoformat()})
    status = wait_for_run(demo, run_id)
    assert status == "SUCCESS", run_details(demo, run_id)["failures"]
    expected = {
        ("domain", "orders"): ["order_id", "customer_id", "sku", "quantity", "unit_price",
                               "ordered_at", "_source_file", "_partition"],
        ("db", "customer_360", "unified_customers"): UNIFIED,
        ("query", "high_value_customers"): SEGMENT}
    schema: list[dict[str, str]] = []
    for path, columns in expected.items():
        asset = demo.graphql(MATERIALIZATION_QUERY, {"key": {"path": list(path)}})["assetOrError"]
        [materialization] = asset["assetMaterializations"]
        [schema] = [e["schema"]["columns"] for e in materialization["metadataEntries"]
                    if e["label"] == "dagster/column_schema"]
        assert [c["name"] for c in schema] == columns, path
    types = {c["name"]: c["type"] for c in schema}
    assert types["lifetime_value"].startswith("decimal"), types
