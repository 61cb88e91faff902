"""Run a Python processing script as its own process from an op, through Dagster Pipes.

The script is a .py file, or a folder whose entry file is `main.py` (its modules import each
other: the folder is first on sys.path). It runs in the op's working directory; `args` become
its argv[1:] (the input file, when there is one, first). Its environment starts empty: PATH,
HOME, LANG, LC_ALL and TZ from the worker, then `env` (Stagecoach's STAGECOACH_* variables,
connection details, the step's own env) and Pipes' variables; nothing else of the worker's
(a CRM_DB_URL with a password in it, the Slack token). Given `script_uids`, it runs as a uid
of its own for this step (resources/processes/script_uids.py), so it cannot read the worker's
or another step's /proc/<pid>/environ, and everything it leaves running is killed when the
step ends.
`requirements` are installed once into a cached virtual environment per set of requirements
(wheels only: no package's build code runs).

Built on `dg.open_pipes_session` (context and message files in the run's private folder, the
messages masked before Dagster handles them), not on `dg.PipesSubprocessClient`: its `run`
lets the child write straight to the op process's stdout/stderr (nothing reaches the run's
event log, and `forward_stdio=False` pipes output that nobody reads, which blocks a script once
it has printed 64 KiB), has no timeout, signals only the child and not what it started, and
cannot read output-file lines. Here every line is
read as it comes: logged to the run (context.log, which the compute logs capture as well),
the secrets masked (resources/processes/masking.py: stdout, stderr, Pipes messages, the error tail),
the last ones kept for the error message.

A small launcher (`_LAUNCHER`) opens the Pipes connection before the script runs and closes
it after, so a plain script needs no dagster_pipes code (and Dagster does not warn that it
never heard from the process); a script that calls `open_dagster_pipes()` gets that same
connection, to send `report_custom_message({"output_files": [...]})`, logs or metadata.
"""

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import pwd
import queue
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import dagster as dg
from packaging.requirements import InvalidRequirement, Requirement

from resources.processes.masking import MaskedLines, Masker, secrets_of
from resources.processes.process_group import stop_group
from resources.processes.script_uids import (
    IsolationError,
    kill_all,
    lease_uid,
    parse_uids,
    readable_by_group,
    shared_file,
    step_folder,
)
from resources.settings import SCRIPT_UIDS_ENV, data_dir

ENTRY_FILE = "main.py"
OUTPUT_FILE_PREFIX = "STAGECOACH_OUTPUT_FILE="
TAIL_LINES = 20
LOG_LINES_MAX = 10_000  # more lines go to the step's raw compute logs only, not the event log
KILL_GRACE_SECONDS = 5.0
INSTALL_TIMEOUT_SECONDS = 1800.0
VENVS_FOLDER = "script_venvs"
READY_MARKER = ".stagecoach-ready"
_MAX_LINE_BYTES = 65536  # a longer line is logged in pieces
_STREAMS_GRACE_SECONDS = 5.0  # after the exit, how long a child's child may hold the pipes
_PIP_MIN_FOR_PYTHON_OPTION = (22, 3)
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")  # all a script gets of the worker's
# What pip gets of the worker's environment besides INHERITED_ENV: its own settings and proxies.
PIP_ENV_PREFIXES = ("PIP_",)
PIP_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
           "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
NOT_OUTPUT_FOLDERS = ("/proc", "/sys", "/dev")

# Runs as `python -c _LAUNCHER <entry file> <folder> <args…>` in the script's interpreter.
_LAUNCHER = """\
import runpy, sys, traceback
entry, folder = sys.argv[1], sys.argv[2]
sys.argv = [entry, *sys.argv[3:]]
sys.path[0] = folder
try:
    from dagster_pipes import open_dagster_pipes
except ImportError:
    pipes = None
else:
    pipes = open_dagster_pipes()
try:
    runpy.run_path(entry, run_name="__main__")
except SystemExit:
    raise
except BaseException as error:
    shown = error.__traceback__
    while shown is not None and shown.tb_frame.f_code.co_filename != entry:
        shown = shown.tb_next
    traceback.print_exception(type(error), error, shown or error.__traceback__)
    sys.exit(1)
finally:
    if pipes is not None:
        pipes.close()
"""


