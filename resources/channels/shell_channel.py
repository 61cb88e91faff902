"""Alerts to a command of the operator's choosing: a pager script, a ticket CLI, a chat bridge.

The command runs once per alert, without a shell, with the alert as STAGECOACH_ALERT_*
environment variables and the whole message as JSON on standard input. It inherits the
worker's environment minus anything that looks secret (passwords, tokens, keys, the warehouse
URL), so a script cannot leak what it was never given; `pass_env` lets named variables through.
A command that fails or outlives its timeout is an AlertDeliveryError (a timeout kills its whole
process group, so nothing it started keeps running).
"""

import contextlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import dagster as dg
from pydantic import Field, field_validator

from resources.channels.alerting import AlertDeliveryError, AlertMessage
from resources.processes.process_group import stop_group

PREFIX = "STAGECOACH_ALERT_"
VALUE_MAX_CHARS = 8192
TAIL_BYTES = 2048
KILL_GRACE_SECONDS = 2.0
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)
_SECRET_NAMES = frozenset({"STAGECOACH_WAREHOUSE_URL"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def looks_secret(name: str) -> bool:
    """True for environment variable names a child process should not inherit."""
    return name.upper() in _SECRET_NAMES or bool(_SECRET_NAME.search(name))


def clean_value(value: object) -> str:
    """An environment value: '' for None, no NUL (the OS refuses it), at most
    VALUE_MAX_CHARS characters."""
    if value is None:
        return ""
    text = str(value).replace("\x00", "")
    return text if len(text) <= VALUE_MAX_CHARS else text[: VALUE_MAX_CHARS - 3] + "..."


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def alert_environment(message: AlertMessage) -> dict[str, str]:
    """The STAGECOACH_ALERT_* variables a command gets for one alert."""
    values = {"EVENT": message.event, "WORKFLOW": message.workflow, "JOB": message.job,
              "RUN_ID": message.run_id, "STATUS": message.status, "TITLE": message.title,
              "TEXT": message.text, "ERROR": message.error, "RUN_URL": message.run_url,
              "DURATION_SECONDS": _seconds(message.duration_seconds)}
    return {PREFIX + name: clean_value(value) for name, value in values.items()}


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - TAIL_BYTES))
    data = handle.read()
    text = data.decode("utf-8", errors="replace").strip()
    return ("..." + text.lstrip("\ufffd") if size > TAIL_BYTES else text) if text else ""


class ShellChannel(dg.ConfigurableResource):
    """An alert channel running a command (argv, no shell) once per alert."""

    command: list[str] = Field(description="Program and arguments, e.g. "
                                            "['/opt/ops/page.sh', '--team', 'data'].")
    timeout_seconds: float = Field(default=30, gt=0, description="Kill the command (and everything "
                                   "it started) after this long.")
    env: dict[str, str] = Field(
        default={}, description="Extra environment variables for the command; "
        "give secrets as dg.EnvVar.")
    pass_env: list[str] = Field(default=[], description="Secret-looking variables of the worker's "
                                "environment to pass on anyway (by exact name).")
    cwd: str | None = Field(default=None, description="Working directory; default the worker's.")

    @field_validator("command")
    @classmethod
    def _program_named(cls, command: list[str]) -> list[str]:
        if not command or not command[0].strip():
            raise ValueError("command must name a program (a list: program, then arguments)")
        if any("\x00" in part for part in command):
            raise ValueError("command arguments cannot contain NUL characters")
        return command

    @field_validator("env")
    @classmethod
    def _names_valid(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [name for name in env if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"env: {', '.join(map(repr, bad))} not valid variable names "
                             "(letters, digits and _, not starting with a digit)")
        return env

    def describe(self) -> str:
        # the program only: arguments may carry something private
        return f"shell command {Path(self.command[0]).name}"

    def child_environment(self, message: AlertMessage,
                          parent: Mapping[str, str] | None = None) -> dict[str, str]:
        """The worker's environment minus secret-looking names (unless in pass_env), then the
        extra `env`, then the alert's variables."""
        parent = os.environ if parent is None else parent
        allowed = set(self.pass_env)
        child = {k: v for k, v in parent.items() if k in allowed or not looks_secret(k)}
        child.update({k: clean_value(v) for k, v in self.env.items()})
        child.update(alert_environment(message))
        return child

    def _scrub(self, text: str) -> str:
        """Hide values the command was handed on purpose (extra env, passed secrets) if it
        echoed them to stderr."""
        secrets = [*self.env.values(), *(os.environ.get(n, "") for n in self.pass_env)]
        for value in sorted(secrets, key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def send_alert(self, message: AlertMessage) -> None:
        payload = json.dumps(message.as_dict(), default=str, ensure_ascii=False).encode()
        what = f"{self.describe()} for alert {message.title!r}"
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                process = subprocess.Popen(
                    list(self.command), stdin=subprocess.PIPE, stdout=out, stderr=err,
                    env=self.child_environment(message), cwd=self.cwd, start_new_session=True)
            except OSError as failed:
                where = f" in {self.cwd}" if self.cwd else ""
                raise AlertDeliveryError(f"{what}: cannot start {self.command[0]}{where}: "
                                         f"{failed.strerror or failed}") from None
            try:
                process.communicate(payload, timeout=self.timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise AlertDeliveryError(self._scrub(
                    f"{what}: did not finish within {self.timeout_seconds:g} s; its process "
                    f"group was killed{_output(out, err)}")) from None
            except BaseException:
                _kill_group(process)  # interrupted (e.g. the run was terminated): no orphans
                raise
            code = process.returncode
            if code != 0:
                how = (f"was killed by signal {-code}" if code < 0
                       else f"exited with code {code}")
                raise AlertDeliveryError(self._scrub(f"{what}: {how}{_output(out, err)}"))


def _output(out: IO[bytes], err: IO[bytes]) -> str:
    """'; stderr: <its last 2 KiB>' (or stdout's when stderr is empty), for an error."""
    stderr = _tail(err)
    if stderr:
        return f"; stderr: {stderr}"
    stdout = _tail(out)
    return f"; stdout: {stdout}" if stdout else "; no output"


def _kill_group(process: subprocess.Popen) -> None:
    """TERM the command's process group, KILL what is left after a short grace, reap it."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    stop_group(process, KILL_GRACE_SECONDS)
