"""Reference checks of `identity:`: sources are domain tables holding the columns named, rules
and survivorship name known fields, and no exact rule rests on household-shared values alone."""


from assets import spec
from assets.spec import HOUSEHOLD_ROLES, PERSON_ROLES
from orchestration.checks.common import Context
from orchestration.spec_problems import Path_, Problem

DATE_TAGS = ("date", "birthdate", "datetime")



def check_identity(ctx: Context) -> list[Problem]:
    """Every identity resolution: its sources, rules, splink settings and survivorship."""
    problems: list[Problem] = []
    for name, ident in ctx.sections["identity"].items():
        path = ("identity", name)
        problems += _sources(ctx, path, ident)
        problems += _rules(path, ident)
        problems += _survivorship(path, ident)
    return problems


def _fields(ident: spec.IdentityResolution, names: list[str], path: Path_) -> list[Problem]:
    return [Problem(path, f"unknown field {f!r} (known: {', '.join(ident.fields)})")
            for f in names if f not in ident.fields]


def _sources(ctx: Context, path: Path_, ident: spec.IdentityResolution) -> list[Problem]:
    problems: list[Problem] = []
    for source, item in ident.sources.items():
        where = (*path, "sources", source)
        found = ctx.unknown("domain_tables", source, where, "domain table")
        problems += found
        problems += _fields(ident, [*item.columns, *item.absent], (*where, "columns"))
        table = ctx.sections["domain_tables"].get(source)
        if found or table is None:
            continue
        columns = set(table.columns) | {"_source_file", "_partition"}
        keys = [item.key] if isinstance(item.key, str) else item.key
        wanted = [("key", k) for k in keys]
        wanted += [("updated_at", item.updated_at)] if item.updated_at else []
        wanted += [(f"columns.{f}" if f in item.columns else "columns", ident.source_column(
            source, f)) for f in ident.fields if ident.source_column(source, f)]
        for key, column in wanted:
            if column not in columns:
                problems.append(Problem((*where, *key.split(".")), (
                    f"domain table {source!r} has no column {column!r} (it has: "
                    f"{', '.join(sorted(columns))}); map the field with `columns: {{field: "
                    "column}` or list it under `absent:`")))
        dated = [("updated_at", item.updated_at, "a datetime or date")] if item.updated_at else []
        dated += [(f"columns.{f}" if f in item.columns else "columns",
                   ident.source_column(source, f), "a date or birthdate")
                  for f, role in ident.fields.items() if role == "birthdate"
                  and ident.source_column(source, f)]
        for key, column, wanted_tag in dated:
            mapping = table.columns.get(column)
            if mapping is not None and mapping.tag not in DATE_TAGS:
                problems.append(Problem((*where, *key.split(".")), (
                    f"column {column!r} of domain table {source!r} is tagged {mapping.tag!r}; "
                    f"it must be {wanted_tag} (tag: date, birthdate or datetime)")))
    return problems


def _rules(path: Path_, ident: spec.IdentityResolution) -> list[Problem]:
    problems: list[Problem] = []
    people = [f for f, role in ident.fields.items() if role in PERSON_ROLES]
    seen: set[str] = set()
    for i, rule in enumerate(ident.exact_rules):
        where = (*path, "exact_rules", i)
        if rule.name in seen:
            problems.append(Problem((*where, "name"), f"exact rule {rule.name!r} is defined "
                                                      "twice; pairs are explained by the name"))
        seen.add(rule.name)
        problems += _fields(ident, rule.columns, (*where, "columns"))
        roles = {ident.fields.get(c) for c in rule.columns}
        if roles <= HOUSEHOLD_ROLES and not people:
            problems.append(Problem((*where, "columns"), (
                f"exact rule {rule.name!r} compares only values a household shares "
                f"({', '.join(rule.columns)}): alone they would merge its people. Add a "
                "given_name, full_name or birthdate field (the household rule then needs it "
                "where a value is shared) or add such a field to the rule")))
    prob = ident.probabilistic
    if prob is not None:
        for i, rule in enumerate(prob.blocking_rules):
            problems += _fields(ident, rule, (*path, "probabilistic", "blocking_rules", i))
        training = prob.training
        for i, rule in enumerate(training.em_blocking_rules):
            problems += _fields(ident, rule, (*path, "probabilistic", "training",
                                              "em_blocking_rules", i))
        where = (*path, "probabilistic", "training")
        if training.method == "given" and not training.model_file:
            problems.append(Problem((*where, "method"), "method `given` reads a splink model: "
                                    "set `model_file:` (a JSON from save_model_to_json)"))
        if training.method == "em" and training.model_file:
            problems.append(Problem((*where, "model_file"), "a model file is read only with "
                                    "`method: given`; remove it or set the method"))
    return problems


def _survivorship(path: Path_, ident: spec.IdentityResolution) -> list[Problem]:
    problems = _fields(ident, list(ident.survivorship), (*path, "survivorship"))
    for f in ident.survivorship:
        rule = ident.survivorship_of(f)
        where = (*path, "survivorship", f)
        problems += [Problem((*where, "sources"), f"unknown source {s!r} (known: "
                                                   f"{', '.join(ident.sources)})")
                     for s in rule.sources if s not in ident.sources]
        if rule.rule == "preferred_source" and not rule.sources:
            problems.append(Problem((*where, "sources"), "preferred_source needs `sources:`, "
                                                         "the sources in order of preference"))
    return problems