class ScriptError(Exception):
    """The script could not run, failed, or outlived its timeout; the message names the script
    and says what to do. Never holds an env value (the output tail is masked). `exit_code` is
    the script's own, when it ran to an exit."""

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ScriptOutcome:
    """What a script's run left: exit code, files and reported values."""

    exit_code: int
    output_files: list[str] = field(default_factory=list)  # absolute paths, in reported order
    metadata: dict = field(default_factory=dict)  # what the script sent by Pipes custom messages


def run_python_script(context: dg.OpExecutionContext, script: Path,
                      args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                      requirements: Sequence[str] = (), venv_root: Path | None = None,
                      timeout_seconds: float | None = None, secret_names: Collection[str] = (),
                      script_uids: str | range | None = None) -> ScriptOutcome:
    """Run `script` with `args` and `env`; raise ScriptError unless it exits 0.

    `secret_names` names the entries of `env` that are secrets: masked in everything the script
    says. `script_uids` (`200000-265535`) runs it as a free uid of that range, gid the same, no
    groups. Output files the script reports (Pipes `report_custom_message({"output_files":
    [...]})`, or stdout lines `STAGECOACH_OUTPUT_FILE=<path>`) are returned as absolute paths:
    regular files the script wrote (owned by its uid).
    `timeout_seconds` None: no limit.
    """
    script = Path(script)
    entry, folder = _entry(script)
    env = _checked_env(env, script)
    try:
        masker = Masker(secrets_of(env, secret_names))
    except ValueError as short:
        raise ScriptError(f"script {script}: {short}") from None
    uids = _uids(script_uids, script)
    with _isolated(script) as enter:
        uid = enter(_lease(uids))
        work, home = enter(step_folder(uid))
        python = (sys.executable if not requirements else
                  str(script_venv(requirements, venv_root, context.log.info, script, uid, home)
                      / "bin" / "python"))
        finished, messages = _run_in_session(context, masker, script, uid, work, home, [
            python, "-c", _LAUNCHER, str(entry), str(folder), *map(str, args)], env,
            timeout_seconds)
        if finished.exit_code != 0:
            raise ScriptError(finished.failure(), finished.exit_code)
        output_files = _output_files(script, messages, finished.output_lines, uid)
    metadata: dict[str, Any] = {}
    for payload in messages:
        if isinstance(payload, dict):
            metadata.update({k: v for k, v in payload.items() if k != "output_files"})
        else:
            metadata.setdefault("messages", []).append(payload)
    return ScriptOutcome(finished.exit_code, output_files, metadata)


def _run_in_session(context: dg.OpExecutionContext, masker: Masker, script: Path,
                    uid: int | None, work: Path, home: Path, command: list[str],
                    env: dict[str, str], timeout_seconds: float | None
                    ) -> tuple["_Finished", list[Any]]:
    """Run the command inside a Pipes session whose files are in the worker's `work` folder:
    the message file made here (new, not a link) and handed to the uid by file handle."""
    messages_file = work / "pipes_messages.jsonl"
    shared_file(messages_file, uid, 0o600)
    with dg.open_pipes_session(
            context=context, context_injector=dg.PipesFileContextInjector(
                str(work / "pipes_context.json")),
            message_reader=_MaskedMessageReader(str(messages_file), masker)) as session:
        readable_by_group(work / "pipes_context.json", uid)
        child_env = _child_env(env, session.get_bootstrap_env_vars(), home, uid)
        finished = _Process(context.log, masker, script, uid).run(
            command, child_env, timeout_seconds)
        if uid is not None:
            kill_all(uid)  # what it left running: before its messages and files are read
    return finished, list(session.get_custom_messages())  # after the session closed: all


