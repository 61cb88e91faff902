"""Reference checks of `alerts:`: the jobs a reporter follows, its templates, and the
addresses and numbers it sends to."""

import re
from typing import Any

from assets import spec
from orchestration.checks.common import Context
from orchestration.spec_problems import Path_, Problem
from resources.channels.alert_templates import check_overrides

MAIL_ADDRESS = r"[^@\s]+@[^@\s]+\.[^@\s]+"
E164 = r"\+[1-9]\d{6,14}"


def check_alerts(ctx: Context) -> list[Problem]:
    """Alert reporters: known jobs, connections of the right kind, overrides that render."""
    problems: list[Problem] = []
    jobs = ctx.jobs
    for name, alert in ctx.sections["alerts"].items():
        path = ("alerts", name)
        problems += _jobs_and_templates(path, alert, jobs)
        if isinstance(alert, spec.MailAlert):
            problems += _mail(ctx, path, alert)
        if isinstance(alert, spec.TwilioAlert):
            problems += _twilio(path, alert)
    return problems


def _jobs_and_templates(path: Path_, alert: Any, jobs: set[str]) -> list[Problem]:
    problems = [Problem((*path, "jobs", i), f"unknown job {job!r} (known: "
                                           f"{', '.join(sorted(jobs))})")
                for i, job in enumerate(alert.jobs or []) if job not in jobs]
    for event, template in alert.templates.items():
        where = (*path, "templates", event)
        if event not in alert.events:
            problems.append(Problem(where, f"this reporter does not send {event!r} (send_on: "
                                           f"{alert.send_on})"))
        try:
            check_overrides(event, template.model_dump(exclude_none=True))
        except ValueError as bad:
            problems.append(Problem(where, str(bad)))
    return problems


def _mail(ctx: Context, path: Path_, alert: spec.MailAlert) -> list[Problem]:
    problems = ctx.unknown("connections", alert.connection, (*path, "connection"),
                           "connection")
    if not problems and ctx.kind(alert.connection) not in ("smtp", None):
        problems.append(Problem((*path, "connection"), f"a mail reporter needs an smtp "
                                                       f"connection, not "
                                                       f"{ctx.kind(alert.connection)}"))
    if not alert.to and not alert.sms_to:
        problems.append(Problem(path, "a mail reporter needs `to:` or `sms_to:` (whom to "
                                      "tell)"))
    for key in ("to", "sms_to"):
        problems += [Problem((*path, key, i), f"{address!r} is not a mail address")
                     for i, address in enumerate(getattr(alert, key))
                     if not re.fullmatch(MAIL_ADDRESS, address)]
    return problems


def _twilio(path: Path_, alert: spec.TwilioAlert) -> list[Problem]:
    return [Problem((*path, key), f"{number!r} is not an E.164 number (+ and the country "
                                  "code, e.g. +15555550100)")
            for key, numbers in (("from", [alert.from_]), ("to", alert.to))
            for number in numbers if not re.fullmatch(E164, number)]
