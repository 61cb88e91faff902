"""SshCommandResource against a real OpenSSH sshd on loopback (tests/conftest.py `sshd`).

The server runs on this machine, so what a remote command left running can be seen with psutil.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

import psutil
import pytest

from resources.processes.ssh_command import CommandResult, SshCommandError, SshCommandResource

pytestmark = pytest.mark.timeout(120)

SCRIPTS = Path(__file__).parents[1] / "fixtures" / "scripts"


def ssh_resource(sshd, **overrides) -> SshCommandResource:
    settings = {"host": sshd.host, "port": sshd.port, "username": sshd.username,
                "private_key_path": str(sshd.private_key_path),
                "known_hosts": str(sshd.known_hosts_path), "timeout_seconds": 10, **overrides}
    return SshCommandResource(**settings)


class Recorder:
    """A `log` callback keeping each line with the moment it arrived."""

    def __init__(self) -> None:
        self.timed: list[tuple[float, str]] = []

    def __call__(self, line: str) -> None:
        self.timed.append((time.monotonic(), line))

    @property
    def lines(self) -> list[str]:
        return [line for _, line in self.timed]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_output_is_streamed_in_order_while_the_command_runs(sshd):
    log = Recorder()
    script = ("echo first\nsleep 2\necho second\necho to-stderr >&2\nsleep 0.3\n"
              "printf 'no newline at the end'")
    result = ssh_resource(sshd).run(script, log)
    ended = time.monotonic()

    assert result.exit_code == 0
    assert log.lines == ["first", "second", "to-stderr", "no newline at the end"]
    first_seen = log.timed[0][0]
    assert ended - first_seen >= 1.8, "the first line reached `log` only when the command ended"
    assert log.timed[1][0] - first_seen >= 1.8  # each line when it was printed
    assert result.tail.splitlines() == log.lines


def test_a_non_zero_exit_is_returned_with_the_last_lines(sshd):
    log = Recorder()
    script = 'for i in $(seq 1 30); do echo "line $i"; done\necho "it broke" >&2\nexit 3\n'
    result = ssh_resource(sshd).run(script, log)

    assert isinstance(result, CommandResult)
    assert result.exit_code == 3
    assert len(log.lines) == 31
    tail = result.tail.splitlines()
    assert len(tail) == 20
    assert tail[0] == "line 12" and tail[-1] == "it broke"


@pytest.mark.security
def test_env_values_reach_the_script_quoted_and_are_never_logged(sshd):
    token = secrets.token_urlsafe(18)
    awkward = "it's \"quoted\" $HOME `id` ; echo injected"
    env = {"API_TOKEN": token, "LABEL": awkward, "STAGECOACH_PARAM_REGION": "eu-west-1",
           "BATCH": 500}  # a number from YAML
    script = ('printf %s "$API_TOKEN" | sha256sum\n'
              'printf %s "$LABEL" | sha256sum\n'
              'echo "region $STAGECOACH_PARAM_REGION batch $BATCH"\n'
              'echo "careless: $API_TOKEN"\n')
    log = Recorder()
    result = ssh_resource(sshd).run(script, log, env=env, secret_names=["API_TOKEN"])

    assert result.exit_code == 0
    assert log.lines[0].split()[0] == sha256(token)  # the exact value arrived
    assert log.lines[1].split()[0] == sha256(awkward)  # quoting kept it literal: no injection
    assert "injected" not in log.lines
    assert log.lines[2] == "region eu-west-1 batch 500"  # Stagecoach's own parameters are shown
    assert log.lines[3] == "careless: ***"  # a script printing a secret: masked
    everything = "\n".join(log.lines) + result.tail
    assert token not in everything and awkward not in everything


def test_a_multi_line_script_from_a_file(sshd):
    script = (SCRIPTS / "remote_report.sh").read_text()
    log = Recorder()
    result = ssh_resource(sshd).run(script, log, env={"REPORT_LABEL": "q4"})

    assert result.exit_code == 0, result.tail
    # `cat` in the script got end-of-file: the shell had read the whole script before running it.
    assert log.lines == ["region north: q4", "region south: q4", "words: 5",
                         "stdin after the script: []", "done"]


@pytest.mark.parametrize("script", ["", "# only a comment\n", "\n\n"])
def test_an_empty_script_runs_and_succeeds(sshd, script: str):
    log = Recorder()
    assert ssh_resource(sshd).run(script, log) == CommandResult(exit_code=0, tail="")
    assert log.lines == []


def test_a_syntax_error_runs_nothing(sshd):
    log = Recorder()
    result = ssh_resource(sshd).run("echo before\nif then fi\necho after\n", log)
    assert result.exit_code == 2
    assert "before" not in log.lines and "after" not in log.lines
    assert "syntax error" in result.tail


@pytest.mark.bad_input
def test_a_bad_env_name_is_refused_before_connecting(sshd):
    log = Recorder()
    with pytest.raises(SshCommandError, match=r"environment variable name 'BAD-NAME' is not a "
                                              r"shell name"):
        ssh_resource(sshd).run("echo hi", log, env={"BAD-NAME": "x"})
    assert log.lines == []


@pytest.mark.security
def test_an_unknown_host_key_is_refused_with_a_clear_message(sshd, tmp_path: Path):
    (tmp_path / "known_hosts").write_text("")
    log = Recorder()
    remote = ssh_resource(sshd, known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(SshCommandError) as refused:
        remote.run("echo should-not-run", log)
    message = str(refused.value)
    assert message.startswith(f"ssh {sshd.username}@127.0.0.1:{sshd.port} run: ")
    assert "host key ssh-ed25519 SHA256:" in message and "is unknown" in message
    assert f"known_hosts {tmp_path / 'known_hosts'}" in message
    assert "pin it with `host_key`" in message
    assert log.lines == []


@pytest.mark.security
def test_a_pinned_host_key_is_accepted_without_known_hosts(sshd, tmp_path: Path):
    pin = " ".join((sshd.config_dir / "hostkey.pub").read_text().split()[:2])
    remote = ssh_resource(sshd, host_key=pin, known_hosts=str(tmp_path / "absent"))
    log = Recorder()
    assert remote.run("echo pinned", log).exit_code == 0
    assert log.lines == ["pinned"]


def _sleeping(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", marker]:
            found.append(process)
    return found


@pytest.mark.fault
def test_a_timeout_stops_the_remote_command(sshd):
    marker = f"29.{secrets.randbelow(9000) + 1000}"  # this test's own `sleep`
    log = Recorder()
    started = time.monotonic()
    with pytest.raises(SshCommandError) as stopped:
        ssh_resource(sshd).run(f"echo started\nsleep {marker}\necho never\n", log,
                               timeout_seconds=2)
    took = time.monotonic() - started

    message = str(stopped.value)
    assert f"ssh {sshd.username}@127.0.0.1:{sshd.port} run" in message
    assert "ran past its timeout of 2 s and was stopped" in message
    assert message.rstrip().endswith("started")  # its last lines
    assert 1.9 <= took < 8
    assert log.lines == ["started"]
    # The remote `sleep` is gone too (`timeout` ended the process group), not left for 29 s.
    deadline = time.monotonic() + 8
    while _sleeping(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sleeping(marker) == []


@pytest.mark.security
def test_a_wrong_password_names_the_host_not_the_password(sshd, sftp_password_account):
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    remote = ssh_resource(sshd, username=sftp_password_account.username, password=wrong,
                          private_key_path=None)
    log = Recorder()
    with pytest.raises(SshCommandError) as refused:
        remote.run("echo should-not-run", log)
    message = str(refused.value)
    assert f"ssh {sftp_password_account.username}@127.0.0.1:{sshd.port} run: " \
           "AuthenticationException" in message
    assert wrong not in message and sftp_password_account.password not in message
    assert log.lines == []

    # The right password logs in (the account's shell is nologin, so the command is refused).
    right = remote.model_copy(update={"password": sftp_password_account.password})
    result = right.run("echo should-not-run", log)
    assert result.exit_code != 0 and "should-not-run" not in log.lines
