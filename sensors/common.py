"""What every schedule and sensor of a workflow shares: the one-run-at-a-time policy applied
before a run is requested. Their names and run tags come from assets/names.py."""

import re

import dagster as dg

from assets.names import SERIAL_TAG

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
               dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def runs_in_progress(instance: dg.DagsterInstance, job: str) -> list[dg.DagsterRun]:
    """The job's runs queued or going."""
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=IN_PROGRESS)))


def concurrency_gate(context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext
                     | dg.RunStatusSensorContext,
                     job: str, policy: str) -> dg.SkipReason | None:
    """Apply a job's `concurrency:` before requesting a run of it.

    `skip`: a SkipReason naming the run still going (shown on the tick). `cancel_running`:
    the runs still going are cancelled, then the new run is requested. `queue`: nothing here;
    the run carries SERIAL_TAG and the run queue holds it until the previous one ends.
    """
    if policy == "queue":
        return None
    going = runs_in_progress(context.instance, job)
    if not going:
        return None
    if policy == "skip":
        ids = ", ".join(f"{r.run_id} ({r.status.value.lower()})" for r in going)
        return dg.SkipReason(f"{job} is still queued or running ({ids}); `concurrency: skip` "
                             "drops this trigger")
    for run in going:
        try:
            stopped = context.instance.run_coordinator.cancel_run(run.run_id)
        except Exception:  # a launcher that cannot terminate (in-memory): mark it below
            stopped = False
        if not stopped:
            context.instance.report_run_canceled(run, message="cancelled by a newer trigger "
                                                              "(`concurrency: cancel_running`)")
        context.log.info(f"cancelled run {run.run_id} of {job} (`concurrency: cancel_running`)")
    return None


def serial_tags(job: str, policy: str) -> dict[str, str]:
    """Tags that make the run queue hold a `queue` job's runs one at a time."""
    return {SERIAL_TAG: job} if policy == "queue" else {}


_STOPPED = re.compile(r"missing files( at the deadline)?, so nothing runs \(notify and stop\): "
                      r"(?P<files>.+)", re.DOTALL)


def stopped_for_missing(missing: list[str], at_deadline: bool = False) -> str:
    """The skip reason of a tick that runs nothing for missing files; the alert sensor reads the
    files back from it with `missing_in_skip_reason`."""
    when = " at the deadline" if at_deadline else ""
    return f"missing files{when}, so nothing runs (notify and stop): {'; '.join(missing)}"


def missing_in_skip_reason(reason: str | None) -> list[str]:
    """The `courier: connection/pattern` items of a `stopped_for_missing` reason, else []."""
    found = _STOPPED.fullmatch(reason or "")
    return found["files"].split("; ") if found else []
