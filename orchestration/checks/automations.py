"""Reference checks of the `automations:` and `profiles:` sections: steps and their
connections, fetched query sources, ETL and report steps, chains (children, loops, mutexes) and
run-as profiles. Plain functions of the checkers' `Context`, each returning its problems."""


from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from assets import spec
from assets.sealing import MAIL_SAMPLE
from assets.sql_statements import expression_problem
from assets.steps.registry import STEPS
from orchestration.checks.activations import destination_problems
from orchestration.checks.common import Context
from orchestration.spec_problems import Path_, Problem
from resources.connections.files import path_problem


def check_profiles(ctx: Context) -> list[Problem]:
    """A profile swaps known connections for known ones of the same kind."""
    problems: list[Problem] = []
    for name, profile in ctx.sections["profiles"].items():
        for original, swapped in profile.connections.items():
            where = ("profiles", name, "connections", original)
            missing = ctx.unknown("connections", original, where, "connection")
            missing = missing or ctx.unknown("connections", swapped, where, "connection")
            problems += missing
            kinds = (ctx.kind(original), ctx.kind(swapped))
            if missing or None in kinds:
                continue  # known but invalid: its own errors are already reported
            if kinds[0] != kinds[1]:
                problems.append(Problem(where, f"{original!r} is a {kinds[0]} connection and "
                                               f"{swapped!r} a {kinds[1]} one; a profile swaps "
                                               "a connection for one of the same kind"))
    return problems


def check_automations(ctx: Context) -> list[Problem]:
    """Automations: steps or a chain, known children, no loops, one mutex per run, and each
    step's own rules."""
    problems: list[Problem] = []
    automations = ctx.sections["automations"]
    groups = {*ctx.sections["courier_groups"], *ctx.sections["orchestration_groups"]}
    for name, automation in automations.items():
        path = ("automations", name)
        problems += _steps(ctx, path, automation)
        chain = _chain(ctx, path, name, automations)
        problems += chain or _mutex(path, name, automations)
        if name in groups:
            problems.append(Problem(path, f"a group is also named {name!r}; names make job "
                                          "names, so they must differ"))
    return problems


def _chain(ctx: Context, path: Path_, name: str,
           automations: Mapping[str, spec.Automation]) -> list[Problem]:
    """Steps or children, known children, no loops, known profile."""
    problems: list[Problem] = []
    automation = automations[name]
    if bool(automation.steps) == bool(automation.chain):
        problems.append(Problem(path, "an automation has either `steps:` (what it does) or "
                                      "`chain:` (the automations it runs), " + (
                                          "not both" if automation.steps else
                                          "and this one has neither")))
    if "mode" in automation.model_fields_set and not automation.chain:
        problems.append(Problem((*path, "mode"), "`mode` is for a `chain:` (series or "
                                                 "parallel); an automation's steps always run "
                                                 "in order"))
    if automation.run_as:
        problems += ctx.unknown("profiles", automation.run_as, (*path, "run_as"), "profile")
    groups = {*ctx.known["courier_groups"], *ctx.known["orchestration_groups"]}
    for i, child in enumerate(automation.chain):
        where = (*path, "chain", i)
        if child not in groups and child not in ctx.known["automations"]:
            known = ", ".join(sorted({*ctx.known["automations"], *groups}))
            problems.append(Problem(where, f"unknown automation or group {child!r} (known: "
                                           f"{known})"))
            continue
        if automation.chain.index(child) != i:
            problems.append(Problem(where, f"{child!r} is twice in this chain; run it once"))
        if child not in groups and (loop := _chain_loop(child, automations, [name])):
            problems.append(Problem(where, "a chain cannot run itself: " + " → ".join(loop)))
    return problems


def _mutex(path: Path_, name: str, automations: Mapping[str, spec.Automation]
           ) -> list[Problem]:
    """A run holds one mutex: a chain and what it runs share it (checked once the chain has
    no loop)."""
    automation = automations[name]
    if not automation.chain:
        return []
    held = {a.mutex for a in _descendants(name, automations) if a.mutex}
    if automation.mutex and held - {automation.mutex}:
        return [Problem((*path, "mutex"), f"what this chain runs holds mutex "
                                          f"{', '.join(sorted(held - {automation.mutex}))} and "
                                          f"a run holds one ({automation.mutex}): give the "
                                          "chain and what it runs the same mutex")]
    if len(held) > 1:
        return [Problem((*path, "chain"), f"the children hold different mutexes "
                                          f"({', '.join(sorted(held))}) and a run holds one: "
                                          "give them the same one")]
    return []


