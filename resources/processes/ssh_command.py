"""A command or shell script run on a remote host over SSH (paramiko), host key checked.

The script goes to the remote shell on standard input (`bash -s`, or `sh -s` where there is
no bash), wrapped in `{ … }` so that the shell reads all of it before running any of it: a
command in it that reads standard input (`cat`, `ssh`, `read`) then gets end-of-file instead of
swallowing the rest of the script, and a syntax error runs nothing. Environment variables are
`export`ed at the top of that text, quoted, because many sshd refuse SetEnv/AcceptEnv; they
never appear on a command line (`ps`) or in a log. Output (stdout and stderr combined, in the
order it arrives) is passed line by line to `log` while the command runs, the secrets among the
variables masked (resources/processes/masking.py).

A run given a timeout runs under the remote `timeout` command when the host has one that takes
`-k` (GNU coreutils, BusyBox), which ends the command's whole process group there; locally the
channel is closed at the deadline either way.
"""

import re
import shlex
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import paramiko
from pydantic import Field

from resources.connections.sftp import open_ssh_client
from resources.connections.ssh_connection import SshConnection
from resources.processes.masking import MaskedLines, Masker, secrets_of

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_READ_BYTES = 65536
_POLL_SECONDS = 0.2
_KILL_AFTER_SECONDS = 5  # remote `timeout -k`: SIGKILL this long after SIGTERM
_TIMEOUT_EXIT_CODES = (124, 137)  # GNU/BusyBox `timeout`: TERM worked / had to KILL


class SshCommandError(Exception):
    """The command could not be run or finished: connection, authentication, host key,
    channel, timeout. Names host:port and what failed, never a password or an env value.

    `permanent` is set for refusals no retry can fix (host key, login, a too-short secret)."""

    permanent: bool = False


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned: its exit status and last output lines, secrets masked."""

    exit_code: int
    tail: str  # the last 20 lines of stdout and stderr combined, secrets masked


def remote_script(script: str, env: Mapping[str, str] | None) -> str:
    """The text sent to the remote shell: the exports, then the script as one `{ … }` group."""
    lines = []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment variable name {name!r} is not a shell name "
                             "(letters, digits and _, not starting with a digit)")
        text = "" if value is None else str(value)  # a YAML number or boolean is fine
        lines.append(f"export {name}={shlex.quote(text)}")
    body = script if script.endswith("\n") else script + "\n"
    # `:` first: a script that is empty or only comments is still a valid group (exit 0).
    return "\n".join(lines) + ("\n" if lines else "") + "{ :\n" + body + "}\n"


def remote_command(timeout_seconds: float | None) -> str:
    """What sshd runs (through the user's login shell): bash (else sh) reading stdin, under
    `timeout` when there is one and a timeout is wanted."""
    pick = "s=sh; command -v bash >/dev/null 2>&1 && s=bash; "
    if timeout_seconds is None:
        return pick + 'exec "$s" -s'
    seconds = max(1, int(timeout_seconds + 0.999))
    return (pick + "if timeout -k 1 5 true >/dev/null 2>&1; then "
            f'exec timeout -k {_KILL_AFTER_SECONDS} {seconds} "$s" -s; else exec "$s" -s; fi')


class SshCommandResource(SshConnection):
    """A host Stagecoach runs commands on over SSH; its host key is always checked."""

    timeout_seconds: float = Field(default=30, description="For connecting and logging in; the "
                                   "command's own limit is `run(timeout_seconds=...)`.")

    def _where(self) -> str:
        return f"ssh {self.username}@{self.host}:{self.port}"

    def run(self, script: str, log: Callable[[str], None], env: Mapping[str, str] | None = None,
            timeout_seconds: float | None = None, secret_names: Collection[str] = ()
            ) -> CommandResult:
        """Run `script` (shell text) remotely; each output line goes to `log` as it arrives,
        the entries of `env` named in `secret_names` masked.

        A non-zero exit is returned (the caller decides); a failure to connect or run, or a run
        past `timeout_seconds` (None: no limit), raises SshCommandError.
        """
        try:
            text = remote_script(script, env).encode()
            lines = MaskedLines(log, Masker(secrets_of(env, secret_names)))
        except ValueError as bad:
            refused = SshCommandError(f"{self._where()} run: {bad}")
            refused.permanent = True
            raise refused from None
        client = open_ssh_client(self, "run", self._where(), SshCommandError)
        try:
            try:
                transport = client.get_transport()
                assert transport is not None  # open_ssh_client returns a connected client
                channel = transport.open_session(timeout=self.timeout_seconds)
                channel.set_combine_stderr(True)
                channel.exec_command(remote_command(timeout_seconds))
                started = time.monotonic()
                try:
                    channel.sendall(text)
                    channel.shutdown_write()
                except OSError:
                    # The remote side ended before taking the whole script (a nologin shell,
                    # an early exit): what it printed and its exit status still follow.
                    if not channel.closed:
                        raise
                exit_code = self._stream(channel, lines, started, timeout_seconds)
            except (paramiko.SSHException, OSError, EOFError) as failed:
                raise SshCommandError(f"{self._where()} run: the command could not be run or "
                                      f"followed to its end: {type(failed).__name__}: {failed}"
                                      ) from None
        finally:
            client.close()
        return CommandResult(exit_code, lines.text())

    def _stream(self, channel: paramiko.Channel, lines: MaskedLines, started: float,
                timeout_seconds: float | None) -> int:
        """Pass output on until the command ends; the exit code (raises past the deadline)."""
        deadline = None if timeout_seconds is None else started + timeout_seconds
        channel.settimeout(_POLL_SECONDS)
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                self._stop(channel, lines, timeout_seconds)
            try:
                data = channel.recv(_READ_BYTES)
            except TimeoutError:  # socket.timeout (an alias since Python 3.10): nothing yet
                continue
            if not data:
                break
            lines.feed(data)
        lines.end()
        while not channel.status_event.wait(_POLL_SECONDS):  # also set when the channel closes
            if deadline is not None and time.monotonic() >= deadline:
                self._stop(channel, lines, timeout_seconds)
        exit_code = channel.recv_exit_status()
        if (exit_code in _TIMEOUT_EXIT_CODES and timeout_seconds is not None
                and time.monotonic() - started >= timeout_seconds - 1):
            self._stop(channel, lines, timeout_seconds)  # the remote `timeout` ended it
        if exit_code == -1:
            raise SshCommandError(f"{self._where()} run: the server reported no exit status "
                                  "(the command was killed by a signal, or sshd ended the "
                                  f"session); its last lines:\n{lines.text()}")
        return exit_code

    def _stop(self, channel: paramiko.Channel, lines: MaskedLines, timeout_seconds: float | None
              ) -> None:
        channel.close()
        lines.end()  # what the masker still held, masked
        raise SshCommandError(
            f"{self._where()} run: the command ran past its timeout of {timeout_seconds:g} s and "
            "was stopped (the SSH channel was closed; the remote `timeout` ends its processes "
            "where the host has one); raise the step's timeout if it needs longer. Its last "
            f"lines:\n{lines.text()}")

