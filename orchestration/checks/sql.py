"""Reference checks of `databases:` and `queries:`: the tables their SQL names exist, their
templates render, and no table depends on itself."""

from pathlib import Path

from assets import spec
from assets.names import RESERVED_SCHEMAS
from orchestration.checks.common import Context
from orchestration.checks.couriers import check_quality, salvaged_quality
from orchestration.spec_problems import Path_, Problem


def check_sql_tables(ctx: Context) -> list[Problem]:
    """Databases and queries: SQL that names known tables and columns (bound against the
    declared columns), quality checks naming the columns it returns, no cycles."""
    graph: dict[str, set[str]] = {}
    problems = [Problem(("databases", db), f"'{db}' is reserved for Stagecoach's own schema; "
                                           "choose another database name")
                for db in ctx.sections["databases"] if db in RESERVED_SCHEMAS]
    binding = ctx.binding
    for path, schema, name, table in ctx.sql_tables():
        qualified = f"{schema}.{name}"
        reserved = path[0] == "databases" and schema in RESERVED_SCHEMAS
        graph[qualified], found = _deps(ctx, path, table)
        problems += found
        if not reserved and (failure := binding.failures.get(qualified)):
            problems.append(Problem((*path, "sql_file" if table.sql_file else "sql"),
                                    failure.describe(Path(table.sql_file).name if
                                                     table.sql_file else "SQL")))
        columns = None if reserved else binding.columns.get(qualified)
        problems += check_quality(path, table.quality, set(columns) if columns else None)
    for db, raw in ctx.invalid("databases").items():
        tables = raw.get("tables")
        for t, table in (tables.items() if isinstance(tables, dict) else ()):
            if isinstance(table, dict):
                problems += salvaged_quality(("databases", db, "tables", str(t)), table, None)
    for name, raw in ctx.invalid("queries").items():
        problems += salvaged_quality(("queries", name), raw, None)
    return problems + _cycles(graph)


def _deps(ctx: Context, path: Path_, table: spec.SqlTable) -> tuple[set[str], list[Problem]]:
    """(the tables `table` reads, the problems of its SQL and `depends_on`)."""
    if not table.sql:
        return set(), []
    key = (*path, "sql_file" if table.sql_file else "sql")
    problems = ctx.template(table.sql, key, sql=True)
    refs, unknown = ctx.catalog.references(table.sql)
    problems += [Problem(key, f"unknown table {ref!r} in the SQL (known: "
                              f"{ctx.catalog.describe(ref)})") for ref in unknown]
    problems += [Problem((*path, "depends_on"), f"unknown table {ref!r} (known: "
                                                f"{ctx.catalog.describe(ref)})")
                 for ref in table.depends_on if ref not in ctx.catalog.tables]
    return refs | set(table.depends_on), problems


def _cycles(graph: dict[str, set[str]]) -> list[Problem]:
    problems: list[Problem] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for upstream in sorted(graph.get(node, ())):
            if state.get(upstream) == 1:
                cycle = [*stack[stack.index(upstream):], upstream]
                schema, table = node.split(".", 1)
                path = ("queries", table) if schema == "query" else (
                    "databases", schema, "tables", table)
                problems.append(Problem(path, "dependency cycle: " + " → ".join(cycle)))
            elif upstream in graph and not state.get(upstream):
                visit(upstream)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node)
    return problems