def _descendants(name: str, automations: Mapping[str, spec.Automation],
                 trail: frozenset[str] = frozenset()) -> list[spec.Automation]:
    """The automations a chain runs, at any depth (group jobs left out; a loop, reported
    elsewhere, is walked once)."""
    found = []
    for child in automations[name].chain:
        if child in automations and child not in trail:
            found += [automations[child], *_descendants(child, automations, trail | {name})]
    return found


def _chain_loop(name: str, automations: Mapping[str, spec.Automation],
                trail: list[str]) -> list[str] | None:
    if name in trail:
        return [*trail, name]
    for child in getattr(automations.get(name), "chain", []):
        if (loop := _chain_loop(child, automations, [*trail, name])) is not None:
            return loop
    return None


def _steps(ctx: Context, path: Path_, automation: spec.Automation) -> list[Problem]:
    problems: list[Problem] = []
    names = automation.step_names()
    values = {**ctx.params, **automation.params}
    for i, (step, name) in enumerate(zip(automation.steps, names, strict=True)):
        where = (*path, "steps", i)
        if names.index(name) != i:
            problems.append(Problem((*where, "name"), f"two steps are named {name!r}; step "
                                                      "names must differ"))
        problems += _step_connection(ctx, where, step)
        if isinstance(step, spec.SqlStep):
            problems += ctx.template(step.sql, (*where, "sql"), values, sql=True)
        if isinstance(step, spec.AlarmStep):
            problems += ctx.template(step.query, (*where, "query"), values, sql=True)
        if isinstance(step, spec.PythonStep):
            for j, arg in enumerate(step.args):
                problems += ctx.template(arg, (*where, "args", j), values)
            for j, connection in enumerate(step.connections):
                problems += ctx.unknown("connections", connection,
                                        (*where, "connections", j), "connection")
        if isinstance(step, spec.SqlStep | spec.AlarmStep):
            problems += _query_source(ctx, where, step)
        if isinstance(step, spec.EtlStep):
            problems += _etl(ctx, where, step, values)
        if isinstance(step, spec.ReportStep):
            problems += _report(ctx, where, step, values)
        if isinstance(step, spec.DeliverStep):
            problems += _deliver(ctx, where, step, values)
            if (label := f"{path[-1]}__{name}") in ctx.known["activations"]:
                problems.append(Problem((*where, "name"), f"an activation is named {label!r}, "
                                        "the name this step's files carry in the file "
                                        "history; rename one"))
    return problems


def _deliver(ctx: Context, path: Path_, step: spec.DeliverStep, params: Mapping[str, Any]
             ) -> list[Problem]:
    """An activation's delivery rules, for files the chain already holds: destinations that
    can receive files, `mail:` exactly when one is smtp, templates that render."""
    problems = destination_problems(ctx, path, step)
    if ignored := sorted(step.file.model_fields_set - {"name"}):
        problems.append(Problem((*path, "file"), f"{', '.join(ignored)}: a deliver step sends "
                                                 "the chain's files as they are; only "
                                                 "`file.name` applies"))
    source = {"source_name": "file.csv"}
    problems += ctx.template(step.path, (*path, "path"), params)
    problems += ctx.template(step.file.name, (*path, "file", "name"), params, extra=source)
    problems += ctx.template(step.seal.zip_name, (*path, "seal", "zip_name"), params,
                             extra=source)
    if step.mail is not None:
        for key in ("subject", "body"):
            problems += ctx.template(getattr(step.mail, key), (*path, "mail", key), params,
                                     extra={**MAIL_SAMPLE, **source})
    return problems


