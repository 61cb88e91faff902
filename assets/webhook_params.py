"""The params a webhook caller may pass: checked against the trigger's declared types when the
call arrives, and again when the run renders its templates (from the run's `stagecoach/params`
tag), so a tag forged elsewhere (the launchpad, a re-execution edited by hand) cannot bring in
a name or a type the trigger does not declare."""

import json
import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from assets import spec
from assets.names import DATED_IN_TAG, PARAMS_TAG, TRIGGER_TAG, WEBHOOK_TAG, job_name
from assets.run_day import job_dated

MAX_TEXT = 1000
MAX_NUMBER_CHARS = 30
# Control characters (tab aside) and lone surrogates: they reach paths, SQL and file names.
UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


class ParamError(ValueError):
    """A param the trigger does not declare, or of the wrong type; the message names it."""


def check_params(declared: Mapping[str, str], given: Any) -> dict[str, Any]:
    """The params as templates see them (a `date` becomes a date), or ParamError."""
    if not isinstance(given, dict):
        raise ParamError("params must be a JSON object of name → value")
    unknown = sorted(set(given) - set(declared))
    if unknown:
        allowed = ", ".join(f"{n} ({t})" for n, t in sorted(declared.items())) or "none"
        raise ParamError(f"param {unknown[0]!r} is not declared by this trigger; allowed: "
                         f"{allowed}")
    return {name: _typed(name, declared[name], value) for name, value in given.items()}


def _plain(name: str, value: Any) -> Any:
    """Text without control characters (a tab is fine) or lone surrogates, else ParamError."""
    if isinstance(value, str) and (found := UNSAFE_TEXT.search(value)):
        raise ParamError(f"param {name!r} holds the character {found.group()!r} at position "
                         f"{found.start()}; send plain text (no control characters except tab)")
    return value


def _typed(name: str, kind: str, value: Any) -> Any:
    if kind == "str":
        _plain(name, value)
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value)),
          "str": isinstance(value, str) and len(value) <= MAX_TEXT,
          "bool": isinstance(value, bool),
          "date": isinstance(value, str) and _is_date(value)}[kind]
    if not ok or (kind in ("int", "float") and len(str(value)) > MAX_NUMBER_CHARS):
        hint = {"date": "a date as YYYY-MM-DD", "str": f"text of at most {MAX_TEXT} characters",
                "int": "a whole number", "float": "a number", "bool": "true or false"}[kind]
        raise ParamError(f"param {name!r} must be {hint} ({kind})")
    return date.fromisoformat(str(value)) if kind == "date" else value


def _is_date(value: str) -> bool:
    try:
        return len(value) == 10 and date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def declared_params(workflow: spec.Workflow, trigger_tag: str | None) -> dict[str, str] | None:
    """The params the webhook trigger named by a run's trigger tag declares; None when the run
    was not launched by one of this workflow's webhook triggers."""
    kind, _, name = (trigger_tag or "").partition(" ")
    trigger = workflow.triggers.get(name) if kind == "webhook" else None
    if trigger is None or trigger.when.kind != "webhook":
        return None
    return dict(trigger.when.params)


def webhook_params(workflow: spec.Workflow, tags: Mapping[str, str]) -> dict[str, Any]:
    """A webhook launch's params from the run's tag, validated again ({} without the tag)."""
    raw = tags.get(PARAMS_TAG)
    if raw is None:
        return {}
    declared = declared_params(workflow, tags.get(TRIGGER_TAG))
    if declared is None:
        raise ParamError(f"the run has a {PARAMS_TAG} tag but was not launched by a webhook "
                         f"trigger of workflow {workflow.workflow.name!r}; remove the tag")
    try:
        given = json.loads(raw)
    except (ValueError, RecursionError):
        raise ParamError(f"the run's {PARAMS_TAG} tag is not JSON") from None
    return check_params(declared, given)


def run_params(workflow: spec.Workflow, tags: Mapping[str, str]) -> dict[str, Any]:
    """The workflow's params with a webhook launch's params over them."""
    return {**workflow.workflow.params, **webhook_params(workflow, tags)}


def webhook_job_args(workflow: spec.Workflow, group: str, description: str,
                     tags: Mapping[str, str]) -> dict[str, Any]:
    """A job's `description`, `tags` and `run_tags` showing the webhook triggers that launch it.

    A webhook trigger has no sensor, so the UI would show it nowhere: its route, the variable
    holding its token (the name only) and the params a caller may pass go into the job's
    description and a `stagecoach/webhook` tag on the job. The runs keep the job's other tags
    only (`run_tags`). A dated job also carries its workflow's time zone (`DATED_IN_TAG`), which
    its runs inherit, so a run launched without a partition can be given the rule's day."""
    if job_dated(workflow, group):
        tags = {**tags, DATED_IN_TAG: workflow.workflow.timezone}
    hooks = {name: trigger.when for name, trigger in workflow.triggers.items()
             if trigger.job == group and isinstance(trigger.when, spec.WebhookTrigger)}
    if not hooks:
        return {"description": description, "tags": dict(tags)}
    job = job_name(workflow.workflow.name, group)
    lines, short = [], []
    for name, when in hooks.items():
        params = ", ".join(f"`{p}` ({kind})" for p, kind in when.params.items()) or "none"
        token = when.token.env if isinstance(when.token, spec.EnvRef) else "?"
        lines.append(f"- Webhook trigger `{name}`: `POST /launch/{job}` with "
                     f"`Authorization: Bearer ${token}` (the token is the value of `{token}` "
                     f"where the webhook service runs); params: {params}; X-Request-Id "
                     f"{'required' if when.require_request_id else 'optional'}.")
        short.append(f"{name}: POST /launch/{job}, token ${token}, params "
                     f"{','.join(when.params) or 'none'}")
    return {"description": f"{description}\n\nLaunched over HTTP by:\n" + "\n".join(lines),
            "tags": {**tags, WEBHOOK_TAG: "; ".join(short)}, "run_tags": dict(tags)}