def _uids(setting: str | range | None, script: Path) -> range | None:
    """The uid range to draw from (None: run as the worker); one that is not a range, or that
    holds a user of this machine, is refused naming the setting."""
    if not setting:
        return None
    try:
        uids = parse_uids(setting) if isinstance(setting, str) else setting
    except ValueError as wrong:
        raise ScriptError(f"script {script}: {wrong}") from None
    taken = sorted(u.pw_name for u in pwd.getpwall() if u.pw_uid in uids)
    if taken:
        raise ScriptError(f"script {script}: {SCRIPT_UIDS_ENV} {uids.start}-{uids.stop - 1} "
                          f"holds the uid of user(s) {', '.join(taken[:5])} of this machine; "
                          "choose a range no account uses (scripts would get their files)")
    return uids


@contextlib.contextmanager
def _lease(uids: range | None) -> Iterator[int | None]:
    if uids is None:
        yield None
    else:
        with lease_uid(uids) as uid:
            yield uid


@contextlib.contextmanager
def _isolated(script: Path) -> Iterator[Callable[[Any], Any]]:
    """An exit stack whose isolation errors become ScriptErrors naming the script."""
    try:
        with contextlib.ExitStack() as stack:
            yield stack.enter_context
    except IsolationError as failed:
        raise ScriptError(f"script {script}: {failed}") from None


def _child_env(env: Mapping[str, str], pipes: Mapping[str, str], home: Path,
               uid: int | None) -> dict[str, str]:
    """The script's whole environment: the allow-listed worker variables, `env`, Pipes'."""
    inherited = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    if uid is not None:
        inherited["HOME"] = str(home)  # the worker's HOME is not the script's
    return {**inherited, "TMPDIR": str(home), "PYTHONUNBUFFERED": "1", **env, **pipes}


class _MaskedMessageReader(dg.PipesFileMessageReader):
    """Reads the script's Pipes messages from a file, secrets masked before Dagster sees them
    (log messages, reported metadata, custom messages)."""

    def __init__(self, path: str, masker: Masker):
        super().__init__(path)
        self._masker = masker

    @contextlib.contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[Mapping[str, Any]]:
        # _MaskingHandler stands in for the handler by duck typing: it passes every call on.
        masking = cast("dg.PipesMessageHandler", _MaskingHandler(handler, self._masker))
        with super().read_messages(masking) as params:
            yield params


class _MaskingHandler:
    """A PipesMessageHandler's stand-in that masks each message before passing it on."""

    def __init__(self, handler: dg.PipesMessageHandler, masker: Masker):
        self._handler, self._masker = handler, masker

    def handle_message(self, message: dict[str, Any]) -> None:
        self._handler.handle_message(self._masker.value(message))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


def _entry(script: Path) -> tuple[Path, Path]:
    """(the file to run, the folder first on its sys.path)."""
    if script.is_dir():
        entry = script / ENTRY_FILE
        if not entry.is_file():
            raise ScriptError(f"script folder {script} has no {ENTRY_FILE}: a multi-file script "
                              f"starts at {ENTRY_FILE} in its folder")
        return entry.resolve(), script.resolve()
    if not script.is_file():
        raise ScriptError(f"script {script} does not exist (a .py file, or a folder with "
                          f"{ENTRY_FILE}); paths in a spec are relative to the spec file")
    return script.resolve(), script.resolve().parent


def _checked_env(env: Mapping[str, Any] | None, script: Path) -> dict[str, str]:
    """The env as strings (values through str()); names and values the OS would refuse are
    errors naming the variable, never its value."""
    checked = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ScriptError(f"script {script}: environment variable name {name!r} is not "
                              "valid (no '=', not empty)")
        text = "" if value is None else str(value)  # a YAML number or boolean is fine
        if "\0" in text:
            raise ScriptError(f"script {script}: environment variable {name} holds a NUL "
                              "character, which no process environment can carry")
        checked[name] = text
    return checked


