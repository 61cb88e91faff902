"""Sandboxed Jinja templating for paths, file names and SQL.

Dates come from the partition (or the schedule's tick), never from the wall clock of the
worker, so a backfill of a past day renders that day's names. In SQL every `{{ expr }}` becomes
a bound parameter: values never get pasted into the statement text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, meta, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment


def date_context(day: date, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The macros every template sees for a given logical day."""
    yesterday = day - timedelta(days=1)
    return {
        "ds": day.isoformat(),
        "ds_nodash": day.strftime("%Y%m%d"),
        "yesterday_ds": yesterday.isoformat(),
        "yesterday_ds_nodash": yesterday.strftime("%Y%m%d"),
        "month_start": day.replace(day=1).isoformat(),
        "year": day.strftime("%Y"),
        "month": day.strftime("%m"),
        "day": day.strftime("%d"),
        "params": dict(params or {}),
    }


_text_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
# Compiling a template costs ~1 ms; a tick over 1,000 couriers renders 1,000 of them, and the
# same ones every tick. Templates come from the specs, so the cache is bounded by their size.
COMPILED_TEMPLATES = 16_384


@lru_cache(maxsize=COMPILED_TEMPLATES)
def _text_template(template: str) -> Template:
    return _text_env.from_string(template)


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """Render a path or file name."""
    return _text_template(template).render(**context)


@dataclass
class _BindCollector:
    placeholder: Callable[[str], str]
    values: dict[str, Any] = field(default_factory=dict)

    def __call__(self, value: Any) -> str:
        if isinstance(value, Undefined):
            str(value)  # StrictUndefined raises here, naming the missing variable
        name = f"p{len(self.values)}"
        self.values[name] = value
        return self.placeholder(name)


@dataclass(frozen=True)
class BoundSql:
    """SQL text with named placeholders and the values bound to them."""

    text: str
    params: dict[str, Any]


def render_sql(
    template: str, context: Mapping[str, Any], placeholder: Callable[[str], str] = ":{}".format
) -> BoundSql:
    """Render SQL with each `{{ expr }}` turned into a bound parameter.

    `placeholder` formats a parameter name in the target's paramstyle (`:p0` for SQLAlchemy,
    `$p0` for DuckDB's own API).
    """
    compiled = _sql_template(template)  # outside the render: nothing is bound at compile time
    token = _bind_to.set(_BindCollector(placeholder))
    try:
        text = compiled.render(**context)
        return BoundSql(text=text, params=_bind_to.get().values)
    finally:
        _bind_to.reset(token)


# The collector of the render in progress (renders may run in several sensor threads at once).
_bind_to: ContextVar[_BindCollector] = ContextVar("stagecoach_sql_bind")


@pass_context  # evaluated at render time only: Jinja never folds a constant through it
def _bind(_context: Any, value: Any) -> str:
    return _bind_to.get()(value)


_sql_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                         finalize=_bind)


@lru_cache(maxsize=COMPILED_TEMPLATES)
def _sql_template(template: str) -> Template:
    return _sql_env.from_string(template)


SAMPLE_CONTEXT = date_context(date(2000, 1, 31))
DATE_MACROS = frozenset(SAMPLE_CONTEXT) - {"params"}
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_PLACEHOLDER = re.compile(r":p\d+")
_GLUED = re.compile(r"[\w.\"]:p\d+|:p\d+[\w\"]")


@lru_cache(maxsize=COMPILED_TEMPLATES)  # asked for every asset built from the spec, often twice
def is_dated(template: str | None) -> bool:
    """True when a template uses a date macro, which makes its asset daily-partitioned."""
    if not template:
        return False
    try:
        names = meta.find_undeclared_variables(_text_env.parse(template))
    except TemplateSyntaxError:
        return False  # reported by check_template
    return bool(names & DATE_MACROS)


def check_template(template: str, params: Mapping[str, Any], sql: bool = False,
                   extra: Mapping[str, Any] | None = None) -> str | None:
    """Return why a template cannot be used, or None: used by the spec validator.

    `extra` holds sample values of the variables a particular template gets besides dates and
    params (a mail body sees `file_name`, `rows`, `md5`...).
    """
    try:
        context = {**SAMPLE_CONTEXT, **(extra or {}), "params": dict(params)}
        rendered = render_sql(template, context).text
    except Exception as error:  # any Jinja failure is a spec error to report, not a crash
        return f"template does not render: {type(error).__name__}: {error}"
    if sql and any(_PLACEHOLDER.search(s) for s in _SQL_STRING.findall(rendered)):
        return ("{{ … }} inside quotes: write it without quotes, it becomes a bound value "
                "(e.g. `where day = {{ ds }}`)")
    if sql and _GLUED.search(rendered):
        return ("{{ … }} glued to a name: in SQL a template value is a bound value, so it "
                "cannot build table or column names")
    return None


def logical_date(partition_key: str | None, scheduled: str | None, now: datetime) -> date:
    """The day a run is about: its partition, else its schedule tick, else today."""
    if partition_key:
        return date.fromisoformat(partition_key[:10])
    if scheduled:
        return datetime.fromisoformat(scheduled).date()
    return now.date()
