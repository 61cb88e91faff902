"""Sandboxed Jinja templating for paths, file names and SQL.

Dates come from the partition (or the schedule's tick), never from the wall clock of the
worker, so a backfill of a past day renders that day's names. In SQL every `{{ expr }}` becomes
a bound parameter: values never get pasted into the statement text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from jinja2 import StrictUndefined, Undefined
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


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """Render a path or file name."""
    return _text_env.from_string(template).render(**context)


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
    collector = _BindCollector(placeholder)
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, finalize=collector
    )
    text = env.from_string(template).render(**context)
    return BoundSql(text=text, params=collector.values)


SAMPLE_CONTEXT = date_context(date(2000, 1, 31))


def check_template(template: str, params: Mapping[str, Any]) -> str | None:
    """Return why a template cannot render, or None: used by the spec validator."""
    try:
        render_sql(template, {**SAMPLE_CONTEXT, "params": dict(params)})
    except Exception as error:
        return f"template does not render: {type(error).__name__}: {error}"
    return None


def logical_date(partition_key: str | None, scheduled: str | None, now: datetime) -> date:
    """The day a run is about: its partition, else its schedule tick, else today."""
    if partition_key:
        return date.fromisoformat(partition_key[:10])
    if scheduled:
        return datetime.fromisoformat(scheduled).date()
    return now.date()