@dataclass
class _Finished:
    script: Path
    exit_code: int
    stderr_tail: deque[str]
    stdout_tail: deque[str]
    output_lines: list[str]

    def failure(self) -> str:
        tail = self.stderr_tail or self.stdout_tail
        shown = "\n".join(tail) if tail else "(it printed nothing)"
        which = "stderr" if self.stderr_tail else "output"
        if self.exit_code < 0:
            how = f"was killed by signal {signal.Signals(-self.exit_code).name}"
            if self.exit_code == -signal.SIGKILL:
                how += " (the machine may have run out of memory)"
        else:
            how = f"exited with code {self.exit_code}"
        return f"script {self.script} {how}; the last lines of its {which}:\n{shown}"


class _Process:
    """One run of the script: its output read line by line as it comes, its process group
    stopped at the deadline or when the op is interrupted."""

    def __init__(self, log: dg.DagsterLogManager, masker: Masker, script: Path,
                 uid: int | None = None):
        self.log, self.script, self.uid = log, script, uid
        self.logged = 0
        self.streams = {name: MaskedLines(functools.partial(self._show, name), masker)
                        for name in ("stdout", "stderr")}
        self.ended: set[str] = set()
        self.output_lines: list[str] = []

    def run(self, command: list[str], env: dict[str, str], timeout_seconds: float | None
            ) -> _Finished:
        started = time.monotonic()
        lines: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        try:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True,  # its own process group
                                       **self._identity())
        except OSError as failed:
            raise ScriptError(self._cannot_start(command[0], failed)) from None
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
            threading.Thread(target=_read_lines, args=(stream, name, lines), daemon=True,
                             name=f"script-{name}").start()
        try:
            self._follow(process, lines, started, timeout_seconds)
        except BaseException:  # the deadline, or the run interrupted: nothing left running
            stop_group(process, KILL_GRACE_SECONDS)
            raise
        took = time.monotonic() - started
        self.log.info(f"script {self.script.name} ended with code {process.returncode} after "
                      f"{took:.1f} s")
        return _Finished(self.script, process.returncode, self.streams["stderr"].tail,
                         self.streams["stdout"].tail, self.output_lines)

    def _cannot_start(self, program: str, failed: OSError) -> str:
        if self.uid is None:
            return f"script {self.script}: cannot start {program}: {failed.strerror}"
        return (f"script {self.script}: cannot start {program} as uid {self.uid}: "
                f"{failed.strerror}; every uid must be able to run the interpreter and read "
                f"the script, and switching uids needs a worker running as root (or unset "
                f"{SCRIPT_UIDS_ENV})")

    def _identity(self) -> dict[str, Any]:
        return _identity(self.uid)

    def _follow(self, process: subprocess.Popen, lines: queue.Queue, started: float,
                timeout_seconds: float | None) -> None:
        deadline = None if timeout_seconds is None else started + timeout_seconds
        open_streams, exited_at = 2, None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                stop_group(process, KILL_GRACE_SECONDS)
                self._drain(lines, wait=0.2)
                self._end_streams()
                tail = "\n".join([*self.streams["stdout"].tail,
                                  *self.streams["stderr"].tail][-TAIL_LINES:])
                raise ScriptError(
                    f"script {self.script} ran past its timeout of {timeout_seconds:g} s and was "
                    f"stopped with everything it started (SIGTERM, then SIGKILL after "
                    f"{KILL_GRACE_SECONDS:g} s); raise the step's timeout if it needs longer. "
                    f"Its last lines:\n{tail or '(none)'}")
            if exited_at is None and process.poll() is not None:
                exited_at = now
            if exited_at is not None and (not open_streams
                                          or now - exited_at > _STREAMS_GRACE_SECONDS):
                break  # (after the grace: something it started still holds its output open)
            if not open_streams:  # it closed its output but has not exited yet
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.2)
                continue
            try:
                name, data = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if data is None:
                open_streams -= 1
                self._end_streams(name)
            else:
                self._line(name, data)
        self._drain(lines, wait=0)
        self._end_streams()

    def _drain(self, lines: queue.Queue, wait: float) -> None:
        """Take the lines already read (a stopped script's last words)."""
        with contextlib.suppress(queue.Empty):
            while True:
                name, data = lines.get(timeout=wait) if wait else lines.get_nowait()
                if data is not None:
                    self._line(name, data)

    def _end_streams(self, *names: str) -> None:
        """Pass on what each stream's masker still holds (at its end, or the script's)."""
        for name in names or tuple(self.streams):
            if name not in self.ended:
                self.ended.add(name)
                self.streams[name].end()

    def _line(self, stream: str, data: bytes) -> None:
        if stream == "stdout" and data.startswith(OUTPUT_FILE_PREFIX.encode()):
            line = data.decode("utf-8", errors="replace").rstrip("\r\n")
            self.output_lines.append(line[len(OUTPUT_FILE_PREFIX):].strip())
        if stream not in self.ended:
            self.streams[stream].feed(data)

    def _show(self, stream: str, shown: str) -> None:
        """One masked line: to the run's log, or past LOG_LINES_MAX to the raw compute logs."""
        if self.logged < LOG_LINES_MAX:
            self.logged += 1
            self.log.info(shown if stream == "stdout" else f"[stderr] {shown}")
            if self.logged == LOG_LINES_MAX:
                self.log.warning(f"script {self.script.name} printed {LOG_LINES_MAX} lines: "
                                 "the rest are in this step's raw compute logs "
                                 "(stdout/stderr), not in the event log")
        else:
            target = sys.stdout if stream == "stdout" else sys.stderr
            target.write(shown + "\n")


