"""The security review's attacks on Python-step scripts, each replayed against real processes:
a leftover process racing the worker for its Pipes files, a script reading another step's
/proc/<pid>/environ, a requirement whose build code runs as the worker, root-only files
reported as output, and secrets that slipped past the masker.

Scripts run as uids of STAGECOACH_SCRIPT_UIDS (root switches to them; no passwd entry), on the
world-readable Python of test_script_isolation.py.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import secrets
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import dagster as dg
import dagster_pipes
import pytest

from assets import spec
from resources.processes.masking import MASK, Masker
from resources.processes.python_script import ScriptError, script_venv
from resources.processes.script_uids import lease_uid, private_root, processes_of
from tests.integration.test_python_script import run_in_job, write
from tests.security.test_script_isolation import (  # noqa: F401 (fixtures)
    instance,
    readable_python,
    script_uids,
    shared_folder,
)

pytestmark = [pytest.mark.security, pytest.mark.timeout(300)]

PASSWORD_NAME = "STAGECOACH_CONN_X_PASSWORD"
WORKER_PYTHON = sys.executable  # (the tests in script uid mode swap sys.executable)


@pytest.fixture
def as_uids(script_uids: range, readable_python: Path,  # noqa: F811 (fixtures)
            monkeypatch: pytest.MonkeyPatch) -> dict[str, range]:
    monkeypatch.setattr(sys, "executable", str(readable_python))
    return {"script_uids": script_uids}


@pytest.fixture
def drop(shared_folder: Path) -> Path:  # noqa: F811 (a fixture)
    """A folder every uid may write to: where the attacks leave what they found."""
    folder = shared_folder / f"drop_{secrets.token_hex(4)}"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


def wait_for(path: Path, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


# ---------------------------------------------------------------- leftover processes, Pipes files


LURKER = """
    import json, os, sys, time, zlib, base64
    messages = json.loads(zlib.decompress(base64.b64decode(os.environ["DAGSTER_PIPES_MESSAGES"])))
    folder = os.path.dirname(messages["path"])
    try:  # the worker's folder for the Pipes files: the script must not write there
        os.symlink("{victim}", os.path.join(folder, "planted"))
        print("pipes folder writable: yes")
    except OSError as refused:
        print("pipes folder writable: no", type(refused).__name__)
    if os.fork() == 0:  # lurk: plant a link in every step folder that appears after this one
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        parent, seen = os.path.dirname(folder), set()
        end = time.time() + 60
        while time.time() < end:
            for name in os.listdir(parent):
                if name not in seen:
                    seen.add(name)
                    try:
                        os.symlink("{victim}", os.path.join(parent, name, "pipes_messages.jsonl"))
                    except OSError:
                        pass
            time.sleep(0.001)
        os._exit(0)
    with open("{drop}/lurker.pid", "w") as f:
        f.write(f"{{os.getpid()}} {{os.getuid()}}\\n")
    print("left a lurker behind")
