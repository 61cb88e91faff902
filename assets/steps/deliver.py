"""The automation `deliver` step: the chain's current files (a report's PDF, a script's output
files) sent through the activations' delivery code, so they are sealed, archived, recorded in
the file history and re-sendable exactly like an activation's files.

Its ledger rows name the step's op, `<automation>__<step>`: `history --activation`, `download`
and the re-send job find them by that name. The chain's files are handed on unchanged.
"""

import shutil
from pathlib import Path
from typing import Any

import dagster as dg

from assets import spec
from assets.delivery import (
    Outgoing,
    checked_name,
    delivery_resources,
    destinations_for,
    files_metadata,
    outcome_metadata,
    send_files,
)
from assets.names import STAGING_KEY
from assets.steps.common import final, template_values
from assets.templating import render_text


def deliver_resources(workflow: spec.Workflow, step: spec.DeliverStep,
                      profiles: frozenset[str]) -> set[str]:
    """What a deliver step needs: the staging area (its outbox) and what sending needs."""
    return {STAGING_KEY, *delivery_resources(workflow, step)}


def run_deliver(context: dg.OpExecutionContext, workflow: spec.Workflow,
                step: spec.DeliverStep, params: dict[str, Any], files: list[str]
                ) -> dict[str, Any]:
    """Send the chain's current files as the step says, through the activations' send path."""
    wf, label = workflow.workflow.name, context.op.name
    what = f"step {label}"
    if not files:
        context.log.warning(f"{what}: the steps before it handed on no file; nothing to send")
        return {"sent_files": 0}
    values = template_values(context, params, wf)
    destinations = destinations_for(context, workflow, step, values, what)
    outbox = getattr(context.resources, STAGING_KEY).folder(wf, "outbox", label, context.run_id)
    partition = context.run.tags.get("dagster/partition")
    try:
        sent = send_files(context, workflow, step, label, what, values, partition,
                          _outgoing(what, step, files, values), destinations, outbox)
    finally:
        shutil.rmtree(outbox, ignore_errors=True)  # the archive keeps what was sent
    if len(sent) == 1:
        [one] = sent
        metadata = outcome_metadata(one.delivery, one.entries, one.sealed.steps)
    else:
        metadata = files_metadata(sent)
    context.add_output_metadata(metadata)
    return {"sent_files": len(sent),
            "ledger_ids": ", ".join(e.id for s in sent for e in s.entries)}


def _outgoing(what: str, step: spec.DeliverStep, files: list[str], values: dict[str, Any]
              ) -> list[Outgoing]:
    """Each chain file with the name it is sent as; an empty (0-byte) file counts as no rows,
    so `empty:` decides whether it goes."""
    outgoing = []
    for file in map(Path, files):
        if not file.is_file():
            raise final(f"{what}: {file} is not there any more (a step before it reported it); "
                        "nothing was sent")
        name = checked_name(what, "file.name", render_text(
            step.file.name, {**values, "source_name": file.name}) if step.file.name
            else file.name)
        outgoing.append(Outgoing(file, name, 0 if file.stat().st_size == 0 else None))
    names = [item.name for item in outgoing]
    if len(set(names)) != len(names):
        raise final(f"{what}: the chain holds {len(names)} files but they would be sent as "
                    f"{sorted(set(names))}: put {{{{ source_name }}}} in `file.name`, or leave "
                    "it blank to keep their names")
    return outgoing
