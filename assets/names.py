"""Stagecoach's vocabulary in one place: asset keys, resource keys, job, schedule and sensor
names, and run tag keys.

Every factory, sensor and command builds its names here, so a name is spelled once and the
pieces that must agree (a sensor and the asset it watches, a job and the alert that follows
it) cannot drift. It imports nothing from the project, so any module can import it without a
cycle.
"""

import dagster as dg

# ---------------------------------------------------------------- resource keys

WAREHOUSE_KEY = "warehouse"
STAGING_KEY = "staging"
ARCHIVE_KEY = "archive"  # the default archive of delivered files, shared by all workflows


def connection_key(workflow: str, connection: str) -> str:
    """Resource key of a workflow's connection: workflows may reuse connection names."""
    return f"{workflow}__{connection}"


# ---------------------------------------------------------------- asset keys

DOMAIN_SCHEMA = "domain"  # the warehouse schema of domain tables (feeds)
QUERY_SCHEMA = "query"  # the warehouse schema of queries and segments
IDENTITY_SCHEMA = "identity"  # the warehouse schema of identity resolution's outputs
# Schemas Stagecoach writes itself: no database of a spec may be named so.
RESERVED_SCHEMAS = (DOMAIN_SCHEMA, QUERY_SCHEMA, IDENTITY_SCHEMA)


COURIER_SUFFIX = "_file"


def courier_key(name: str) -> dg.AssetKey:
    """A courier's asset: courier/<name>_file. The asset graph labels a node with the last part
    of its key only, so `customers_file → customers` tells the staged file from the domain
    table loaded from it at a glance (`customers → customers` did not)."""
    return dg.AssetKey(["courier", name + COURIER_SUFFIX])


def domain_key(name: str) -> dg.AssetKey:
    """A domain table's asset: domain/<name>."""
    return dg.AssetKey([DOMAIN_SCHEMA, name])


def query_key(name: str) -> dg.AssetKey:
    """A query's asset: query/<name>."""
    return dg.AssetKey([QUERY_SCHEMA, name])


def database_table_key(database: str, table: str) -> dg.AssetKey:
    """A database table's asset: db/<database>/<table>."""
    return dg.AssetKey(["db", database, table])


# An identity resolution `<name>` writes identity.<name> (one row per customer) and these.
IDENTITY_MAP_SUFFIX = "_map"  # (source table, source key) → customer id
IDENTITY_PAIRS_SUFFIX = "_pairs"  # sampled pairs with their rule or match score, for review
IDENTITY_CHANGES_SUFFIX = "_id_changes"  # merged (retired) and split ids, run after run


def identity_tables(name: str) -> dict[str, str]:
    """The warehouse tables (in the `identity` schema) of an identity resolution, by role."""
    return {"customers": name, "map": name + IDENTITY_MAP_SUFFIX,
            "pairs": name + IDENTITY_PAIRS_SUFFIX, "id_changes": name + IDENTITY_CHANGES_SUFFIX}


def identity_key(table: str) -> dg.AssetKey:
    """An identity resolution's table asset: identity/<table>."""
    return dg.AssetKey([IDENTITY_SCHEMA, table])


def table_key(qualified_name: str) -> dg.AssetKey:
    """A warehouse table's asset: `domain.x` → domain/x, `query.x` → query/x,
    `identity.x` → identity/x, `<database>.x` → db/<database>/x."""
    schema, table = qualified_name.split(".", 1)
    if schema == DOMAIN_SCHEMA:
        return domain_key(table)
    if schema == QUERY_SCHEMA:
        return query_key(table)
    if schema == IDENTITY_SCHEMA:
        return identity_key(table)
    return database_table_key(schema, table)


def activation_key(name: str) -> dg.AssetKey:
    """An activation's asset: activation/<name>."""
    return dg.AssetKey(["activation", name])


# ---------------------------------------------------------------- jobs, schedules, sensors

WORKFLOW_JOB = "workflow"  # a trigger's or alert's `job:` naming the whole workflow's job


def workflow_job_name(workflow: str) -> str:
    """The job that materialises the whole workflow."""
    return f"{workflow}_job"


def job_name(workflow: str, group: str) -> str:
    """`<workflow>_<group>_job` of a courier group, orchestration group or automation;
    `workflow` names the whole workflow's job."""
    return workflow_job_name(workflow) if group == WORKFLOW_JOB else f"{workflow}_{group}_job"


def resend_job_name(workflow: str) -> str:
    """The job that re-sends a delivered file from the archive."""
    return f"{workflow}_resend_job"