"""


def test_a_leftover_process_cannot_outlive_its_step_nor_touch_the_next_steps_pipes_files(
        instance: dg.DagsterInstance, shared_folder: Path, drop: Path,  # noqa: F811
        as_uids: dict[str, range]):
    victim = drop / "victim"
    victim.write_text("root's own file\n")
    victim.chmod(0o600)
    lurk = write(shared_folder / f"lurk_{secrets.token_hex(3)}.py",
                 LURKER.format(victim=victim, drop=drop))
    benign = write(shared_folder / f"benign_{secrets.token_hex(3)}.py",
                   "import os, time; time.sleep(0.5); print('benign done as', os.getuid())\n")

    first = run_in_job(instance, lurk, **as_uids)
    assert first.result.success, first.failure
    assert "pipes folder writable: no PermissionError" in first.event_log
    pid, uid = wait_for(drop / "lurker.pid").split()
    lurker, used_uids = int(pid) + 1, {int(uid)}  # (the fork came right after)
    for _ in range(3):  # the review's race was won 2 times in 5
        run = run_in_job(instance, benign, **as_uids)
        assert run.result.success, run.failure
        [benign_uid] = re.findall(r"benign done as (\d+)", run.event_log)
        used_uids.add(int(benign_uid))

    # No process is left under a uid these steps ran as. (Only theirs: other tests, in another
    # pytest-xdist worker or another checkout, may be running steps under other uids of the
    # range right now.)
    assert used_uids <= set(as_uids["script_uids"])
    assert not any(processes_of(uid) for uid in used_uids), used_uids
    assert not Path(f"/proc/{lurker}/cmdline").exists() or b"lurk_" not in Path(
        f"/proc/{lurker}/cmdline").read_bytes()
    info = victim.lstat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    assert victim.read_text() == "root's own file\n"


# ---------------------------------------------------------------- one uid per step


WATCHER = """
    import os, time
    if os.fork() == 0:  # watch every process this uid can see, copy what holds a password
        os.setsid()
        end = time.time() + 30
        while time.time() < end:
            for p in os.listdir("/proc"):
                if p.isdigit() and int(p) != os.getpid():
                    try:
                        data = open(f"/proc/{p}/environ", "rb").read()
                    except OSError:
                        continue
                    if b"PASSWORD_NAME" in data:
                        open("DROP/stolen", "ab").write(data + b"\\n")
            time.sleep(0.02)
        os._exit(0)
    print("watcher spawned")
""".replace("PASSWORD_NAME", PASSWORD_NAME)


def test_a_process_left_by_one_step_cannot_read_a_later_steps_environment(
        instance: dg.DagsterInstance, shared_folder: Path, drop: Path,  # noqa: F811
        as_uids: dict[str, range]):
    watcher = write(shared_folder / f"watch_{secrets.token_hex(3)}.py",
                    WATCHER.replace("DROP", str(drop)))
    password = secrets.token_urlsafe(16)
    victim = write(shared_folder / f"victim_{secrets.token_hex(3)}.py",
                   "import time; time.sleep(1.5); print('used the password')\n")

    assert run_in_job(instance, watcher, **as_uids).result.success
    run = run_in_job(instance, victim, env={PASSWORD_NAME: password},
                     secret_names=[PASSWORD_NAME], **as_uids)

    assert run.result.success, run.failure
    time.sleep(0.2)
    assert not (drop / "stolen").exists()


def test_two_steps_at_once_run_as_different_uids_and_cannot_read_each_other(
        instance: dg.DagsterInstance, shared_folder: Path, drop: Path,  # noqa: F811
        as_uids: dict[str, range]):
    """The other step holds a uid of the range (as run_python_script does) while this one
    runs: this one gets another uid and cannot read the other's environment."""
    password = secrets.token_urlsafe(16)
    reader = write(shared_folder / f"reader_{secrets.token_hex(3)}.py", f"""
        import os
        pid, uid = map(int, open("{drop}/holder.pid").read().split())
        print("my uid", os.getuid(), "gid", os.getgid(), "groups", os.getgroups(), "theirs", uid)
        try:
            data = open(f"/proc/{{pid}}/environ", "rb").read()
            print("read their environ:", b"{PASSWORD_NAME}" in data)
        except OSError as refused:
            print("their environ refused:", type(refused).__name__)
    """)
    with lease_uid(as_uids["script_uids"]) as theirs:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={PASSWORD_NAME: password}, user=theirs, group=theirs, extra_groups=[])
        try:
            (drop / "holder.pid").write_text(f"{holder.pid} {theirs}\n")
            run = run_in_job(instance, reader, **as_uids)
        finally:
            holder.kill()
            holder.wait()

    assert run.result.success, run.failure
    assert "their environ refused: PermissionError" in run.event_log
    [line] = [line.split() for line in run.event_log.splitlines() if line.startswith("my uid")]
    mine, gid = int(line[2]), int(line[4])
    assert mine != theirs and mine in as_uids["script_uids"]
    assert gid == mine and "groups []" in " ".join(line)


