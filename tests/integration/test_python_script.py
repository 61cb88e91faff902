"""run_python_script inside a real op of a real job (`dg.job` + `execute_in_process` on a test
instance that captures compute logs), running real scripts as their own processes.

Each script is written next to its assertions. What the run logged is read back from the
instance: the event log (what the UI's run page shows) and the step's captured compute logs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import pytest

from resources.processes.python_script import (
    ScriptError,
    ScriptOutcome,
    run_python_script,
    script_venv,
    venv_key,
)

pytestmark = pytest.mark.timeout(240)


@dataclass
class JobRun:
    result: dg.ExecuteInProcessResult
    outcome: ScriptOutcome | None
    event_log: str  # every message of the run's event log, one per line
    compute_logs: str  # the captured stdout and stderr of the run's steps

    @property
    def everything(self) -> str:
        return self.event_log + "\n" + self.compute_logs + "\n" + self.failure

    @property
    def failure(self) -> str:
        return "\n".join(event.step_failure_data.error.to_string()
                         for event in self.result.all_events if event.is_step_failure)


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One test instance (it captures compute logs) for the module's runs: opening one takes
    seconds."""
    with dg.instance_for_test() as opened:
        yield opened


def run_in_job(instance: dg.DagsterInstance, script: Path, **options) -> JobRun:
    """Run the script from an op of a one-op job; the outcome, the logs and the result."""
    outcomes: list[ScriptOutcome] = []

    @dg.op
    def run_script(context) -> None:  # (a string annotation is refused by @dg.op)
        outcomes.append(run_python_script(context, script, **options))

    @dg.job
    def script_job() -> None:
        run_script()

    result = script_job.execute_in_process(instance=instance, raise_on_error=False)
    event_log = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    manager = instance.compute_log_manager
    captured = []
    for event in result.all_events:
        if event.event_type_value == "LOGS_CAPTURED":
            key = manager.build_log_key_for_run(result.run_id, event.event_specific_data.file_key)
            data = manager.get_log_data(key)
            captured += [(data.stdout or b"").decode(), (data.stderr or b"").decode()]
    return JobRun(result, outcomes[0] if outcomes else None, event_log, "\n".join(captured))


