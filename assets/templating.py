"""Sandboxed Jinja templating for paths, file names and SQL.

Dates come from the partition (or the schedule's tick), never from the wall clock of the
worker, so a backfill of a past day renders that day's names. In SQL every `{{ expr }}` becomes
a bound parameter: values never get pasted into the statement text.
"""

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


# Most templates are text and `{{ name }}` or `{{ params.key }}` only: a code location of 1,000
# couriers and 1,000 activations has ~2,000 of them, and compiling each (~0.4 ms of CPU) was
# half of loading the specs in a fresh process. Those render here, as Jinja renders them (its
# newline handling included); anything else, or a name the context lacks, goes to Jinja.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE_EXPRESSION = re.compile(rf"\{{\{{ *({_NAME}(?:\.{_NAME})*) *\}}\}}")
_JINJA_WORDS = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not",
                          "in", "is", "if", "else", "elif", "recursive"})
_NEWLINES = re.compile(r"\r\n|\r|\n")
Part = str | tuple[str, ...]  # text, or the path of a `{{ a.b }}`


@lru_cache(maxsize=COMPILED_TEMPLATES)
def _simple(template: str) -> tuple[Part, ...] | None:
    """The parts of a template made of text and `{{ a }}` / `{{ a.b }}` only, else None."""
    if "{%" in template or "{#" in template:
        return None
    lines = _NEWLINES.split(template)  # Jinja: newlines become \n, one trailing one goes
    if lines[-1] == "":
        del lines[-1]
    source = "\n".join(lines)
    parts: list[Part] = []
    end = 0
    for match in _SIMPLE_EXPRESSION.finditer(source):
        path = tuple(match.group(1).split("."))
        if path[0] in _JINJA_WORDS:
            return None
        parts += [source[end:match.start()], path]
        end = match.end()
    parts.append(source[end:])
    if any(isinstance(part, str) and "{{" in part for part in parts):
        return None  # an expression of another shape
    return tuple(parts)


def _values(parts: tuple[Part, ...], context: Mapping[str, Any]) -> list[Any] | None:
    """What each `{{ a.b }}` names in `context` (Jinja's lookup: a key of a plain dict that is
    not one of its methods), or None when Jinja must judge (unknown names raise there)."""
    values = []
    for part in parts:
        if isinstance(part, str):
            continue
        if part[0] not in context:
            return None
        value = context[part[0]]
        for key in part[1:]:
            if type(value) is not dict or key not in value or hasattr(value, key):
                return None
            value = value[key]
        values.append(value)
    return values


def _join(parts: tuple[Part, ...], values: list[Any], show: Callable[[Any], str]) -> str:
    shown = iter(values)
    return "".join(part if isinstance(part, str) else show(next(shown)) for part in parts)


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """Render a path or file name."""
    parts = _simple(template)
    values = _values(parts, context) if parts is not None else None
    if parts is not None and values is not None:
        return _join(parts, values, str)
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
    parts = _simple(template)
    values = _values(parts, context) if parts is not None else None
    if parts is not None and values is not None:
        collector = _BindCollector(placeholder)
        return BoundSql(text=_join(parts, values, collector), params=collector.values)
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


DATE_MACROS = frozenset(date_context(date(2000, 1, 31))) - {"params"}
# Known to every template besides the dates; `run_id` only inside a run (RUN_ONLY).
SAMPLE_CONTEXT = {**date_context(date(2000, 1, 31)),
                  "run_id": "00000000-0000-0000-0000-000000000000", "workflow": "w"}
RUN_ONLY = "run_id"
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_PLACEHOLDER = re.compile(r":p\d+")
_GLUED = re.compile(r"[\w.\"]:p\d+|:p\d+(?!\d)[\w\"]")  # :p10 is not :p1 glued to 0


@lru_cache(maxsize=COMPILED_TEMPLATES)  # asked for every asset built from the spec, often twice
def is_dated(template: str | None) -> bool:
    """True when a template uses a date macro, which makes its asset daily-partitioned."""
    if not template:
        return False
    if (parts := _simple(template)) is not None:
        return any(isinstance(part, tuple) and part[0] in DATE_MACROS for part in parts)
    try:
        names = meta.find_undeclared_variables(_text_env.parse(template))
    except TemplateSyntaxError:
        return False  # reported by check_template
    return bool(names & DATE_MACROS)


@lru_cache(maxsize=COMPILED_TEMPLATES)
def uses_variable(template: str | None, name: str) -> bool:
    """True when a template reads the variable `name` (False if it does not parse)."""
    if not template:
        return False
    if (parts := _simple(template)) is not None:
        return any(isinstance(part, tuple) and part[0] == name for part in parts)
    try:
        return name in meta.find_undeclared_variables(_text_env.parse(template))
    except TemplateSyntaxError:
        return False  # reported by check_template


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


class _Shown:
    """A variable known only at run time, shown as it is written (`{{ ds }}`); anything done
    to it (`ds[:4]`, a filter) makes the display fall back to the template."""

    def __init__(self, name: str) -> None:
        self.shown = f"{{{{ {name} }}}}"

    def __str__(self) -> str:
        raise TypeError("a run-time variable")

    def __getitem__(self, _key: Any) -> Any:
        raise TypeError("a run-time variable")


def resolved_sql(template: str, params: Mapping[str, Any]) -> str:
    """SQL as the UI shows it: the workflow's params written in as the values they are bound
    to (`>= 400`), run-time variables (dates, run id) left as `{{ ds }}`. Display only: a run
    binds every value as a parameter. The template itself when it does not render so."""
    context: dict[str, Any] = {name: _Shown(name) for name in SAMPLE_CONTEXT}
    try:
        bound = render_sql(template, {**context, "params": dict(params)}, "\x00{}\x00".format)
    except Exception:
        return template
    return re.sub("\x00(p\\d+)\x00", lambda m: _literal(bound.params[m.group(1)]), bound.text)


def _literal(value: Any) -> str:
    if isinstance(value, _Shown):
        return value.shown
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "null"
    return "'" + str(value).replace("'", "''") + "'"
