"""Automations: a job of ops, one per step, run one after the other (a `deliver` step sends the
chain's files through the activations' delivery code). The step runners and their registry
are in assets/steps/.

Each op takes the chain's state from the op before it and hands it on: the parameters (from
the first op's config: the spec's defaults, overridable in the launchpad or a launch's run
config) and the current files (all the files a step produced, in order, replace them; a
Python step gets every one of them as its first arguments). So the chain's
order is the ops' dependencies: the first failure stops the chain and Dagster shows the steps
after it as not run. Retryable failures (a lost
connection, a timeout) are retried per the step's policy; a bad query, a bad script or an
alarm that stops the chain raise `dg.Failure(allow_retries=False)`, which is never retried.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from assets import spec
from assets.common import ends_on_termination, owners_of
from assets.names import (
    AUTOMATION_TAG,
    CANCEL_RETRY_TAG,
    CHAIN_PARENT_TAG,
    MUTEX_TAG,
    PARTITION_TAG,
    RUN_AS_TAG,
    RUN_DAY_TAG,
    SCHEDULED_TIME_TAG,
    STEP_KIND_TAG,
    TRIGGERED_BY_TAG,
    WORKFLOW_TAG,
    cancel_retry_job_name,
    job_name,
    schedule_name,
)
from assets.steps.common import final as _final
from assets.steps.registry import STEPS
from assets.webhook_params import ParamError, webhook_job_args, webhook_params


@dataclass(frozen=True)
class ChildJob:
    """A group's job a chain can run: launched through the webserver, followed to its end."""

    job: str
    partition: Callable[[datetime], str | None]  # what a run asked for at that time loads
    dagster_url: Callable[[], str]  # read at run time: the webserver's GraphQL API


def retry_policy_for(retry: spec.StepRetry) -> dg.RetryPolicy | None:
    """The step's Dagster RetryPolicy from an automation's `retry:` (docs/retries.md)."""
    if not retry.count:
        return None
    return dg.RetryPolicy(
        max_retries=retry.count, delay=spec.seconds_of(retry.delay),
        backoff=dg.Backoff.EXPONENTIAL if retry.backoff == "exponential" else None)
    # No jitter: Dagster's PLUS_MINUS adds ±delay (a 30 s delay could be 0 s) and FULL
    # shrinks it; a retry waits the time the spec says.


def _launch_params(context: dg.OpExecutionContext, workflow: spec.Workflow) -> dict[str, Any]:
    """The op's params (spec defaults, or the launchpad's) with a webhook launch's declared
    params over them, validated again from the run's tag."""
    try:
        launched = webhook_params(workflow, context.run.tags)
    except ParamError as bad:
        raise _final(f"workflow {workflow.workflow.name}: {bad}") from None
    return {**context.op_config["params"], **launched}


def _run_as(context: dg.OpExecutionContext, workflow: spec.Workflow, step: Any,
            allowed_by_job: Mapping[str, frozenset[str]]) -> Any:
    """The step with its connection swapped for the run's profile's (`stagecoach/run_as`).
    Only a profile named by the job's own automation, or by a chain between it and this
    step, is honoured: a tag cannot borrow another chain's account."""
    profile = context.run.tags.get(RUN_AS_TAG)
    if not profile:
        return step
    job_automation = context.run.tags.get(AUTOMATION_TAG, "")
    allowed = allowed_by_job.get(job_automation, frozenset())
    if profile not in allowed:
        raise _final(f"step {context.op.name}: the run asks to run as profile {profile!r}, "
                     f"which automation `{job_automation}` does not name for this step "
                     f"(run_as: {', '.join(sorted(allowed)) or 'none'}); remove the "
                     f"{RUN_AS_TAG} tag or name the profile in the spec")
    connection = getattr(step, "connection", None)
    swapped = workflow.profiles[profile].connections.get(connection) if connection else None
    return step.model_copy(update={"connection": swapped}) if swapped else step


def _refuse_cancelled_retry(context: dg.OpExecutionContext) -> None:
    """An operator's cancel-retry (a run tag) ends the run before a retry attempt starts."""
    if context.retry_number == 0:
        return
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and (cancelled := run.tags.get(CANCEL_RETRY_TAG)):
        raise _final(f"step {context.op.name}: retry {context.retry_number} not run: the "
                     f"retries were cancelled ({cancelled})")


