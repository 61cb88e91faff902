"""An example `python` trigger (docs/spec-reference.md, `triggers`): a module on the code
location's Python path, named in a spec as `callable: "acme_triggers:should_run"`."""

from datetime import UTC, datetime, timedelta
from typing import Any


def should_run(context: Any) -> bool:
    """At most one run every six hours. `context` is sensors.triggers.TriggerContext: its
    `cursor` holds `runs`, `last_run_at` (ISO time or None) and `since`."""
    last = context.cursor.get("last_run_at")
    if last is None:
        return True
    return datetime.now(UTC) - datetime.fromisoformat(last) >= timedelta(hours=6)