def test_a_held_uid_is_not_given_to_another_step(script_uids: range):  # noqa: F811
    # Two uids just past the steps' range, picked at random: a step of another test (another
    # pytest-xdist worker, another checkout) could hold one of the range's own at this moment.
    start = script_uids.stop + 2 * secrets.randbelow(4000)
    pair = range(start, start + 2)
    with lease_uid(pair) as first, lease_uid(pair) as second:
        assert first != second
        with pytest.raises(Exception, match="are in use by running steps"), lease_uid(pair):
            pass


# ---------------------------------------------------------------- output files


def test_root_only_files_are_refused_as_output_files(
        instance: dg.DagsterInstance, shared_folder: Path, drop: Path,  # noqa: F811
        as_uids: dict[str, range]):
    (drop / "mine.csv").touch()
    os.symlink("/etc/shadow", drop / "shadow_link")
    cases = {"/proc/{ppid}/environ": "is in a system folder",
             "/etc/shadow": "belongs to uid 0, not to the script's uid",
             "shadow_link": "is a symbolic link"}
    for name, said in cases.items():
        printer = write(shared_folder / f"print_{secrets.token_hex(3)}.py", f"""
            import os
            print("STAGECOACH_OUTPUT_FILE=" + {name!r}.format(ppid=os.getppid())
                  if {name!r}.startswith("/") else "STAGECOACH_OUTPUT_FILE={drop}/{name}")
        """)
        run = run_in_job(instance, printer, **as_uids)
        assert not run.result.success, name
        assert said in run.failure and "reported the output file" in run.failure, run.failure

    # What the script wrote itself is accepted.
    writer = write(shared_folder / f"writer_{secrets.token_hex(3)}.py", f"""
        open("{drop}/own.csv", "w").write("id\\n1\\n")
        print("STAGECOACH_OUTPUT_FILE={drop}/own.csv")
    """)
    run = run_in_job(instance, writer, **as_uids)
    assert run.result.success, run.failure
    assert run.outcome.output_files == [str(drop / "own.csv")]


def test_the_workers_proc_files_are_refused_as_output_files_in_worker_mode(
        instance: dg.DagsterInstance, tmp_path: Path):  # noqa: F811
    script = write(tmp_path / "environ.py", """
        import os
        print(f"STAGECOACH_OUTPUT_FILE=/proc/{os.getppid()}/environ")
    """)
    run = run_in_job(instance, script)
    assert not run.result.success
    assert "is in a system folder" in run.failure


# ---------------------------------------------------------------- requirements


EVIL_BACKEND = """
import os
import re
def _pwn():
    with open({marker!r}, "w") as f:
        f.write(f"uid={{os.getuid()}} CRM_DB_URL={{os.environ.get('CRM_DB_URL')}}\\n")
def get_requires_for_build_wheel(config_settings=None):
    _pwn(); return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _pwn(); raise RuntimeError("stop")
def build_sdist(sdist_directory, config_settings=None):
    _pwn(); raise RuntimeError("stop")
"""
EVIL_PYPROJECT = """[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
[project]
name = "evil"
version = "1.0"
"""


def evil_package(folder: Path, marker: Path) -> Path:
    """The review's evilpkg: a project whose build backend records who ran it."""
    folder.mkdir()
    (folder / "backend.py").write_text(EVIL_BACKEND.format(marker=str(marker)))
    (folder / "pyproject.toml").write_text(EVIL_PYPROJECT)
    return folder


def test_a_direct_reference_requirement_is_refused_and_runs_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    marker = tmp_path / "pwned"
    package = evil_package(tmp_path / "evilpkg", marker)
    monkeypatch.setenv("CRM_DB_URL", "postgresql://crm:WORKERSECRET123@127.0.0.1/crm")
    for requirement in (f"evil @ file://{package}", str(package), "-e " + str(package)):
        with pytest.raises(ScriptError, match="is not a package specifier"):
            script_venv([requirement], tmp_path / "venvs", [].append, tmp_path / "s.py")
    assert not marker.exists()


