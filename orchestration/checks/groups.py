"""Reference checks of `courier_groups:`, `orchestration_groups:` and `triggers:`: the
members they name exist, and the settings that only make sense together come together."""

import importlib

from assets import spec
from orchestration.checks.common import Context, no_run_id
from orchestration.spec_problems import Path_, Problem


def check_courier_groups(ctx: Context) -> list[Problem]:
    """Courier groups: known couriers, a valid cron, known groups to run after."""
    problems: list[Problem] = []
    for name, group in ctx.sections["courier_groups"].items():
        path = ("courier_groups", name)
        for i, courier in enumerate(group.couriers):
            problems += ctx.unknown("couriers", courier, (*path, "couriers", i), "courier")
        if group.missing_files == "wait" and group.wait is None:
            problems.append(Problem(path, "`missing_files: wait` needs `wait: {up_to: 2h}` (how "
                                          "long to wait for the files)"))
        if group.wait is not None and group.missing_files != "wait":
            problems.append(Problem((*path, "wait"), "is only used with `missing_files: wait`"))
        if group.missing_files == "wait" and group.schedule is None:
            problems.append(Problem(path, "`missing_files: wait` needs a `schedule:` (the "
                                          "deadline counts from each scheduled time)"))
        if name in ctx.sections["orchestration_groups"]:
            problems.append(Problem(path, f"an orchestration group is also named {name!r}; "
                                          "group names make job names, so they must differ"))
    return problems


def check_orchestration_groups(ctx: Context) -> list[Problem]:
    """Orchestration groups: known tables and activations, a valid cron, known groups before."""
    problems: list[Problem] = []
    for name, group in ctx.sections["orchestration_groups"].items():
        path = ("orchestration_groups", name)
        for key, what in (("activations", "activation"), ("queries", "query"),
                          ("databases", "database")):
            for i, item in enumerate(getattr(group, key)):
                problems += ctx.unknown(key, item, (*path, key, i), what)
        if group.after is not None:
            problems += ctx.unknown("courier_groups", group.after, (*path, "after"),
                                    "courier group")
    return problems


def check_triggers(ctx: Context) -> list[Problem]:
    """Triggers: a known job, a known connection or table to watch, an importable callable."""
    problems: list[Problem] = []
    jobs = ctx.jobs
    for name, trigger in ctx.sections["triggers"].items():
        path = ("triggers", name)
        if trigger.job not in jobs:
            problems.append(Problem((*path, "job"), f"unknown job {trigger.job!r} (known: "
                                                    f"{', '.join(sorted(jobs))})"))
        problems += _when(ctx, (*path, "when"), trigger.when)
        if trigger.partition == "today" and _dated(ctx, trigger.job):
            problems.append(Problem((*path, "partition"), (
                f"`partition: today` on job {trigger.job!r}, which is dated (daily partitions "
                "of its dated couriers): today's partition exists only once the day is over. "
                "Use `last_complete_day` or leave `partition:` out")))
    return problems


def _dated(ctx: Context, job: str) -> bool:
    """Whether a job is daily-partitioned, as assets/run_day.job_dated says, from the sections
    that validated (an invalid one was reported already)."""
    if ctx.info is None or ctx.info.start_date is None:
        return False
    couriers = ctx.sections["couriers"]
    def dated(courier: str | None) -> bool:
        return courier is not None and courier in couriers and couriers[courier].dated

    if job == "workflow":
        return any(c.dated for c in couriers.values())
    if group := ctx.sections["courier_groups"].get(job):
        return any(dated(c) for c in group.couriers)
    if group := ctx.sections["orchestration_groups"].get(job):
        activations = ctx.sections["activations"]
        return any(dated(activations[a].courier) for a in group.activations
                   if a in activations)
    return False


def _when(ctx: Context, where: Path_, when: spec.TriggerWhen) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(when, spec.FileChange | spec.SqlChange) and when.connection:
        missing = ctx.unknown("connections", when.connection, (*where, "connection"),
                              "connection")
        kind = ctx.kind(when.connection)
        wanted = ("sql",) if isinstance(when, spec.SqlChange) else spec.FILE_KINDS
        if not missing and kind is not None and kind not in wanted:
            missing = [Problem((*where, "connection"), f"a {when.kind} trigger needs a "
                                                       f"{' or '.join(wanted)} connection, not "
                                                       f"{kind}")]
        problems += missing
    if isinstance(when, spec.FileChange):
        problems += ctx.template(when.path, (*where, "path"))
        problems += no_run_id(when.path, (*where, "path"), "the sensor renders it before any "
                                                           "run")
    if isinstance(when, spec.TableChange) and when.table not in ctx.catalog.tables:
        problems.append(Problem((*where, "table"), f"unknown table {when.table!r} (known: "
                                                   f"{ctx.catalog.describe(when.table)})"))
    if isinstance(when, spec.PythonTrigger) and (problem := callable_problem(when.callable)):
        problems.append(Problem((*where, "callable"), problem))
    return problems


def callable_problem(target: str) -> str | None:
    """Why `module:function` cannot be called, or None (imported at load, so a typo fails
    before any night run)."""
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as failed:  # any import error is the spec's problem to report
        return f"cannot import {module_name!r}: {type(failed).__name__}: {failed}"
    if not callable(getattr(module, function, None)):
        return f"module {module_name!r} has no function {function!r}"
    return None
