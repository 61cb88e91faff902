"""YAML workflow files → typed `Workflow` models, with every error at once.

Each error names the file, the line and the path inside the spec, and says what to do, e.g.
`workflows/acme.yaml:41 couriers.orders.from: unknown connection 'vendr_sftp' (known: landing)`.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assets import spec
from assets.names import identity_tables
from orchestration.checks.activations import check_activations, check_archive
from orchestration.checks.alerts import check_alerts
from orchestration.checks.automations import check_automations, check_profiles
from orchestration.checks.common import Context
from orchestration.checks.couriers import check_couriers, check_domain_tables
from orchestration.checks.groups import (
    callable_problem,
    check_courier_groups,
    check_orchestration_groups,
    check_triggers,
)
from orchestration.checks.identity import check_identity
from orchestration.checks.sql import check_sql_tables
from orchestration.spec_files import resolve
from orchestration.spec_problems import Path_, Problem, SpecError, SpecInvalid
from orchestration.spec_pydantic import validate
from orchestration.spec_yaml import Lines, parse_yaml
from resources import settings

__all__ = ["LoadedWorkflow", "SpecError", "SpecInvalid", "callable_problem", "load_workflow",
           "load_workflow_text", "load_workflows", "spec_files"]

SECTIONS: dict[str, Any] = {
    "connections": spec.Connection,
    "couriers": spec.Courier,
    "domain_tables": spec.DomainTable,
    "databases": spec.Database,
    "queries": spec.Query,
    "identity": spec.IdentityResolution,
    "activations": spec.Activation,
    "courier_groups": spec.CourierGroup,
    "orchestration_groups": spec.OrchestrationGroup,
    "triggers": spec.Trigger,
    "profiles": spec.Profile,
    "automations": spec.Automation,
    "alerts": spec.Alert,
}
# One reference checker per section, each given the same inputs; all run, every time.
CHECKERS: tuple[Callable[[Context], list[Problem]], ...] = (
    check_couriers, check_domain_tables, check_sql_tables, check_identity, check_activations,
    check_archive, check_courier_groups, check_orchestration_groups, check_profiles,
    check_automations, check_triggers, check_alerts,
)


@dataclass(frozen=True)
class LoadedWorkflow:
    """A validated workflow, the file it came from and the line of every spec path."""

    spec: spec.Workflow
    path: Path
    lines: Mapping[Path_, int] = field(default_factory=dict)


def spec_files(target: Path) -> list[Path]:
    """The spec files of a file or folder target, in name order."""
    if target.is_file():
        return [target]
    return sorted([*target.glob("*.yaml"), *target.glob("*.yml")])


def load_workflows(target: Path | None = None) -> list[LoadedWorkflow]:
    """Load every spec under a folder (or one file); raise `SpecInvalid` with all errors."""
    target = target or settings.workflows_dir()
    if not target.exists():
        raise SpecInvalid([SpecError(str(target), 0, "", f"no such file or folder; set "
                                     f"{settings.WORKFLOWS_DIR_ENV} or pass a path")])
    files = spec_files(target)
    if not files:
        raise SpecInvalid([SpecError(str(target), 0, "", "no workflow spec (*.yaml) here; "
                                     "add one or point at another folder")])
    loaded, errors = [], []
    for file in files:
        try:
            loaded.append(load_workflow(file))
        except SpecInvalid as invalid:
            errors.extend(invalid.errors)
    errors.extend(_cross_workflow_errors(loaded))
    if errors:
        raise SpecInvalid(errors)
    return loaded


def load_workflow(file: Path) -> LoadedWorkflow:
    """One spec file parsed and checked; raises SpecInvalid listing every error."""
    text = file.read_text(encoding="utf-8")
    workflow, lines = _load(text, _display(file), file.parent)
    return LoadedWorkflow(workflow, file, lines.lines)


def load_workflow_text(text: str, name: str = "<inline>.yaml", base: Path | None = None
                       ) -> spec.Workflow:
    """Validate spec text (tests, tools); relative paths resolve against `base`."""
    return _load(text, name, base or Path.cwd())[0]


def _display(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(file)


def _load(text: str, file: str, base: Path) -> tuple[spec.Workflow, Lines]:
    """YAML, then every section's models, then every section's references: all errors of
    the three passes that can be found, raised together."""
    raw, lines, errors = parse_yaml(text, file)
    workflow, problems = _workflow(raw, base) if raw is not None else (None, [])
    errors += [SpecError(file, lines.line(path), ".".join(map(str, path)), message)
               for path, message in problems]
    if errors or workflow is None:
        unique = dict.fromkeys(errors)  # union members can repeat one problem
        raise SpecInvalid(sorted(unique, key=lambda e: (e.line, e.path)))
    return workflow, lines


def _workflow(raw: dict, base: Path) -> tuple[spec.Workflow | None, list[Problem]]:
    """The typed workflow (None if anything is wrong) and the problems of every section."""
    problems = [Problem((key,), f"unknown section '{key}' (known: workflow, "
                                f"{', '.join(SECTIONS)})")
                for key in raw if key != "workflow" and key not in SECTIONS]
    info = None
    if "workflow" not in raw:
        problems.append(Problem((), "missing `workflow:` section with at least `name:`"))
    else:
        info, found = validate(spec.WorkflowInfo, raw["workflow"], ("workflow",))
        problems += found
    sections: dict[str, dict[str, Any]] = {}
    known: dict[str, set[str]] = {}
    written: dict[str, dict[str, Any]] = {}
    for section, model in SECTIONS.items():
        items = raw.get(section) or {}
        if not isinstance(items, dict):
            problems.append(Problem((section,), "must be a mapping of name → settings"))
            items = {}
        known[section] = set(map(str, items))
        written[section] = items
        sections[section], found = _section(section, model, items, base)
        problems += found
    raw_info = raw.get("workflow")
    context = Context.of(sections, known, info, raw_info.get("params") if isinstance(
        raw_info, dict) else None, written, [p.path for p in problems])
    for check in CHECKERS:
        problems += check(context)
    if info is None or problems:
        return None, problems
    return spec.Workflow(workflow=info, **sections), problems


def _section(section: str, model: Any, items: dict, base: Path
             ) -> tuple[dict[str, Any], list[Problem]]:
    """The valid entries of one section, files resolved, and the problems of the others."""
    parsed: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, value in items.items():
        path = (section, name)
        if not re.match(spec.NAME_PATTERN, str(name)):
            problems.append(Problem(path, "names must be lower_snake_case (a letter, then "
                                          "letters, digits or `_`, at most 63)"))
            continue
        if isinstance(value, dict) and True in value and section == "alerts":
            problems.append(Problem((*path, "on"), "YAML reads the key `on` as true; write "
                                                   "`send_on:` for the events to report"))
            value = {k: v for k, v in value.items() if k is not True}
        item, found = validate(model, value, path)
        problems += found
        if item is not None:
            parsed[name], found = resolve(base, section, name, item)
            problems += found
    return parsed, problems


def _cross_workflow_errors(loaded: list[LoadedWorkflow]) -> list[SpecError]:
    """Names shared by the whole code location: workflows and every asset key."""
    errors, owners = [], {}
    for item in loaded:
        spec_ = item.spec
        keys = {("workflow", spec_.workflow.name): ("workflow", "name")}
        keys |= {("courier", c): ("couriers", c) for c in spec_.couriers}
        keys |= {("domain", t): ("domain_tables", t) for t in spec_.domain_tables}
        keys |= {("db", db, t): ("databases", db, "tables", t)
                 for db, d in spec_.databases.items() for t in d.tables}
        keys |= {("query", q): ("queries", q) for q in spec_.queries}
        keys |= {("identity", t): ("identity", n) for n in spec_.identity
                 for t in identity_tables(n).values()}
        keys |= {("activation", a): ("activations", a) for a in spec_.activations}
        for key, path in keys.items():
            if key in owners and owners[key] != item.path:
                errors.append(SpecError(
                    _display(item.path), item.lines.get(path, 1), ".".join(path),
                    f"{'/'.join(key)} is also defined in {_display(owners[key])}; workflows "
                    "and asset keys are shared by the code location: rename one"))
            owners.setdefault(key, item.path)
    return errors
