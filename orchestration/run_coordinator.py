"""The run queue of Stagecoach's instances (deploy/*.yaml): Dagster's own, with the day rule
applied to a run that arrives without its day."""

import re
from datetime import UTC, datetime

import dagster as dg

from assets.names import DATED_IN_TAG, PARTITION_TAG, RUN_DAY_TAG
from assets.run_day import last_complete_day

# A run over a range of partitions (a backfill as one run) has its days already.
_RANGE_TAG = "dagster/asset_partition_range_start"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class DatedRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's queued run coordinator. A run of a dated job submitted without a partition (a
    GraphQL or Python-client launch without `dagster/partition`) is given the day every other
    launch gets: its `stagecoach/day` if the caller set one, else the last complete day in the
    workflow's time zone. Schedules, sensors, backfills, the webhook and the CLI set the
    partition themselves, and their runs pass through unchanged."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        zone = run.tags.get(DATED_IN_TAG)
        if (zone and PARTITION_TAG not in run.tags and _RANGE_TAG not in run.tags
                and run.status == dg.DagsterRunStatus.NOT_STARTED):
            given = run.tags.get(RUN_DAY_TAG, "")
            day = (given if _DAY.fullmatch(given)
                   else last_complete_day(zone, datetime.now(UTC)).isoformat())
            instance = context.workspace.instance
            instance.add_run_tags(run.run_id, {PARTITION_TAG: day, RUN_DAY_TAG: day})
            context = dg.SubmitRunContext(instance.get_run_by_id(run.run_id) or run,
                                          context.workspace)
        return super().submit_run(context)
