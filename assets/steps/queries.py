"""Queries fetched at run time (a file connection or a URL): cached before parameters are
applied; at each run rendered (template values become bound parameters), split as its database
reads it, cut down to the statement types the step allows (the rest removed, with a warning)
and shown, strings masked, in the op's output. On DuckDB it runs without file access."""

import hashlib
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import dagster as dg

from assets import spec
from assets.names import (
    STAGING_KEY,
    connection_key,
)
from assets.sql_statements import DEFAULT_ALLOWED, SqlTextError, keep_allowed
from assets.steps.common import (
    database,
    final,
    template_values,
)
from assets.templating import (
    BoundSql,
    check_template,
    render_sql,
)
from resources.connections.query_source import (
    SourceRefused,
    SourceUnreachable,
    cached_fetch,
    describe_url,
    fetch_file,
    fetch_url,
)

QUERY_CACHE = "query_cache"  # under the data directory: <workflow>/<op>-<source hash>.sql


def step_resources(workflow: str, step: Any) -> set[str]:
    """Resource keys a step needs beyond its database: the query source and the staging area
    (for the cached copy or the report file)."""
    keys: set[str] = set()
    fetched = isinstance(step, spec.FetchedQueryStep) and step.fetched
    if fetched and step.file_source is not None:
        keys.add(connection_key(workflow, step.file_source.connection))
    if fetched or isinstance(step, spec.ReportStep):
        keys.add(STAGING_KEY)
    return keys


def _token(source: spec.UrlSource, step: str) -> str | None:
    if source.token is None:
        return None
    if source.token.env not in os.environ:
        raise final(f"step {step}: environment variable {source.token.env} (the token of "
                    f"{describe_url(source.url)}) is not set; set it where the runs execute")
    return os.environ[source.token.env]


def _fetch(context: dg.OpExecutionContext, workflow: str, step: spec.FetchedQueryStep
           ) -> tuple[str, str]:
    """(query text, where it came from): fetched now, else the cached copy (with a warning)."""
    op = context.op.name
    file_source, url_source = step.file_source, step.url_source
    if file_source is not None:
        files = getattr(context.resources, connection_key(workflow, file_source.connection))
        where = f"connection {file_source.connection}: {file_source.path}"
        fetch = partial(fetch_file, files, file_source.path)
    else:
        assert url_source is not None
        token = _token(url_source, op)
        where = describe_url(url_source.url)
        fetch = partial(fetch_url, url_source.url, token, url_source.header, url_source.scheme,
                        url_source.ca_file, url_source.timeout_seconds)
    if file_source is not None:
        source = f"{file_source.connection}:{file_source.path}"
    else:
        assert url_source is not None  # a fetched step has one source or the other
        source = url_source.url
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]  # the whole URL, query included
    cache = getattr(context.resources, STAGING_KEY).folder(QUERY_CACHE, workflow)
    try:
        fetched = cached_fetch(fetch, cache / f"{op}-{digest}.sql")
    except SourceRefused as refused:
        raise final(f"step {op}: the query source refused: {refused}") from None
    except SourceUnreachable as down:  # retryable: the step's retry policy applies
        raise RuntimeError(f"step {op}: query source {down}") from None
    if fetched.warning:
        context.log.warning(f"step {op}: {fetched.warning}")
    return fetched.text, where


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in the text."""
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return "`" * ticks


def step_statements(context: dg.OpExecutionContext, workflow: str,
                    step: spec.SqlStep | spec.AlarmStep,
                    params: dict[str, Any]) -> list[BoundSql]:
    """The statements a sql or alarm step runs, rendered for its database: its own SQL as one,
    or a fetched query's statements of the allowed types.

    A fetched query is rendered before it is split, so what is checked is what runs (a Jinja
    comment or filter block cannot turn one checked statement into two)."""
    db = database(context, workflow, step.connection)
    values = template_values(context, params, workflow)
    inline = step.sql if isinstance(step, spec.SqlStep) else step.query
    if not step.fetched:
        return [render_sql(inline or "", values, db.placeholder.format)]
    op = context.op.name
    text, where = _fetch(context, workflow, step)
    if problem := check_template(text, params, sql=True):
        raise final(f"step {op}: the query from {where}: {problem}")
    bound = render_sql(text, values, db.placeholder.format)
    allowed = step.allow_statements or list(DEFAULT_ALLOWED)
    try:
        kept, removed = keep_allowed(bound.text, allowed, "duckdb" if db.is_duckdb
                                     else "postgres")
    except SqlTextError as bad:
        raise final(f"step {op}: the query from {where} cannot be split into statements: "
                    f"{bad}") from None
    if removed:
        context.log.warning(
            f"step {op}: removed {len(removed)} statement(s) of a type not allowed "
            f"(allowed: {', '.join(allowed)}) from the query of {where}: "
            + "; ".join(s.short() for s in removed))
    preview = ";\n".join(s.masked for s in kept)  # strings masked, as in the warning
    fence = _fence(preview)
    context.add_output_metadata({
        "query": dg.MetadataValue.md(f"{fence}sql\n{preview}\n{fence}"),
        "query_source": where, "removed_statements": len(removed)})
    if not kept:
        raise final(f"step {op}: the query from {where} has no statement left to run (allowed: "
                    f"{', '.join(allowed)}; removed {len(removed)})")
    return [BoundSql(s.text, {k: v for k, v in bound.params.items() if k in s.params})
            for s in kept]


def without_file_access_when_fetched(run: Callable[..., dict[str, Any]]
                                     ) -> Callable[..., dict[str, Any]]:
    """A sql or alarm runner whose DuckDB database cannot touch files while it runs a fetched
    query (the warehouse's own loads, made elsewhere, keep their access)."""

    def runner(context: dg.OpExecutionContext, workflow: spec.Workflow,
               step: spec.SqlStep | spec.AlarmStep,
               params: dict[str, Any], files: list[str]) -> dict[str, Any]:
        if not step.fetched:
            return run(context, workflow, step, params, files)
        with database(context, workflow.workflow.name, step.connection).without_file_access():
            return run(context, workflow, step, params, files)

    return runner

