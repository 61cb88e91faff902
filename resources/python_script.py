"""Run a Python processing script as its own process from an op, through Dagster Pipes.

The script is a .py file, or a folder whose entry file is `main.py` (its modules import each
other: the folder is first on sys.path). It runs in the op's working directory; `args` become
its argv[1:] (the input file, when there is one, first). It is given `env` (parameters and
connection secrets) and the worker's environment minus anything that looks secret, so it never
sees credentials it was not given. `requirements` are installed once into a cached virtual
environment per set of requirements.

Built on `dg.open_pipes_session` with the injector and reader `dg.PipesSubprocessClient` uses,
but not on the client itself: its `run` lets the child write straight to the op process's
stdout/stderr (nothing reaches the run's event log, and `forward_stdio=False` pipes output
that nobody reads, which blocks a script once it has printed 64 KiB), has no timeout, signals
only the child and not what it started, and cannot read output-file lines. Here every line is
read as it comes: logged to the run (context.log, which the compute logs capture as well),
env values masked, the last ones kept for the error message.

A small launcher (`_LAUNCHER`) opens the Pipes connection before the script runs and closes
it after, so a plain script needs no dagster_pipes code (and Dagster does not warn that it
never heard from the process); a script that calls `open_dagster_pipes()` gets that same
connection, to send `report_custom_message({"output_files": [...]})`, logs or metadata.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dagster as dg

from orchestration.settings import data_dir
from resources.process_group import stop_group
from resources.shell_channel import looks_secret
from resources.ssh_command import secret_masker

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
    exit_code: int
    output_files: list[str] = field(default_factory=list)  # absolute paths, in reported order
    metadata: dict = field(default_factory=dict)  # what the script sent by Pipes custom messages


def run_python_script(context: dg.OpExecutionContext, script: Path,
                      args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                      requirements: Sequence[str] = (), venv_root: Path | None = None,
                      timeout_seconds: float | None = None) -> ScriptOutcome:
    """Run `script` with `args` and `env`; raise ScriptError unless it exits 0.

    Output files the script reports (Pipes `report_custom_message({"output_files": [...]})`, or
    stdout lines `STAGECOACH_OUTPUT_FILE=<path>`) are returned as absolute paths and must
    exist. `timeout_seconds` None: no limit.
    """
    script = Path(script)
    entry, folder = _entry(script)
    env = _checked_env(env, script)
    python = (sys.executable if not requirements else
              str(script_venv(requirements, venv_root, context.log.info, script) / "bin" /
                  "python"))
    mask = secret_masker(env)
    with dg.open_pipes_session(context=context,
                               context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=dg.PipesTempFileMessageReader()) as session:
        child_env = {**_inherited_env(), "PYTHONUNBUFFERED": "1", **env,
                     **session.get_bootstrap_env_vars()}
        command = [python, "-c", _LAUNCHER, str(entry), str(folder), *map(str, args)]
        finished = _Process(context.log, mask, script).run(command, child_env, timeout_seconds)
    if finished.exit_code != 0:
        raise ScriptError(finished.failure(), finished.exit_code)
    messages = session.get_custom_messages()  # read after the session closed: all of them
    output_files = _output_files(script, messages, finished.output_lines)
    metadata: dict[str, Any] = {}
    for payload in messages:
        if isinstance(payload, dict):
            metadata.update({k: v for k, v in payload.items() if k != "output_files"})
        else:
            metadata.setdefault("messages", []).append(payload)
    return ScriptOutcome(finished.exit_code, output_files, metadata)


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


def _inherited_env() -> dict[str, str]:
    """The worker's environment without what looks secret: the script gets only the secrets
    it is given."""
    return {name: value for name, value in os.environ.items() if not looks_secret(name)}


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

    def __init__(self, log: dg.DagsterLogManager, mask: Callable[[str], str], script: Path):
        self.log, self.mask, self.script = log, mask, script
        self.logged = 0
        self.tails = {"stdout": deque(maxlen=TAIL_LINES), "stderr": deque(maxlen=TAIL_LINES)}
        self.output_lines: list[str] = []

    def run(self, command: list[str], env: dict[str, str], timeout_seconds: float | None
            ) -> _Finished:
        started = time.monotonic()
        lines: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        try:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True)  # its own process group
        except OSError as failed:
            raise ScriptError(f"script {self.script}: cannot start {command[0]}: "
                              f"{failed.strerror}") from None
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
        return _Finished(self.script, process.returncode, self.tails["stderr"],
                         self.tails["stdout"], self.output_lines)

    def _follow(self, process: subprocess.Popen, lines: queue.Queue, started: float,
                timeout_seconds: float | None) -> None:
        deadline = None if timeout_seconds is None else started + timeout_seconds
        open_streams, exited_at = 2, None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                stop_group(process, KILL_GRACE_SECONDS)
                self._drain(lines, wait=0.2)
                tail = "\n".join([*self.tails["stdout"], *self.tails["stderr"]][-TAIL_LINES:])
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
            else:
                self._line(name, data)
        self._drain(lines, wait=0)

    def _drain(self, lines: queue.Queue, wait: float) -> None:
        """Take the lines already read (a stopped script's last words)."""
        with contextlib.suppress(queue.Empty):
            while True:
                name, data = lines.get(timeout=wait) if wait else lines.get_nowait()
                if data is not None:
                    self._line(name, data)

    def _line(self, stream: str, data: bytes) -> None:
        line = data.decode("utf-8", errors="replace").rstrip("\r\n")
        if stream == "stdout" and line.startswith(OUTPUT_FILE_PREFIX):
            self.output_lines.append(line[len(OUTPUT_FILE_PREFIX):].strip())
        shown = self.mask(line)
        self.tails[stream].append(shown)
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


def _read_lines(stream: IO[bytes], name: str, lines: queue.Queue) -> None:
    """Pass each line of a child's stream to the queue; None at its end."""
    try:
        for data in iter(lambda: stream.readline(_MAX_LINE_BYTES), b""):
            lines.put((name, data))
    finally:
        lines.put((name, None))
        stream.close()


def _output_files(script: Path, messages: Sequence[Any], printed: list[str]) -> list[str]:
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
        if not path.is_file():
            raise ScriptError(f"script {script} reported the output file {name}, which does not "
                              f"exist (as {path}): it must write the file before reporting it")
        if str(path) not in absolute:
            absolute.append(str(path))
    return absolute


# ---------------------------------------------------------------- cached virtual environments


def venv_key(requirements: Sequence[str]) -> str:
    """The name of the environment for a set of requirements: what it holds and which Python."""
    identity = json.dumps({
        "requirements": sorted({r.strip() for r in requirements if r.strip()}),
        "python": f"{sys.implementation.name}-{platform.python_version()}-{platform.machine()}",
        "dagster-pipes": importlib.metadata.version("dagster-pipes")})
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def script_venv(requirements: Sequence[str], venv_root: Path | None,
                log: Callable[[str], None], script: Path) -> Path:
    """The cached virtual environment holding `requirements` (and dagster-pipes), built once.

    It is built in a folder of its own (`<key>.build-<random>`) and published by creating the
    symlink `<key>` to it, which is atomic and fails if another process published first, so a
    half-built environment is never used. Builders of the same key on this machine take turns
    (a lock file), and one that crashed leaves only a build folder the next one removes. The
    environment is never moved: a venv is not relocatable (its scripts name their path).
    """
    wanted = sorted({r.strip() for r in requirements if r.strip()})
    for requirement in wanted:
        if requirement.startswith("-") or any(c in requirement for c in "\n\r\0"):
            raise ScriptError(f"script {script}: requirement {requirement!r} is not a package "
                              "specifier such as 'tomli==2.0.1' (pip options are not accepted)")
    root = Path(venv_root) if venv_root is not None else data_dir() / VENVS_FOLDER
    key = venv_key(wanted)
    venv = root / key
    if _ready(venv):
        return venv
    root.mkdir(parents=True, exist_ok=True)
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
            _build_venv(build, wanted, script)
            (build / READY_MARKER).write_text(json.dumps({"requirements": wanted}) + "\n")
            os.symlink(build.name, venv)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        log(f"virtual environment {venv} ready in {time.monotonic() - started:.1f} s")
    return venv


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


def _build_venv(build: Path, wanted: list[str], script: Path) -> None:
    outer_pip = _outer_pip_can_target()
    create = [sys.executable, "-m", "venv", *(["--without-pip"] if outer_pip else []), str(build)]
    _checked_run(create, script, "creating the virtual environment", wanted)
    python = str(build / "bin" / "python")
    pip = ([sys.executable, "-m", "pip", "--python", python] if outer_pip
           else [python, "-m", "pip"])
    pipes = f"dagster-pipes=={importlib.metadata.version('dagster-pipes')}"
    _checked_run([*pip, "install", "--disable-pip-version-check", "--no-input",
                  "--no-warn-script-location", pipes, *wanted], script,
                 "installing requirements", wanted)


def _checked_run(command: list[str], script: Path, doing: str, wanted: list[str]) -> None:
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=INSTALL_TIMEOUT_SECONDS)
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
                      f"pip from this machine's package index (PIP_INDEX_URL):\n{detail}")


def _project(requirement: str) -> str:
    """The project name a specifier starts with ('tomli' of 'tomli>=2; python_version…')."""
    name = requirement
    for stop in "<>=!~;[@ (":
        name = name.split(stop, 1)[0]
    return name.strip().lower()
