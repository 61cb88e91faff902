"""The title and text of every alert, from default templates a workflow spec may override.

Templates are Jinja in a sandbox with strict undefined variables, so a typo in an override
fails when the spec is loaded (through `check_overrides`), not at 3 a.m. when the alert fires.
Every template sees the same variables: workflow, job, run_id, status, duration (human, e.g.
"1h 32m"), failed_step, error (its first 5 lines), run_url, details and event; the ones an
event does not have are None (details: an empty mapping).
"""

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

EVENTS = ("start", "success", "failure", "runtime_exceeded", "missing_files", "alarm",
          "sensor_error")
PARTS = ("title", "text")
VARIABLES = ("event", "workflow", "job", "run_id", "status", "duration", "failed_step", "error",
             "run_url", "details")
ERROR_LINES = 5
TITLE_MAX_CHARS = 200

_NAME = "{{ job or workflow }}"
_JOB = "Workflow {{ workflow }}: {{ job or 'the job' }}"
# trim_blocks is on (a newline right after a {% tag %} is dropped), so that overrides written as
# YAML block text read naturally; the defaults are written the same way.
DEFAULT_TEMPLATES: dict[str, dict[str, str]] = {
    "start": {
        "title": f"{_NAME} started",
        "text": f"{_JOB} started{{% if run_id %}} (run {{{{ run_id }}}}){{% endif %}}.",
    },
    "success": {
        "title": f"{_NAME} succeeded",
        "text": f"{_JOB} succeeded{{% if duration %}} in {{{{ duration }}}}{{% endif %}}"
                "{% if details.get('note') %} ({{ details.note }}){% endif %}.",
    },
    "failure": {
        "title": f"{_NAME} failed",
        "text": f"{_JOB} failed"
                "{% if failed_step %} at step {{ failed_step }}{% endif %}"
                "{% if duration %} after {{ duration }}{% endif %}"
                "{% if details.get('note') %} ({{ details.note }}){% endif %}.\n"
                "{% if error %}\n\n{{ error }}\n{% endif %}",
    },
    "runtime_exceeded": {
        "title": f"{_NAME} is running long",
        "text": f"{_JOB} has been running for {{{{ duration or 'a while' }}}}"
                "{% if details.get('limit') %}, past its limit of {{ details.limit }}{% endif %}.",
    },
    "missing_files": {
        "title": "{{ workflow }}: expected files are missing",
        "text": "{% set files = details.get('files') or [] %}\n"
                "Workflow {{ workflow }}: "
                "{% if files %}{{ files | length }} expected "
                "file{{ '' if files | length == 1 else 's' }} did not arrive"
                "{% else %}expected files did not arrive{% endif %}"
                "{% if details.get('location') %} in {{ details.location }}{% endif %}"
                "{% if details.get('deadline') %} by {{ details.deadline }}{% endif %}.\n"
                "{% for name in files %}\n- {{ name }}\n{% endfor %}",
    },
    "alarm": {
        "title": "{{ workflow }}: alarm{% if details.get('alarm') %} {{ details.alarm }}"
                 "{% else %} raised{% endif %}",
        "text": "Workflow {{ workflow }}: alarm"
                "{% if details.get('alarm') %} {{ details.alarm }}{% endif %} raised"
                "{% if details.get('value') is not none %}: value {{ details.value }}"
                "{% if details.get('threshold') is not none %} (threshold "
                "{{ details.threshold }}){% endif %}{% endif %}.\n"
                "{% if details.get('reason') %}\n{{ details.reason }}\n{% endif %}",
    },
    "sensor_error": {
        "title": "{{ workflow }}: {{ details.get('kind') or 'sensor' }}"
                 "{% if details.get('sensor') %} {{ details.sensor }}{% endif %} failed",
        "text": "Workflow {{ workflow }}: the {{ details.get('kind') or 'sensor' }}"
                "{% if details.get('sensor') %} {{ details.sensor }}{% endif %} failed and "
                "will try again at its next tick.\n"
                "{% if error %}\n\n{{ error }}\n{% endif %}",
    },
}