def _identity(uid: int | None) -> dict[str, Any]:
    """Popen's arguments to run as `uid`, gid the same, with no supplementary groups."""
    if uid is None:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def _read_lines(stream: IO[bytes], name: str, lines: queue.Queue) -> None:
    """Pass each line of a child's stream to the queue; None at its end."""
    try:
        for data in iter(lambda: stream.readline(_MAX_LINE_BYTES), b""):
            lines.put((name, data))
    finally:
        lines.put((name, None))
        stream.close()


def _output_files(script: Path, messages: Sequence[Any], printed: list[str],
                  uid: int | None = None) -> list[str]:
    """The files the script said it wrote (Pipes messages, then stdout lines), absolute."""
    reported: list[str] = []
    for payload in messages:
        if isinstance(payload, dict) and "output_files" in payload:
            files = payload["output_files"]
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise ScriptError(f"script {script} reported output_files that are not a list "
                                  f"of paths: {files!r:.200}; send "
                                  '{"output_files": ["/path/a.csv", ...]}')
            reported.extend(files)
    reported.extend(printed)
    absolute = []
    for name in reported:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        _check_output(script, name, path, uid)
        if str(path) not in absolute:
            absolute.append(str(path))
    return absolute


def _check_output(script: Path, name: str, path: Path, uid: int | None) -> None:
    """An output file is a regular file (not a link) outside /proc, /sys and /dev, and with a
    script uid one that uid owns: what the script wrote, never a file only the worker may
    read (/etc/shadow, the worker's /proc/<pid>/environ) handed to the next step."""
    if not os.path.lexists(path):
        raise ScriptError(f"script {script} reported the output file {name}, which does not "
                          f"exist (as {path}): it must write the file before reporting it")
    refused = f"script {script} reported the output file {name} (as {path}), which"
    where = os.path.realpath(path.parent)
    if any(where == top or where.startswith(top + "/") for top in NOT_OUTPUT_FOLDERS):
        raise ScriptError(f"{refused} is in a system folder; write output files elsewhere")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as failed:
        why = ("is a symbolic link; report the file itself" if path.is_symlink()
               else f"cannot be opened ({failed.strerror})")
        raise ScriptError(f"{refused} {why}") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ScriptError(f"{refused} is not a regular file; report only files it wrote")
    if uid is not None and info.st_uid != uid:
        raise ScriptError(f"{refused} belongs to uid {info.st_uid}, not to the script's uid "
                          f"{uid}: report only files the script wrote itself")


# ---------------------------------------------------------------- cached virtual environments


