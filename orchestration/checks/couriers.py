"""Reference checks of `couriers:` and `domain_tables:` (feeds), and of any table's quality
checks."""

from typing import Any

from assets import spec
from orchestration.checks.common import Context, no_run_id
from orchestration.spec_problems import Path_, Problem


def check_couriers(ctx: Context) -> list[Problem]:
    """Couriers: a known connection of a kind that can bring files or rows."""
    problems: list[Problem] = []
    for name, courier in ctx.sections["couriers"].items():
        path = ("couriers", name)
        missing = ctx.unknown("connections", courier.from_, (*path, "from"), "connection")
        problems += missing or _source(path, courier, ctx.connections.get(courier.from_))
        problems += ctx.template(courier.path, (*path, "path"))
        problems += no_run_id(courier.path, (*path, "path"), "a schedule or sensor looks for "
                                                             "the courier's file before any run")
        problems += ctx.template(courier.query, (*path, "query"), sql=True)
        if courier.dated and ctx.info is not None and ctx.info.start_date is None:
            problems.append(Problem(path, "its path is dated, so it is daily-partitioned: set "
                                          "`workflow.start_date` (the first day to load)"))
    return problems


def _source(path: Path_, courier: spec.Courier, conn: Any) -> list[Problem]:
    """A sql connection gives a query, a file store a path."""
    if conn is None:
        return []
    if isinstance(conn, spec.SqlConnection):
        if not courier.query or courier.path:
            return [Problem(path, "a courier from a `sql` connection needs `query:` (and no "
                                  "`path:`)")]
    elif not courier.path or courier.query:
        return [Problem(path, f"a courier from a `{conn.kind}` connection needs `path:` (and "
                              "no `query:`)")]
    return []


def check_domain_tables(ctx: Context) -> list[Problem]:
    """Domain tables: a known courier, and quality checks naming columns the table has."""
    problems: list[Problem] = []
    for name, table in ctx.sections["domain_tables"].items():
        path = ("domain_tables", name)
        problems += ctx.unknown("couriers", table.from_, (*path, "from"), "courier")
        problems += check_quality(path, table.quality, set(table.columns) | {"_source_file",
                                                                             "_partition"})
        for key in table.primary_key or []:
            if key not in table.columns:
                problems.append(Problem((*path, "primary_key"), f"{key!r} is not one of the "
                                        f"columns ({', '.join(table.columns)})"))
    for name, raw in ctx.invalid("domain_tables").items():
        # Its other errors are reported by validation: what they do not touch is checked now.
        path = ("domain_tables", name)
        if isinstance(raw.get("from"), str):
            problems += ctx.unknown("couriers", raw["from"], (*path, "from"), "courier")
        columns = raw.get("columns")
        names = set(map(str, columns)) if isinstance(columns, dict) else None
        problems += salvaged_quality(path, raw, None if names is None else names | {
            "_source_file", "_partition"})
    return problems


def salvaged_quality(path: Path_, raw: dict[str, Any], columns: set[str] | None
                     ) -> list[Problem]:
    """The quality checks of an entry that failed validation: each valid check is checked as
    usual (the invalid ones were reported by validation)."""
    from orchestration.spec_pydantic import validate

    checks = raw.get("quality")
    if not isinstance(checks, list):
        return []
    valid = [(i, check) for i, entry in enumerate(checks)
             if (check := validate(spec.QualityCheck, entry, ())[0]) is not None]
    problems = check_quality(path, [c for _, c in valid], columns)
    # check_quality numbers the valid checks 0, 1…: put each problem back at its own index.
    index: dict[str | int, int] = {n: i for n, (i, _) in enumerate(valid)}
    return [Problem((*path, "quality", index[p.path[len(path) + 1]], *p.path[len(path) + 2:]),
                    p.message) for p in problems]


def check_quality(path: Path_, checks: list[Any], columns: set[str] | None) -> list[Problem]:
    """Check names unique per table; columns known where the table's columns are."""
    from assets.quality import check_name

    problems: list[Problem] = []
    seen: set[str] = set()
    for i, check in enumerate(checks):
        where = (*path, "quality", i)
        name = check_name(check)
        if name in seen:
            problems.append(Problem(where, f"two checks are named {name!r}; give one a "
                                           "`name:`"))
        seen.add(name)
        named = [*getattr(check, "columns", []), *([check.column] if getattr(
            check, "column", None) else [])]
        problems.extend(Problem(where, f"unknown column {column!r} (known: "
                                       f"{', '.join(sorted(columns or ()))})")
                        for column in (named if columns is not None else [])
                        if column not in columns)
        if isinstance(check, spec.RowCountCheck) and check.min is None and check.max is None:
            problems.append(Problem(where, "a row_count check needs `min:` and/or `max:`"))
    return problems