def request_cancel_retry(instance: dg.DagsterInstance, run_id: str, by: str) -> str:
    """Tag a run so that no pending or later step retry of it runs; the run then fails.

    Returns what was done, for the operator; raises ValueError for a run that cannot be
    cancelled (unknown, or already over)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in this instance")
    if run.is_finished:
        raise ValueError(f"run {run_id} already ended ({run.status.value}); it has no retry "
                         "left to cancel")
    instance.add_run_tags(run_id, {CANCEL_RETRY_TAG: f"by {by} at "
                                                     f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z"})
    return (f"run {run_id} ({run.job_name}): retries cancelled; a step waiting to retry fails "
            "at its next attempt and the run ends as failed")


def _step_op(workflow: spec.Workflow, automation_name: str, automation: spec.Automation,
             index: int, step_name: str, first: bool,
             profiles_by_job: Mapping[str, frozenset[str]]) -> dg.OpDefinition:
    step = automation.steps[index]
    kind = STEPS.build(step)
    resources = kind.resources(workflow, step, frozenset().union(*profiles_by_job.values()))
    retry = step.retry or automation.retry
    defaults = {**workflow.workflow.params, **automation.params}
    config = {"params": dg.Field(dg.Permissive(), default_value=defaults, is_required=False,
                                 description="Parameters of this launch (defaults from the "
                                             "spec).")} if first else None

    @dg.op(name=f"{automation_name}__{step_name}", required_resource_keys=resources,
           retry_policy=retry_policy_for(retry), config_schema=config,
           ins={"after": dg.In(dg.Nothing)} if first else {"state": dg.In(dict)},
           out=dg.Out(dict),
           description=step.description or f"Step {index + 1} of automation "
                                           f"`{automation_name}`: {step.kind}.",
           tags={STEP_KIND_TAG: step.kind})
    @ends_on_termination
    def _step(context, **inputs: Any) -> dict:
        _refuse_cancelled_retry(context)
        state = ({"params": _launch_params(context, workflow), "files": []} if first
                 else inputs["state"])
        outcome = kind.run(context, workflow, _run_as(context, workflow, step, profiles_by_job),
                         state["params"], state["files"])
        context.add_output_metadata({"step": step_name, "kind": step.kind, **{
            k: v for k, v in outcome.items() if isinstance(v, int | float | str | bool)},
            **({"files": dg.MetadataValue.json(outcome["files"])} if "files" in outcome
               else {})})
        return {**state, "files": outcome.get("files", state["files"])}

    return _step


def _job_child_op(chain: str, child: str, target: ChildJob) -> dg.OpDefinition:
    """Runs a group's job as a chain's child: launched over GraphQL (tagged with the chain's
    run and partition), followed until it ends; a failed or cancelled child fails the chain,
    and a chain run that is terminated terminates its child."""

    @dg.op(name=f"{chain}__run_{child}", ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dict),
           description=f"Runs job `{target.job}` and waits for it (child of chain `{chain}`).",
           tags={STEP_KIND_TAG: "job"})
    @ends_on_termination
    def _run_job(context) -> dict:
        from resources.dagster_runs import DagsterRuns, LaunchFailed

        scheduled = context.run.tags.get(SCHEDULED_TIME_TAG)
        partition = context.run.tags.get(PARTITION_TAG) or target.partition(
            datetime.fromisoformat(scheduled) if scheduled else datetime.now(UTC))
        day = partition or context.run.tags.get(RUN_DAY_TAG)
        tags = {CHAIN_PARENT_TAG: context.run_id, TRIGGERED_BY_TAG: f"chain:{chain}",
                **({PARTITION_TAG: partition} if partition else {}),
                **({RUN_DAY_TAG: day[:10]} if day else {})}
        location = context.dagster_run.remote_job_origin
        if location is None:
            raise _final(f"step {context.op.name}: job `{target.job}` can only be launched "
                         "from a run the webserver or daemon started (not in-process)")
        runs = DagsterRuns(target.dagster_url(), location.location_name)
        try:
            run_id = runs.launch(target.job, tags, {})
        except LaunchFailed as refused:
            if refused.transient:  # the webserver unreachable: the step's retries may help
                raise RuntimeError(f"step {context.op.name}: could not reach Dagster to "
                                   f"launch `{target.job}`: {refused}") from None
            raise _final(f"step {context.op.name}: Dagster refused to launch "
                         f"`{target.job}`: {refused}") from None
        context.log.info(f"launched `{target.job}` run {run_id}"
                         + (f" for partition {partition}" if partition else ""))
        try:
            status = runs.wait(run_id, on_change=lambda now: context.log.info(
                f"`{target.job}` run {run_id}: {now.value}"))
        except BaseException:  # the chain was terminated (or lost the webserver): stop it too
            try:
                runs.terminate(run_id)
            except Exception as stuck:
                context.log.error(f"`{target.job}` run {run_id} could not be terminated "
                                  f"({type(stuck).__name__}: {stuck}); stop it from the UI")
            raise
        context.add_output_metadata({"child_run": run_id, "status": status.value,
                                     **({"partition": partition} if partition else {})})
        if status != dg.DagsterRunStatus.SUCCESS:
            raise _final(f"step {context.op.name}: `{target.job}` run {run_id} ended "
                         f"{status.value}; the chain stops")
        return {}

    return _run_job


def _paths(workflow: spec.Workflow) -> dict[str, dict[str, list[spec.Automation]]]:
    """Step automation → {automation whose job runs it (itself, or a chain) → the
    automations from that one down to it}. Run-as profiles and params follow these paths."""
    automations = workflow.automations
    paths: dict[str, dict[str, list[spec.Automation]]] = {
        name: {} for name, a in automations.items() if not a.chain}

    def walk(root: str, name: str, trail: list[spec.Automation]) -> None:
        automation = automations[name]
        trail = [*trail, automation]
        if not automation.chain:
            paths[name].setdefault(root, trail)
        for child in automation.chain:
            if child in automations:
                walk(root, child, trail)

    for root in automations:
        walk(root, root, [])
    return paths


def _mutex_of(name: str, paths: Mapping[str, Mapping[str, list[spec.Automation]]]
              ) -> str | None:
    """The mutex a job holds: the first along its paths, its own first (the loader refuses a
    chain over anything holding another one)."""
    return next((a.mutex for by_root in paths.values() for a in by_root.get(name, ())
                 if a.mutex), None)


def automation_definitions(workflow: spec.Workflow, child_jobs: Mapping[str, ChildJob]
                           ) -> dg.Definitions:
    """The automations' family: every automation's job (steps chained in order; a chain's
    children in order or side by side) and schedule. A step's op is one definition, shared by
    its automation's job and by every chain that runs it."""
    wf = workflow.workflow.name
    paths = _paths(workflow)
    profiles = {leaf: {root: frozenset(a.run_as for a in trail if a.run_as)
                       for root, trail in by_root.items()} for leaf, by_root in paths.items()}
    ops = {name: [_step_op(workflow, name, automation, i, step_name, i == 0, profiles[name])
                  for i, step_name in enumerate(automation.step_names())]
           for name, automation in workflow.automations.items() if not automation.chain}

    jobs_run = {(chain, child): _job_child_op(chain, child, child_jobs[child])
                for chain, automation in workflow.automations.items()
                for child in automation.chain if child not in workflow.automations}

    def compose(name: str, after: list[Any], chain: str = "") -> list[Any]:
        """Invoke `name`'s ops after `after`; returns the outputs the next child waits on."""
        if name not in workflow.automations:  # a group's job, run by an op of its chain
            run_job = jobs_run[(chain, name)]
            return [run_job(after=after) if after else run_job()]
        automation = workflow.automations[name]
        if not automation.chain:
            first, *rest = ops[name]
            state = first(after=after) if after else first()
            for op in rest:
                state = op(state)
            return [state]
        if automation.mode == "parallel":
            return [done for child in automation.chain for done in compose(child, after, name)]
        for child in automation.chain:
            after = compose(child, after, name)
        return after

    jobs: list[dg.JobDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    for name, automation in workflow.automations.items():
        graph = dg.graph(name=f"{name}_chain")(_composer(compose, name))
        jobs.append(_automation_job(workflow, name, automation, graph, paths))
        if automation.schedule is not None:
            schedules.append(_schedule(workflow, name, automation, jobs[-1]))
    if workflow.automations:
        jobs.append(_cancel_retry_job(wf))
    return dg.Definitions(jobs=jobs, schedules=schedules)


def _composer(compose: Callable[[str, list[Any]], list[Any]], name: str) -> Callable[[], None]:
    def _body() -> None:
        compose(name, [])

    return _body


def _automation_job(workflow: spec.Workflow, name: str, automation: spec.Automation,
                    graph: dg.GraphDefinition,
                    paths: Mapping[str, Mapping[str, list[spec.Automation]]]
                    ) -> dg.JobDefinition:
    wf = workflow.workflow.name
    tags = {WORKFLOW_TAG: wf, AUTOMATION_TAG: name}
    if mutex := _mutex_of(name, paths):
        tags[MUTEX_TAG] = mutex
    owners = owners_of(workflow, automation)
    if automation.chain:
        joiner = " → " if automation.mode == "series" else " ∥ "
        summary = f"Chain `{name}` ({automation.mode}): " + joiner.join(automation.chain)
        metadata: dict[str, Any] = {"children": list(automation.chain),
                                    "mode": automation.mode}
    else:
        summary = f"Automation `{name}`: " + " → ".join(automation.step_names())
        metadata = {"steps": [f"{n} ({s.kind})" for n, s in zip(
            automation.step_names(), automation.steps, strict=True)]}
    if automation.run_as:
        metadata["run_as"] = automation.run_as
    description = automation.description or summary
    if not automation.enabled:
        metadata["enabled"] = False
        description = ("Disabled (its schedule is stopped; a manual launch still runs). "
                       + description)
    config = None
    if automation.chain:  # each chain's values override those of what it runs
        config = {"ops": {}}
        for leaf, trail in ((leaf, by_root[name]) for leaf, by_root in paths.items()
                            if name in by_root):
            params = dict(workflow.workflow.params)
            for step_automation in reversed(trail):  # the leaf first, this chain last
                params |= step_automation.params
            first = workflow.automations[leaf].step_names()[0]
            config["ops"][f"{leaf}__{first}"] = {"config": {"params": params}}
    return graph.to_job(
        name=job_name(wf, name), config=config,
        **webhook_job_args(workflow, name, description, tags),
        metadata={**metadata, **({"owners": owners} if owners else {})})


def _schedule(workflow: spec.Workflow, name: str, automation: spec.Automation,
              job: dg.JobDefinition) -> dg.ScheduleDefinition:
    schedule = automation.schedule
    assert schedule is not None
    timezone = schedule.timezone or workflow.workflow.timezone
    enabled = automation.enabled and schedule.enabled
    scheduled_as = schedule_name(workflow.workflow.name, name)
    tags = {TRIGGERED_BY_TAG: f"schedule:{scheduled_as}"}
    if automation.run_as:
        tags[RUN_AS_TAG] = automation.run_as
    return dg.ScheduleDefinition(
        name=scheduled_as, job=job, cron_schedule=schedule.cron, tags=tags,
        execution_timezone=timezone, owners=owners_of(workflow, automation),
        description=f"{schedule.cron} ({timezone})"
        + (f", runs as {automation.run_as}" if automation.run_as else ""),
        default_status=dg.DefaultScheduleStatus.RUNNING if enabled
        else dg.DefaultScheduleStatus.STOPPED)


def _cancel_retry_job(wf: str) -> dg.JobDefinition:
    """Cancel-retry from the UI: launch this job with the run's id."""

    @dg.op(name=f"{wf}_cancel_retry", config_schema={
        "run_id": dg.Field(str, description="The run whose pending retries to cancel."),
        "by": dg.Field(str, default_value="the launchpad", description="Who cancels.")})
    def _cancel(context) -> None:
        context.log.info(request_cancel_retry(context.instance, context.op_config["run_id"],
                                              context.op_config["by"]))

    @dg.job(name=cancel_retry_job_name(wf), tags={WORKFLOW_TAG: wf},
            description="Cancel-retry: the given run's steps waiting to retry fail at their "
                        "next attempt instead, and the run ends as failed (also `python -m "
                        "orchestration cancel-retry`).")
    def _job() -> None:
        _cancel()

    return _job