def requirement_problem(text: str) -> str | None:
    """Why `text` is not a requirement a step may name (None: it is one). Only `name[extras]
    <version spec>[; marker]`: a URL, a path or a pip option would install code from
    anywhere, past the package index."""
    if text.strip().startswith("-") or any(c in text for c in "\n\r\0"):
        return "pip options are not accepted"
    try:
        parsed = Requirement(text)
    except InvalidRequirement:
        return "write a package name with an optional version, such as 'tomli==2.0.1'"
    if parsed.url:
        return "direct references (name @ URL or path) are not accepted: publish the package " \
               "to the package index and name its version"
    return None


def venv_key(requirements: Sequence[str]) -> str:
    """The name of the environment for a set of requirements: what it holds and which Python."""
    identity = json.dumps({
        "requirements": sorted({r.strip() for r in requirements if r.strip()}),
        "python": f"{sys.implementation.name}-{platform.python_version()}-{platform.machine()}",
        "dagster-pipes": importlib.metadata.version("dagster-pipes")})
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def script_venv(requirements: Sequence[str], venv_root: Path | None,
                log: Callable[[str], None], script: Path, uid: int | None = None,
                home: Path | None = None) -> Path:
    """The cached virtual environment holding `requirements` (and dagster-pipes), built once.

    It is built in a folder of its own (`<key>.build-<random>`) and published by creating the
    symlink `<key>` to it, which is atomic and fails if another process published first, so a
    half-built environment is never used. Builders of the same key on this machine take turns
    (a lock file), and one that crashed leaves only a build folder the next one removes. The
    environment is never moved: a venv is not relocatable (its scripts name their path).
    pip installs wheels only and gets the allow-listed environment, no worker secret; with a
    `uid` (and its `home`) it runs as that uid, and the finished environment is the worker's,
    read-only to everyone else.
    """
    wanted = sorted({r.strip() for r in requirements if r.strip()})
    for requirement in wanted:
        if problem := requirement_problem(requirement):
            raise ScriptError(f"script {script}: requirement {requirement!r} is not a package "
                              f"specifier such as 'tomli==2.0.1' ({problem})")
    root = Path(venv_root) if venv_root is not None else data_dir() / VENVS_FOLDER
    key = venv_key(wanted)
    venv = root / key
    if _ready(venv):
        return venv
    root.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        _reachable(root)
    with _lock(root / f".{key}.lock", log, wanted):
        if _ready(venv):
            return venv  # another run built it while this one waited
        if venv.is_symlink():
            venv.unlink()  # points at a build that is gone or was never finished
        elif venv.exists():
            shutil.rmtree(venv)
        for stale in root.glob(f"{key}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a builder that died: we hold the lock
        build = root / f"{key}.build-{secrets.token_hex(4)}"
        log(f"installing {', '.join(wanted)} into a new virtual environment {venv} (once for "
            "this set of requirements)")
        started = time.monotonic()
        try:
            _build_venv(build, wanted, script, uid, home)
            (build / READY_MARKER).write_text(json.dumps({"requirements": wanted}) + "\n")
            os.symlink(build.name, venv)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        log(f"virtual environment {venv} ready in {time.monotonic() - started:.1f} s")
    return venv


def _reachable(root: Path) -> None:
    """The script uids run what is in the environments' folder (whatever the umask, 0027 in
    production) and may pass through the data folder to it, not list or read it."""
    root.chmod(0o755)
    if root.parent == data_dir():
        os.chmod(root.parent, stat.S_IMODE(root.parent.stat().st_mode) | 0o001)


def _ready(venv: Path) -> bool:
    return (venv / READY_MARKER).is_file() and (venv / "bin" / "python").exists()


@contextlib.contextmanager
def _lock(path: Path, log: Callable[[str], None], wanted: list[str]) -> Iterator[None]:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run that is installing {', '.join(wanted)}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _outer_pip_can_target() -> bool:
    """True when this interpreter's pip can install into another one (`pip --python`, 22.3+):
    the new environment then needs no pip of its own (seconds faster to create)."""
    if importlib.util.find_spec("pip") is None:
        return False
    try:
        version = tuple(int(p) for p in importlib.metadata.version("pip").split(".")[:2])
    except ValueError:
        return False
    return version >= _PIP_MIN_FOR_PYTHON_OPTION


def _build_venv(build: Path, wanted: list[str], script: Path, uid: int | None = None,
                home: Path | None = None) -> None:
    """Create the environment and pip-install into it: wheels only (`--only-binary :all:`, so
    no setup.py or build backend of any package runs), pip's own variables but no worker
    secret, and with a `uid` as that uid (the worker's pip then is out of its reach: the
    environment gets a pip of its own), made the worker's and read-only afterwards."""
    outer_pip = uid is None and _outer_pip_can_target()
    run: dict[str, Any] = {"env": _pip_env(home)}
    if uid is not None:
        build.mkdir(0o755)
        os.chown(build, uid, uid)  # (the worker's folder of environments: no race)
        run |= {**_identity(uid), "cwd": str(home)}
    create = [sys.executable, "-m", "venv", *(["--without-pip"] if outer_pip else []), str(build)]
    try:
        _checked_run(create, script, "creating the virtual environment", wanted, run)
        python = str(build / "bin" / "python")
        pip = ([sys.executable, "-m", "pip", "--python", python] if outer_pip
               else [python, "-m", "pip"])
        pipes = f"dagster-pipes=={importlib.metadata.version('dagster-pipes')}"
        _checked_run([*pip, "install", "--disable-pip-version-check", "--no-input",
                      "--no-cache-dir", "--only-binary", ":all:", "--no-warn-script-location",
                      pipes, *wanted], script, "installing requirements", wanted, run)
    finally:
        if uid is not None:
            kill_all(uid)
            _make_read_only(build)


def _pip_env(home: Path | None) -> dict[str, str]:
    """Pip's environment: the script allow-list, pip's settings and proxies; nothing else."""
    env = {name: value for name, value in os.environ.items()
           if name in INHERITED_ENV or name in PIP_ENV or name.startswith(PIP_ENV_PREFIXES)}
    if home is not None:
        env["HOME"] = str(home)
    return env


def _make_read_only(build: Path) -> None:
    """The uid's build handed to the worker (links not followed), writable by it alone."""
    for folder, names, files in os.walk(build):
        for path in [folder, *(os.path.join(folder, n) for n in names + files)]:
            os.chown(path, os.geteuid(), os.getegid(), follow_symlinks=False)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~0o022 | 0o444
                         | (0o111 if os.path.isdir(path) else 0))