def write(path: Path, code: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def test_argv_env_and_output_reach_the_script_and_the_run_logs(
        instance: dg.DagsterInstance, tmp_path: Path):
    input_file = tmp_path / "in.csv"
    input_file.write_text("id\n1\n2\n")
    token = secrets.token_urlsafe(18)
    script = write(tmp_path / "count.py", """
        import hashlib, os, sys
        rows = open(sys.argv[1]).read().splitlines()[1:]
        print(f"counted {len(rows)} rows in {os.path.basename(sys.argv[1])}; mode={sys.argv[2]}")
        print("a warning on stderr", file=sys.stderr)
        print("token sha256", hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest())
        print("threshold", os.environ["STAGECOACH_PARAM_THRESHOLD"])
        print("inherited secret:", os.environ.get("OUTER_DB_PASSWORD"))
    """)
    os.environ["OUTER_DB_PASSWORD"] = "outer-secret-value"  # the worker's own secret
    try:
        run = run_in_job(instance, script, args=[str(input_file), "fast"],
                         env={"API_TOKEN": token,
                              "STAGECOACH_PARAM_THRESHOLD": 400})  # a number from YAML
    finally:
        del os.environ["OUTER_DB_PASSWORD"]

    assert run.result.success, run.failure
    assert run.outcome == ScriptOutcome(exit_code=0, output_files=[], metadata={})
    # Each line in the run's event log (the UI's run page) and in its captured compute logs.
    for shown in (run.event_log, run.compute_logs):
        assert "counted 2 rows in in.csv; mode=fast" in shown
        assert "[stderr] a warning on stderr" in shown
        assert f"token sha256 {hashlib.sha256(token.encode()).hexdigest()}" in shown
        assert "threshold 400" in shown
    assert "inherited secret: None" in run.event_log  # not handed down from the worker
    assert token not in run.everything and "outer-secret-value" not in run.everything


@pytest.mark.security
def test_a_script_printing_its_secret_is_masked_in_the_logs(
        instance: dg.DagsterInstance, tmp_path: Path):
    token = secrets.token_urlsafe(18)
    script = write(tmp_path / "careless.py", """
        import os, sys
        print("using", os.environ["API_TOKEN"])
        sys.exit("failed with " + os.environ["API_TOKEN"])
    """)
    run = run_in_job(instance, script, env={"API_TOKEN": token}, secret_names=["API_TOKEN"])

    assert not run.result.success
    assert "using ***" in run.event_log
    assert "failed with ***" in run.failure
    assert token not in run.everything


def test_output_files_reported_through_pipes(instance: dg.DagsterInstance, tmp_path: Path):
    out = tmp_path / "out"
    script = write(tmp_path / "report.py", """
        import os, sys
        from dagster_pipes import open_dagster_pipes
        with open_dagster_pipes() as pipes:
            paths = []
            for part in ("a", "b"):
                path = os.path.join(os.environ["OUT_DIR"], f"part_{part}.csv")
                with open(path, "w") as f:
                    f.write("id\\n1\\n")
                paths.append(path)
            pipes.log.info("written through pipes")
            pipes.report_custom_message({"output_files": paths, "rows": 2})
    """)
    out.mkdir()
    run = run_in_job(instance, script, env={"OUT_DIR": str(out)})

    assert run.result.success, run.failure
    assert run.outcome.output_files == [str(out / "part_a.csv"), str(out / "part_b.csv")]
    assert run.outcome.metadata == {"rows": 2}
    assert "written through pipes" in run.event_log
    assert "did not receive" not in run.event_log  # the Pipes session opened and closed cleanly


def test_output_files_printed_by_a_plain_script(instance: dg.DagsterInstance, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    script = write(tmp_path / "plain.py", f"""
        for name in ("x.txt", "y.txt"):
            path = {str(out)!r} + "/" + name
            open(path, "w").write(name)
            print("STAGECOACH_OUTPUT_FILE=" + path)
        print("STAGECOACH_OUTPUT_FILE=" + {str(out)!r} + "/x.txt")  # twice: kept once
    """)
    run = run_in_job(instance, script)

    assert run.result.success, run.failure
    assert run.outcome.output_files == [str(out / "x.txt"), str(out / "y.txt")]
    assert "did not receive" not in run.event_log  # no Pipes warning for a plain script


@pytest.mark.bad_input
def test_a_reported_output_file_that_does_not_exist_fails_the_step(
        instance: dg.DagsterInstance, tmp_path: Path):
    script = write(tmp_path / "liar.py", f"""
        print("STAGECOACH_OUTPUT_FILE={tmp_path}/never_written.csv")
    """)
    run = run_in_job(instance, script)

    assert not run.result.success
    assert f"reported the output file {tmp_path}/never_written.csv, which does not exist" \
        in run.failure


def test_a_non_zero_exit_fails_the_step_with_the_tail_of_stderr(
        instance: dg.DagsterInstance, tmp_path: Path):
    script = write(tmp_path / "broken.py", """
        import sys
        print("some progress")
        for i in range(1, 31):
            print(f"problem {i}", file=sys.stderr)
        sys.exit(3)
    """)
    run = run_in_job(instance, script)

    assert not run.result.success
    failure = run.failure
    assert f"script {script} exited with code 3; the last lines of its stderr:" in failure
    assert "problem 30" in failure and "problem 11" in failure and "problem 10\n" not in failure
    assert "some progress" not in failure  # stderr's tail, not stdout's


def test_an_exception_shows_the_scripts_own_traceback(instance: dg.DagsterInstance, tmp_path: Path):
    script = write(tmp_path / "raises.py", """
        def load():
            raise ValueError("column 'amount' is missing")
        load()
    """)
    run = run_in_job(instance, script)

    assert not run.result.success
    assert "ValueError: column 'amount' is missing" in run.failure
    assert f'File "{script}", line 3, in load' in run.failure
    assert "runpy" not in run.failure  # the launcher's frames are left out


def test_a_multi_file_script_folder(instance: dg.DagsterInstance, tmp_path: Path):
    folder = tmp_path / "pipeline"
    write(folder / "helpers.py", """
        def double(n):
            return n * 2
    """)
    write(folder / "lib" / "__init__.py", "NAME = 'lib package'\n")
    write(folder / "main.py", """
        import sys
        from helpers import double
        from lib import NAME
        print(f"{NAME}: {double(int(sys.argv[1]))}")
    """)
    run = run_in_job(instance, folder, args=["21"])

    assert run.result.success, run.failure
    assert "lib package: 42" in run.event_log


@pytest.mark.bad_input
def test_a_folder_without_main_py_is_named(instance: dg.DagsterInstance, tmp_path: Path):
    (tmp_path / "nomain").mkdir()
    run = run_in_job(instance, tmp_path / "nomain")
    assert not run.result.success
    assert f"script folder {tmp_path / 'nomain'} has no main.py" in run.failure


@pytest.mark.fault
def test_a_timeout_stops_the_script_and_what_it_started(
        instance: dg.DagsterInstance, tmp_path: Path):
    pids = tmp_path / "pids"
    script = write(tmp_path / "slow.py", f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("started", flush=True)
        time.sleep(60)
    """)
    started = time.monotonic()
    run = run_in_job(instance, script, timeout_seconds=4)
    took = time.monotonic() - started

    assert not run.result.success
    assert f"script {script} ran past its timeout of 4 s and was stopped" in run.failure
    assert "started" in run.failure  # its last lines
    assert took < 30
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or \
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} still runs"


# ---------------------------------------------------------------- requirements


def _venv_identity(venv: Path) -> tuple[int, int]:
    """(inode of the environment's folder, mtime_ns of its pyvenv.cfg)."""
    return venv.resolve().stat().st_ino, (venv / "pyvenv.cfg").stat().st_mtime_ns


@pytest.mark.timeout(600)
def test_requirements_install_once_into_a_cached_venv(instance: dg.DagsterInstance, tmp_path: Path,
                                                      stagecoach_env: Path):
    script = write(tmp_path / "uses_tomli.py", """
        import sys
        import tomli
        print("tomli", tomli.__file__)
        print("prefix", sys.prefix)
        print("value", tomli.loads("answer = 42")["answer"])
    """)
    venvs = stagecoach_env / "data" / "script_venvs"  # the default place
    venv = venvs / venv_key(["tomli==2.0.1"])

    started = time.monotonic()
    first = run_in_job(instance, script, requirements=["tomli==2.0.1"])
    first_seconds = time.monotonic() - started
    assert first.result.success, first.failure
    assert "value 42" in first.event_log
    assert f"tomli {venv}/lib/" in first.event_log  # imported from the cached venv
    assert f"prefix {venv}\n" in first.event_log
    identity = _venv_identity(venv)

    started = time.monotonic()
    # The same set, written otherwise.
    second = run_in_job(instance, script, requirements=[" tomli==2.0.1"])
    second_seconds = time.monotonic() - started
    assert second.result.success, second.failure
    assert "value 42" in second.event_log
    assert _venv_identity(venv) == identity  # reused, not recreated
    assert "installing" not in second.event_log
    assert sorted(p.name for p in venvs.iterdir() if not p.name.startswith(".")) == sorted(
        [venv.name, venv.resolve().name])  # the link and its one build, nothing else
    print(f"\nfirst run (venv built) {first_seconds:.1f} s, second (reused) {second_seconds:.1f} s")


@pytest.mark.timeout(600)
def test_concurrent_creators_build_the_venv_once(tmp_path: Path):
    """Two creators arrive while a third (this test) holds the build lock: when it lets go,
    one of them builds and the other uses that build."""
    venvs = tmp_path / "venvs"
    venvs.mkdir()
    key = venv_key(["tomli==2.0.1"])
    results: list[Path] = []
    logs: list[str] = []

    def create() -> None:
        results.append(script_venv(["tomli==2.0.1"], venvs, logs.append, tmp_path / "s.py"))

    with open(venvs / f".{key}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        threads = [threading.Thread(target=create) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(logs) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logs == ["waiting for another run that is installing tomli==2.0.1"] * 2
        fcntl.flock(held, fcntl.LOCK_UN)
    for thread in threads:
        thread.join()

    assert len(results) == 2 and results[0] == results[1]
    assert sum(line.startswith("installing tomli==2.0.1") for line in logs) == 1
    builds = [p for p in venvs.iterdir() if ".build-" in p.name]
    assert builds == [results[0].resolve()]


@pytest.mark.bad_input
@pytest.mark.timeout(600)
def test_a_requirement_that_cannot_install_is_named(instance: dg.DagsterInstance, tmp_path: Path):
    script = write(tmp_path / "s.py", "print('never runs')\n")
    venvs = tmp_path / "venvs"
    run = run_in_job(instance, script, requirements=["tomli==2.0.1", "tomli-w==0.0.999"],
                     venv_root=venvs)

    assert not run.result.success
    assert "installing requirements failed for requirement 'tomli-w==0.0.999'" in run.failure
    assert "'tomli==2.0.1'" not in run.failure
    assert "No matching distribution found for tomli-w==0.0.999" in run.failure
    assert "never runs" not in run.event_log
    assert [p.name for p in venvs.iterdir() if not p.name.startswith(".")] == []  # no half venv


@pytest.mark.bad_input
def test_a_pip_option_is_not_a_requirement(tmp_path: Path):
    with pytest.raises(ScriptError, match=r"requirement '--index-url=http://evil' is not a "
                                          r"package specifier"):
        script_venv(["--index-url=http://evil"], tmp_path, [].append, tmp_path / "s.py")


def test_the_interpreter_without_requirements_is_the_workers(
        instance: dg.DagsterInstance, tmp_path: Path):
    script = write(tmp_path / "which.py", "import sys\nprint('python', sys.prefix)\n")
    run = run_in_job(instance, script)
    assert f"python {sys.prefix}" in run.event_log