def _step_connection(ctx: Context, where: Path_, step: Any) -> list[Problem]:
    """A step's connection is known and of a kind the step can use."""
    connection = getattr(step, "connection", None)
    if not connection:
        return []
    if missing := ctx.unknown("connections", connection, (*where, "connection"), "connection"):
        return missing
    kind = ctx.kind(connection)  # None: invalid, already reported
    wanted = STEPS.build(step).connections
    if kind is not None and kind not in wanted:
        article = "an" if step.kind in ("alarm", "ssh") else "a"
        return [Problem((*where, "connection"), f"{article} {step.kind} step needs a "
                                                f"{' or '.join(wanted)} connection, not "
                                                f"{kind}")]
    return []


def _query_source(ctx: Context, path: Path_, step: spec.SqlStep | spec.AlarmStep
                  ) -> list[Problem]:
    """A query fetched at run time: a file connection and a safe path, or a URL whose
    token never travels in clear text."""
    problems: list[Problem] = []
    source_key, url_key = step.FETCH_KEYS
    source, url = step.file_source, step.url_source
    if step.allow_statements and not step.fetched:
        problems.append(Problem((*path, "allow_statements"), f"only applies to a query fetched "
                                                             f"at run time (`{source_key}:` or "
                                                             f"`{url_key}:`)"))
    if source is not None:
        where = (*path, source_key)
        missing = ctx.unknown("connections", source.connection, (*where, "connection"),
                              "connection")
        kind = ctx.kind(source.connection)
        if not missing and kind is not None and kind not in spec.FILE_KINDS:
            missing = [Problem((*where, "connection"), f"a query source needs a "
                                                       f"{', '.join(spec.FILE_KINDS)} "
                                                       f"connection, not {kind}")]
        problems += missing
        if problem := path_problem(source.path):
            problems.append(Problem((*where, "path"), f"{source.path!r} {problem}; give a path "
                                                      "relative to the connection's base"))
    if url is not None and url.token is not None:
        host = urlsplit(url.url).hostname or ""
        if url.url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
            problems.append(Problem((*path, url_key, "url"), "a token is sent only over https "
                                                             "(http would show it to the "
                                                             "network); use an https URL"))
    return problems


def _etl(ctx: Context, path: Path_, step: spec.EtlStep, params: Mapping[str, Any]
         ) -> list[Problem]:
    problems: list[Problem] = []
    expressions = [(("computed", n), e) for n, e in step.computed.items()]
    expressions += [(("aggregates", n), e) for n, e in step.aggregates.items()]
    expressions += [(("filter",), step.filter)] if step.filter else []
    for key, expression in expressions:
        if problem := expression_problem(expression):
            problems.append(Problem((*path, *key), problem))
        else:
            problems += ctx.template(expression, (*path, *key), params, sql=True)
    grouped = bool(step.group_by or step.aggregates)
    if grouped and step.columns:
        problems.append(Problem((*path, "columns"), "with `group_by` or `aggregates` the output "
                                                    "is the group_by columns and the "
                                                    "aggregates: leave `columns` out"))
    names = [*step.group_by, *step.aggregates] if grouped else []
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(Problem((*path, "aggregates", name), f"{name!r} is both a group_by "
                                                             "column and an aggregate; rename "
                                                             "the aggregate"))
    for name in step.computed if not grouped and step.columns else []:
        if name not in step.columns:
            problems.append(Problem((*path, "computed", name), f"computed column {name!r} is "
                                                               "not in `columns`, so it would "
                                                               "be dropped; add it there"))
    return problems


def _report(ctx: Context, path: Path_, step: spec.ReportStep, params: Mapping[str, Any]
            ) -> list[Problem]:
    problems: list[Problem] = []
    if not step.tables and step.chart is None:
        problems.append(Problem(path, "a report needs `tables:` and/or a `chart:` (what to "
                                      "show)"))
    for i, table in enumerate(step.tables):
        problems += ctx.template(table.sql, (*path, "tables", i, "sql"), params, sql=True)
    if step.chart is not None:
        problems += ctx.template(step.chart.sql, (*path, "chart", "sql"), params, sql=True)
        if step.chart.x and step.chart.x == step.chart.y:
            problems.append(Problem((*path, "chart", "y"), "x and y must be two different "
                                                           "columns"))
    if step.file_name:
        problems += ctx.template(step.file_name, (*path, "file_name"), params)
        if not step.file_name.endswith(".pdf") or "/" in step.file_name:
            problems.append(Problem((*path, "file_name"), "a report's file name is one plain "
                                                          "name ending in .pdf"))
    return problems