def _checked_run(command: list[str], script: Path, doing: str, wanted: list[str],
                 options: Mapping[str, Any]) -> None:
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=INSTALL_TIMEOUT_SECONDS, **options)
    except subprocess.TimeoutExpired:
        raise ScriptError(f"script {script}: {doing} ({', '.join(wanted)}) took longer than "
                          f"{INSTALL_TIMEOUT_SECONDS:g} s; check the package index can be "
                          "reached from this machine") from None
    if done.returncode == 0:
        return
    output = (done.stdout + "\n" + done.stderr).strip()
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR")]
    said = "\n".join(errors).lower()
    named = [r for r in wanted if r.lower() in said
             or re.search(rf"(?<![\w.-]){re.escape(_project(r))}(?![\w.-])", said)]
    culprit = (f"requirement {' / '.join(repr(r) for r in named)}" if named
               else f"requirements {', '.join(wanted)}")
    detail = "\n".join(errors[-5:] or output.splitlines()[-TAIL_LINES:])
    raise ScriptError(f"script {script}: {doing} failed for {culprit} (exit "
                      f"{done.returncode}); check the name and version can be installed with "
                      f"pip from this machine's package index (PIP_INDEX_URL) as a wheel "
                      f"(source distributions are not built):\n{detail}")


def _project(requirement: str) -> str:
    """The project name a specifier starts with ('tomli' of 'tomli>=2; python_version…')."""
    name = requirement
    for stop in "<>=!~;[@ (":
        name = name.split(stop, 1)[0]
    return name.strip().lower()