def cancel_retry_job_name(workflow: str) -> str:
    """The job an operator launches to cancel a run's pending step retries."""
    return f"{workflow}_cancel_retry_job"


def schedule_name(workflow: str, group: str) -> str:
    """`<workflow>_<group>_schedule` of a courier group, orchestration group or automation."""
    return f"{workflow}_{group}_schedule"


def sensor_name(workflow: str, purpose: str) -> str:
    """`<workflow>_<purpose>_sensor`: a trigger's name, or what an alert sensor watches."""
    return f"{workflow}_{purpose}_sensor"


def missing_files_sensor_name(workflow: str, group: str) -> str:
    """The sensor that waits for a courier group's files (`missing_files: wait`)."""
    return sensor_name(workflow, f"{group}_missing_files")


def after_sensor_name(workflow: str, group: str) -> str:
    """The run-after sensor of an orchestration group with `after:`."""
    return sensor_name(workflow, f"{group}_after")


# ---------------------------------------------------------------- run tags

TAG_PREFIX = "stagecoach/"  # Stagecoach's own tags: callers may not set them
WORKFLOW_TAG = "stagecoach/workflow"  # on every job of a workflow, so on its runs
GROUP_TAG = "stagecoach/group"  # the courier or orchestration group a job runs
AUTOMATION_TAG = "stagecoach/automation"
STEP_KIND_TAG = "stagecoach/step_kind"  # on an automation's ops: sql, python, job...
SERIAL_TAG = "stagecoach/serial"  # runs with the same value queue behind each other
MUTEX_TAG = "stagecoach/mutex"  # deploy/*.yaml limit runs sharing a value to one at a time
DURATION_ALERT_TAG = "stagecoach/duration_alert_seconds"  # read by the runtime-exceeded sensor
TRIGGER_TAG = "stagecoach/trigger"  # what launched a run: schedule, sensor, webhook caller
TRIGGER_KIND_TAG = "stagecoach/trigger_kind"  # on a trigger sensor: file_change, python...
TRIGGERED_BY_TAG = "stagecoach/triggered_by"  # who launched a run; scripts get it as a variable
UPSTREAM_RUN_TAG = "stagecoach/upstream_run"  # on a run-after run: the group run it follows
MISSING_FILES_TAG = "stagecoach/missing_files"  # files a run went on without (notify & continue)
OPTIONAL_COURIERS_TAG = "stagecoach/optional_couriers"  # couriers that may find no file this run
REDELIVER_TAG = "stagecoach/redeliver"  # "true": send even what the ledger shows as delivered
RUN_AS_TAG = "stagecoach/run_as"  # the profile whose connections a run's steps use
CANCEL_RETRY_TAG = "stagecoach/cancel_retry"  # set by an operator: no further step retries
CHAIN_PARENT_TAG = "stagecoach/parent_run"  # on a chain's child run: the chain's run
RUN_DAY_TAG = "stagecoach/day"  # the day a run works on (assets/run_day.py), YYYY-MM-DD
# On a dated job (and so its runs): the workflow's time zone. A run launched without a partition
# (a bare GraphQL launch) gets the last complete day there from orchestration/run_coordinator.py.
DATED_IN_TAG = "stagecoach/dated_in"
PARAMS_TAG = "stagecoach/params"  # the validated params of a webhook launch, as JSON
WEBHOOK_TAG = "stagecoach/webhook"  # on a job (not its runs): the webhook triggers launching it
WEBHOOK_CALLER_TAG = "stagecoach/webhook_caller"
# In the run history: the workflow's assets an untagged run (a UI materialization) touched.
ATTRIBUTED_ASSETS_TAG = "stagecoach/attributed_by_assets"
WEBHOOK_REQUEST_ID_TAG = "stagecoach/webhook_request_id"

# Dagster's own tags that Stagecoach reads or sets.
PARTITION_TAG = "dagster/partition"
SCHEDULED_TIME_TAG = "dagster/scheduled_execution_time"
WILL_RETRY_TAG = "dagster/will_retry"  # set by Dagster on a failed run when retries are on
RETRY_NUMBER_TAG = "dagster/retry_number"
RETRY_PARENT_TAG = "dagster/parent_run_id"  # on a retry (or re-execution): the run it repeats
SENSOR_NAME_TAG = "dagster/sensor_name"  # the sensor that requested a run
SCHEDULE_NAME_TAG = "dagster/schedule_name"  # the schedule that requested a run

# ---------------------------------------------------------------- steps' variables

CONN_PREFIX = "STAGECOACH_CONN_"  # STAGECOACH_CONN_<NAME>_<FIELD>: a step's connection details
