"""The `python` and `ssh` steps: a script run in its own process (as its own uid when set), a
command on a remote host; both get the run's values as variables, never pasted into text."""

from pathlib import Path
from typing import Any

import dagster as dg

from assets import spec
from assets.names import CONN_PREFIX, RUN_AS_TAG
from assets.steps.common import (
    EX_TEMPFAIL,
    env_values,
    final,
    run_variables,
    step_secrets,
    template_values,
)
from assets.templating import render_text
from resources.settings import script_uids


def run_python(context: dg.OpExecutionContext, workflow: spec.Workflow,
               step: spec.PythonStep,
               params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """A `python` step: the script in its own process, the chain's files first in argv."""
    from resources.processes.python_script import ScriptError, run_python_script

    values = {**template_values(context, params, workflow.workflow.name), "files": files}
    args = script_argv(files, [render_text(a, values) for a in step.args])
    env = run_variables(context, params, workflow.workflow.name)
    connections, connection_secrets = connection_variables(context, workflow, step.connections)
    env |= connections
    env |= env_values(step.env, context.op.name)
    try:
        outcome = run_python_script(
            context, Path(step.script), args, env, step.requirements,
            timeout_seconds=spec.seconds_of(step.timeout) if step.timeout else None,
            secret_names=connection_secrets | step_secrets(step.env),
            script_uids=script_uids_or_fail(context))
    except ScriptError as failed:
        if failed.exit_code == EX_TEMPFAIL:  # the script says a retry may work
            raise RuntimeError(f"step {context.op.name}: {failed}") from None
        raise final(f"step {context.op.name}: {failed}") from None
    result: dict[str, Any] = {"exit_code": outcome.exit_code}
    if outcome.output_files:
        result["files"] = list(outcome.output_files)
    return result


def script_uids_or_fail(context: dg.OpExecutionContext) -> str | None:
    """STAGECOACH_SCRIPT_UIDS, or the step's failure saying what to set instead."""
    try:
        return script_uids()
    except ValueError as wrong:
        raise final(f"step {context.op.name}: {wrong}") from None


def script_argv(files: list[str], args: list[str]) -> list[str]:
    """A Python step's argv[1:]: every file the previous step handed on, in order, then its
    own `args`, so `argv[1]` is always the input file (`args` never replace the files)."""
    return [*files, *args]


def connection_variables(context: dg.OpExecutionContext, workflow: spec.Workflow,
                         names: list[str]) -> tuple[dict[str, str], set[str]]:
    """STAGECOACH_CONN_<NAME>_<FIELD> for each named connection (the run-as profile's in its
    place, under the name the script knows), secrets read from their variables now; and the
    names of those holding a `Secret` field (to mask)."""
    profile = context.run.tags.get(RUN_AS_TAG)
    swaps = workflow.profiles[profile].connections if profile in workflow.profiles else {}
    variables, secret_names = {}, set()
    for name in names:
        used = swaps.get(name, name)
        connection = workflow.connections[used]
        fields = {f"connection {used}: {k}": getattr(connection, k)
                  for k in type(connection).model_fields
                  if k not in ("kind", "description") and getattr(connection, k) is not None}
        secret = spec.secret_fields(type(connection))
        for label, value in env_values(fields, context.op.name).items():
            field_name = label.rsplit(": ", 1)[1]
            variable = f"{CONN_PREFIX}{name.upper()}_{field_name.upper()}"
            variables[variable] = str(value).lower() if isinstance(value, bool) else str(value)
            if field_name in secret:
                secret_names.add(variable)
    return variables, secret_names


def run_ssh(context: dg.OpExecutionContext, workflow: spec.Workflow, step: spec.SshStep,
            params: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """An `ssh` step: the command on the remote host, values passed as variables."""
    from resources.processes.ssh_command import SshCommandError, SshCommandResource

    connection = workflow.connections[step.connection]
    settings = {k: getattr(connection, k) for k in (
        "host", "port", "username", "password", "private_key_path", "private_key_passphrase",
        "known_hosts", "host_key", "timeout_seconds") if getattr(connection, k, None) is not None}
    remote = SshCommandResource(**env_values(settings, context.op.name))
    # Values reach the remote shell as variables, never pasted into the command text.
    env = run_variables(context, params, workflow.workflow.name)
    env |= env_values(step.env, context.op.name)
    try:
        result = remote.run(step.command or "", context.log.info, env,
                            spec.seconds_of(step.timeout) if step.timeout else None,
                            secret_names=step_secrets(step.env))
    except SshCommandError as failed:
        if failed.permanent:  # a host key or login refusal: a retry cannot fix it
            raise final(f"step {context.op.name}: {failed}") from None
        raise RuntimeError(f"step {context.op.name}: {failed}") from None  # retryable
    if result.exit_code != 0:
        raise final(f"step {context.op.name}: the command exited with {result.exit_code}; "
                         f"its last lines:\n{result.tail}")
    return {"exit_code": 0}