def test_a_spec_naming_a_url_requirement_is_refused_at_load():
    step = {"kind": "python", "script": "s.py"}
    spec.PythonStep.model_validate({**step, "requirements": ["tomli[a]>=2,<3"]})
    for requirement in ("evil @ file:///tmp/review/evilpkg", "./evilpkg", "--pre",
                        "git+https://example.test/evil.git"):
        said = re.escape(f"requirement {requirement!r} is not accepted")
        with pytest.raises(ValueError, match=said):
            spec.PythonStep.model_validate({**step, "requirements": [requirement]})


def test_an_sdist_on_the_index_is_not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Wheels only: a source distribution's build code never runs (not as the worker, not
    with its secrets)."""
    marker = tmp_path / "pwned"
    package = evil_package(tmp_path / "evil-1.0", marker)
    (package / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    index = tmp_path / "index"
    index.mkdir()
    with tarfile.open(index / "evil-1.0.tar.gz", "w:gz") as sdist:
        sdist.add(package, arcname="evil-1.0")
    pipes_wheel(index)
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("CRM_DB_URL", "postgresql://crm:WORKERSECRET123@127.0.0.1/crm")

    with pytest.raises(ScriptError, match=r"installing requirements failed for requirement "
                                          r"'evil==1\.0'"):
        script_venv(["evil==1.0"], tmp_path / "venvs", [].append, tmp_path / "s.py")
    assert not marker.exists()


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A pure-Python wheel of `files` (path in site-packages → content), for an offline index."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {**files,
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                           f"Version: {version}\n".encode(),
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                        b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist}.dist-info/RECORD,,")
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pipes_wheel(folder: Path) -> Path:
    """dagster-pipes, as installed here, as a wheel (every venv gets it)."""
    source = Path(dagster_pipes.__file__).parent
    files = {f"dagster_pipes/{p.relative_to(source)}": p.read_bytes()
             for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return make_wheel(folder, "dagster-pipes", importlib.metadata.version("dagster-pipes"), files)


@pytest.mark.timeout(600)
def test_requirements_install_as_the_script_uid_into_a_read_only_venv(
        instance: dg.DagsterInstance, shared_folder: Path,  # noqa: F811
        as_uids: dict[str, range], monkeypatch: pytest.MonkeyPatch):
    index = shared_folder / f"index_{secrets.token_hex(3)}"
    index.mkdir()
    pipes_wheel(index)
    make_wheel(index, "whoami-pkg", "1.0", {"whoami_pkg.py": b"WHO = 'from the wheel'\n"})
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    venvs = shared_folder / f"venvs_{secrets.token_hex(3)}"
    script = write(shared_folder / f"uses_{secrets.token_hex(3)}.py", """
        import os, sys, whoami_pkg
        print("imported", whoami_pkg.WHO)
        try:
            open(os.path.join(sys.prefix, "planted"), "w")
            print("venv writable: yes")
        except OSError as refused:
            print("venv writable: no", type(refused).__name__)
    """)
    run = run_in_job(instance, script, requirements=["whoami-pkg==1.0"], venv_root=venvs,
                     **as_uids)

    assert run.result.success, run.failure
    assert "imported from the wheel" in run.event_log
    assert "venv writable: no PermissionError" in run.event_log
    [build] = [p for p in venvs.iterdir() if ".build-" in p.name]
    owners = {p.lstat().st_uid for p in [build, *build.rglob("*")]}
    assert owners == {0}
    assert not any(p.lstat().st_mode & 0o022 for p in [build, *build.rglob("*")]
                   if not p.is_symlink())


# ---------------------------------------------------------------- masking gaps


def test_a_numeric_secret_in_metadata_and_an_ascii_escaped_secret_are_masked():
    password = "pässwörd-" + secrets.token_hex(4)
    masker = Masker({"PIN_CODE": "48213377", "PASSWORD": password})
    assert masker.value({"pin": 48213377, "rows": 2, "ratio": 0.5, "ok": True}) == {
        "pin": MASK, "rows": 2, "ratio": 0.5, "ok": True}
    assert masker.text(f"repr {password!a}") == f"repr '{MASK}'"


def test_a_secret_printed_through_ascii_is_masked(
        instance: dg.DagsterInstance, tmp_path: Path):  # noqa: F811 (a fixture)
    password = "pässwörd-" + secrets.token_hex(6)
    script = write(tmp_path / "ascii.py", """
        import os
        from dagster_pipes import open_dagster_pipes
        password = os.environ["PASSWORD"]
        print("ascii", ascii(password))
        with open_dagster_pipes() as pipes:
            pipes.report_custom_message({"pin": int(os.environ["PIN"]), "rows": 2})
    """)
    run = run_in_job(instance, script, env={"PASSWORD": password, "PIN": "48213377"},
                     secret_names=["PASSWORD", "PIN"])

    assert run.result.success, run.failure
    assert f"ascii '{MASK}'" in run.event_log
    assert ascii(password)[1:-1] not in run.everything
    assert run.outcome.metadata == {"pin": MASK, "rows": 2}


# ---------------------------------------------------------------- the worker's files


def test_under_the_units_umask_a_script_cannot_read_the_warehouse(
        instance: dg.DagsterInstance, shared_folder: Path,  # noqa: F811
        as_uids: dict[str, range]):
    units = sorted(Path("deploy/production/systemd").glob("*.service"))
    umasks = {unit.name: re.findall(r"^UMask=(\d+)$", unit.read_text(), re.M) for unit in units}
    assert units and all(found == ["0027"] for found in umasks.values()), umasks
    data = shared_folder / f"data_{secrets.token_hex(3)}"
    data.mkdir()
    data.chmod(0o755)  # even a folder others may enter
    subprocess.run([WORKER_PYTHON, "-c", "import duckdb, os, sys; os.umask(0o027); "
                    "duckdb.connect(sys.argv[1]).execute('create table webhook_requests(i int)')",
                    str(data / "warehouse.duckdb")], check=True, timeout=60)
    script = write(shared_folder / f"atk3_{secrets.token_hex(3)}.py", f"""
        try:
            open("{data}/warehouse.duckdb", "rb").read()
            print("read the warehouse")
        except OSError as refused:
            print("warehouse refused:", type(refused).__name__)
    """)
    run = run_in_job(instance, script, **as_uids)

    assert run.result.success, run.failure
    assert "warehouse refused: PermissionError" in run.event_log


def test_under_the_units_umask_a_script_still_reaches_its_home_and_pipes_files(
        instance: dg.DagsterInstance, shared_folder: Path,  # noqa: F811
        as_uids: dict[str, range]):
    script = write(shared_folder / f"umask_{secrets.token_hex(3)}.py", """
        import os
        from dagster_pipes import open_dagster_pipes
        open(os.path.join(os.environ["HOME"], "probe"), "w").write("ok")
        with open_dagster_pipes() as pipes:
            pipes.report_custom_message({"home": "writable"})
    """)
    script.chmod(0o644)
    old = os.umask(0o027)
    try:
        private_root().chmod(0o710)  # as a mkdir under umask 0027 leaves it
        run = run_in_job(instance, script, **as_uids)
    finally:
        os.umask(old)

    assert run.result.success, run.failure
    assert run.outcome.metadata == {"home": "writable"}


def test_the_shared_script_user_setting_is_refused_saying_what_to_set(
        monkeypatch: pytest.MonkeyPatch):
    from resources.settings import script_uids as setting

    monkeypatch.setenv("STAGECOACH_SCRIPT_USER", "stagecoach-script")
    with pytest.raises(ValueError, match="set STAGECOACH_SCRIPT_UIDS=200000-265535 instead"):
        setting()
    monkeypatch.delenv("STAGECOACH_SCRIPT_USER")
    monkeypatch.setenv("STAGECOACH_SCRIPT_UIDS", "200000-265535")
    assert setting() == "200000-265535"
