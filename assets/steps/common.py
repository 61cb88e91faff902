"""What every step runner shares: failures a retry cannot fix, the run's template values and
variables, the step's database and the values of its `env:`."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from assets import spec
from assets.names import (
    SCHEDULE_NAME_TAG,
    SENSOR_NAME_TAG,
    TRIGGERED_BY_TAG,
    WAREHOUSE_KEY,
    connection_key,
)
from assets.templating import (
    date_context,
    logical_date,
)
from resources.connections.files import TransferError
from resources.warehouse import (
    WarehouseError,
    WarehouseResource,
    first_line,
)

EX_TEMPFAIL = 75  # sysexits.h: a script exiting with it asks for its step's retry policy


def final(description: str) -> dg.Failure:
    """A failure a retry cannot fix: it bypasses the step's retry policy (a plain dg.Failure
    would be retried like any other error)."""
    return dg.Failure(description, allow_retries=False)


def is_bad_sql(error: BaseException) -> bool:
    """A query a retry cannot fix: syntax, unknown table or column, a constraint."""
    import duckdb
    from sqlalchemy import exc as sa_exc

    # The warehouse and a source's retried read wrap the driver's error: judge that one.
    while isinstance(error, WarehouseError | TransferError) and error.__cause__:
        error = error.__cause__
    if isinstance(error, duckdb.Error):
        return not isinstance(error, duckdb.IOException | duckdb.ConnectionException)
    return isinstance(error, sa_exc.ProgrammingError | sa_exc.IntegrityError
                      | sa_exc.DataError)


@contextmanager
def bad_sql_is_final(what: str, hint: str = "fix the SQL") -> Iterator[None]:
    """A query a retry cannot fix (syntax, unknown table, a constraint) fails the step for
    good, saying `what` failed; anything else (a lost connection) is left to the retries."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as error:
        if is_bad_sql(error):
            raise final(f"{what}: {first_line(error)}; {hint} (not retried)") from None
        raise


def template_values(context: dg.OpExecutionContext, params: dict[str, Any], workflow: str
                    ) -> dict[str, Any]:
    """What a step's templates see: the date macros of the run's day (its partition, else its
    schedule tick, else today), the parameters, the run id and the workflow's name."""
    day = logical_date(context.run.tags.get("dagster/partition"),
                       context.run.tags.get("dagster/scheduled_execution_time"),
                       datetime.now(UTC))
    return {**date_context(day, params), "run_id": context.run_id, "workflow": workflow}


def database(context: dg.OpExecutionContext, workflow: str, connection: str | None
             ) -> WarehouseResource:
    """The warehouse, or the `sql` connection a step names, from the op's resources."""
    key = connection_key(workflow, connection) if connection else WAREHOUSE_KEY
    return getattr(context.resources, key)


def env_values(settings: Mapping[str, Any], step: str) -> dict[str, Any]:
    """A step's environment: `{env: NAME}` read now (a missing one fails, named)."""
    values = {}
    for name, setting in settings.items():
        if isinstance(setting, spec.EnvRef):
            if setting.env not in os.environ:
                raise final(f"step {step}: environment variable {setting.env} (for "
                                 f"{name}) is not set; set it where the runs execute")
            values[name] = os.environ[setting.env]
        else:
            values[name] = setting
    return values


def run_variables(context: dg.OpExecutionContext, params: dict[str, Any], workflow: str
                  ) -> dict[str, str]:
    """What a script or command gets: the parameters, the run's day and who launched it."""
    values = template_values(context, params, workflow)
    return {**{f"STAGECOACH_PARAM_{k.upper()}": str(v) for k, v in params.items()},
            "STAGECOACH_DS": values["ds"], "STAGECOACH_RUN_ID": context.run_id,
            "STAGECOACH_TRIGGERED_BY": triggered_by(context.run.tags)}


def triggered_by(tags: Mapping[str, str]) -> str:
    """Who or what launched a run: its tag (a webhook caller, a launchpad tag, a schedule),
    else the sensor, else a manual launch (Dagster OSS records no user)."""
    if who := tags.get(TRIGGERED_BY_TAG):
        return who
    if sensor := tags.get(SENSOR_NAME_TAG):
        return f"sensor:{sensor}"
    if schedule := tags.get(SCHEDULE_NAME_TAG):
        return f"schedule:{schedule}"
    return "manual"


def step_secrets(settings: Mapping[str, Any]) -> set[str]:
    """A step's env entries given as `{env: NAME}`: secrets, masked in its output (a literal
    value is written in the spec for all to read)."""
    return {name for name, setting in settings.items() if isinstance(setting, spec.EnvRef)}