# What `check_overrides` renders an override with: every variable set, details as each event's
# sensor fills them in.
SAMPLE_VALUES: dict[str, Any] = {
    "workflow": "acme_retail", "job": "acme_retail_nightly_job",
    "run_id": "8f14e45f-ceea-467f-a0e6-5f2b3c1d9e21", "status": "FAILURE",
    "duration_seconds": 5520, "failed_step": "deliver_orders",
    "error": "TransferError: sftp 10.0.0.5:22 upload orders.csv: connection reset",
    "run_url": "http://dagster.example/runs/8f14e45f-ceea-467f-a0e6-5f2b3c1d9e21",
}
SAMPLE_DETAILS: dict[str, dict[str, Any]] = {
    "runtime_exceeded": {"limit": "1h 30m"},
    "missing_files": {"files": ["orders_20261102.csv", "stores_20261102.csv"],
                      "location": "sftp inbound/acme", "deadline": "07:00"},
    "alarm": {"alarm": "row_count_drop", "value": 12, "threshold": 1000,
              "reason": "fewer rows than usual"},
    "sensor_error": {"sensor": "acme_retail_orders_sensor"},
}

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     trim_blocks=True, lstrip_blocks=True)


def human_duration(seconds: float | None) -> str | None:
    """'45s', '12m 5s', '1h 32m', '2d 3h': what a person reads in an alert."""
    if seconds is None:
        return None
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def first_lines(text: str | None, count: int = ERROR_LINES) -> str | None:
    """The first `count` non-blank lines, with '...' when some were left off."""
    if not text:
        return None
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:count] + (["..."] if len(lines) > count else []))


def alert_values(event: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every template variable set: the missing ones None, duration made human (from
    `duration` in seconds or `duration_seconds`), error cut to its first lines."""
    context: dict[str, Any] = dict.fromkeys(VARIABLES)
    context.update(values)
    context["event"] = event
    context["details"] = dict(values.get("details") or {})
    duration = values.get("duration")
    if duration is None:
        duration = values.get("duration_seconds")
    context["duration"] = (human_duration(duration) if isinstance(duration, int | float)
                           else duration)
    context["error"] = first_lines(values.get("error"))
    return context


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    return _env.from_string(source)


def _problem(error: Exception) -> str:
    if isinstance(error, TemplateSyntaxError):
        return f"syntax error on line {error.lineno}: {error.message}"
    if isinstance(error, SecurityError):
        return f"not allowed in an alert template: {error}"
    if isinstance(error, UndefinedError):
        return f"{error.message}; the variables are {', '.join(VARIABLES)}"
    return f"does not render: {type(error).__name__}: {error}"


def _render(event: str, part: str, source: str, context: Mapping[str, Any]) -> str:
    try:
        return _compile(source).render(**context)
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError,
            AttributeError) as failed:
        raise ValueError(f"alert template {part!r} for event {event!r}: {_problem(failed)}"
                         ) from None


def render_alert(event: str, values: Mapping[str, Any],
                 overrides: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(title, text) for one alert; `overrides` may replace the 'title' and/or 'text' template
    of this event. A bad override raises ValueError naming the event, the part and the problem.
    The title is one line of at most TITLE_MAX_CHARS characters."""
    if event not in DEFAULT_TEMPLATES:
        raise ValueError(f"unknown alert event {event!r}; the events are {', '.join(EVENTS)}")
    unknown = sorted(set(overrides or {}) - set(PARTS))
    if unknown:
        raise ValueError(f"alert templates for event {event!r}: unknown part "
                         f"{', '.join(map(repr, unknown))}; a template overrides 'title' or "
                         "'text'")
    sources = {**DEFAULT_TEMPLATES[event], **(overrides or {})}
    for part, source in sources.items():
        if not isinstance(source, str):
            raise ValueError(f"alert template {part!r} for event {event!r} must be text, not "
                             f"{type(source).__name__}")
    context = alert_values(event, values)
    title = " ".join(_render(event, "title", sources["title"], context).split())
    if not title:
        raise ValueError(f"alert template 'title' for event {event!r} renders empty text")
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 3].rstrip() + "..."
    text = _render(event, "text", sources["text"], context).strip()
    return title, text


def check_overrides(event: str, overrides: Mapping[str, str] | None) -> None:
    """Render an event's overrides with sample values, raising the ValueError render_alert
    would: for the spec loader, so a broken template fails at load time."""
    render_alert(event, {**SAMPLE_VALUES, "details": SAMPLE_DETAILS.get(event, {})}, overrides)
