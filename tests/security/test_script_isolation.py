"""What a Python step's script can reach and what its output shows.

Real scripts run as real processes inside a real op (tests/integration/test_python_script.py's
`run_in_job`), SSH commands on the real sshd fixture. The worker (this pytest process) is given
fake secrets in its own environment first, named so that no name-based filter catches them.

The script uid mode needs root (to switch to a uid of STAGECOACH_SCRIPT_UIDS, which needs no
passwd entry). This machine's Python lives under /root (mode 0700), which no other user may
enter, so in that mode the scripts run on a copy of the system Python 3.11 in a world-readable
folder, with dagster-pipes copied in: in production the worker's interpreter is world-readable
(see the README).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import dagster_pipes
import pytest

from resources.processes.masking import MASK, MAX_LINE_CHARS, Masker
from resources.processes.python_script import INHERITED_ENV
from resources.processes.ssh_command import SshCommandError
from tests.conftest import need_server
from tests.integration.test_automations import write_spec
from tests.integration.test_python_script import run_in_job, write
from tests.integration.test_ssh_command import Recorder, ssh_resource

pytestmark = [pytest.mark.security, pytest.mark.timeout(240)]

SCRIPT_UIDS = range(230000, 230256)  # no account of this machine has one of these
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
PIPES_VARIABLES = {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
SET_BY_STAGECOACH = {"TMPDIR", "PYTHONUNBUFFERED"}


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as opened:
        yield opened


@pytest.fixture(scope="session")
def script_uids() -> range:
    """The uids scripts run as, one per step (switching to one needs root)."""
    if os.geteuid() != 0:
        need_server("script uids", "switching to another uid needs root")
    return SCRIPT_UIDS


@pytest.fixture(scope="session")
def shared_folder() -> Iterator[Path]:
    """A folder every user may read (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="stagecoach-isolation-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def readable_python(shared_folder: Path) -> Path:
    """A Python 3.11 with dagster-pipes that the script user can run."""
    if not SYSTEM_PYTHON.exists():
        need_server("system python", f"{SYSTEM_PYTHON} is not installed")
    venv = shared_folder / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)],
                   check=True, capture_output=True, timeout=120)
    [site] = venv.glob("lib/python3.*/site-packages")
    shutil.copytree(Path(dagster_pipes.__file__).parent, site / "dagster_pipes")
    subprocess.run(["chmod", "-R", "a+rX", str(shared_folder)], check=True, timeout=30)
    return venv / "bin" / "python"


@pytest.fixture
def worker_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Secrets in the worker's own environment that no step is given; names that do not look
    secret (a URL with a password, a webhook URL with a token) and names that do."""
    planted = {"CRM_DB_URL": f"postgresql://crm:{secrets.token_hex(8)}@127.0.0.1/crm",
               "OPS_HOOK_URL": f"https://hooks.example.test/{secrets.token_hex(8)}",
               "SLACK_BOT_TOKEN": f"xoxb-{secrets.token_hex(8)}"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    return planted


@pytest.fixture(params=["worker", "script user"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """run_python_script's options for each mode: as the worker, or as a script uid."""
    if request.param == "worker":
        return {}
    uids = request.getfixturevalue("script_uids")
    monkeypatch.setattr(sys, "executable", str(request.getfixturevalue("readable_python")))
    return {"script_uids": uids}


SNOOP = """
    import os, sys
    print("uid", os.getuid())
    print("variables", " ".join(sorted(os.environ)))
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as f:
            parent = f.read()
    except OSError as refused:
        print("parent environ refused:", type(refused).__name__)
    else:
        print("parent environ read:", len(parent), "bytes")  # (never printed as such)
"""


def test_a_script_gets_only_the_allow_list_and_its_env(
        instance: dg.DagsterInstance, shared_folder: Path, worker_secrets: dict[str, str],
        mode: dict[str, str]):
    script = write(shared_folder / f"snoop_{secrets.token_hex(4)}.py", SNOOP)
    env = {"STAGECOACH_PARAM_REGION": "eu", "STAGECOACH_DS": "2026-12-01",
           "STAGECOACH_RUN_ID": "r1", "STAGECOACH_TRIGGERED_BY": "manual",
           "STAGECOACH_CONN_CRM_URL": worker_secrets["CRM_DB_URL"], "GIVEN": "yes"}
    run = run_in_job(instance, script, env=env, secret_names=["STAGECOACH_CONN_CRM_URL"],
                     **mode)

    assert run.result.success, run.failure
    [names] = [line.split()[1:] for line in run.event_log.splitlines()
               if line.startswith("variables")]
    allowed = set(INHERITED_ENV) | set(env) | PIPES_VARIABLES | SET_BY_STAGECOACH
    assert set(names) <= allowed, set(names) - allowed
    assert set(env) <= set(names)  # what the step gives does arrive
    assert not {"CRM_DB_URL", "OPS_HOOK_URL", "SLACK_BOT_TOKEN"} & set(names)
    for value in worker_secrets.values():
        assert value not in run.everything


def test_as_a_script_uid_the_workers_environ_is_out_of_reach(
        instance: dg.DagsterInstance, shared_folder: Path, worker_secrets: dict[str, str],
        script_uids: range, readable_python: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "executable", str(readable_python))
    script = write(shared_folder / f"snoop_{secrets.token_hex(4)}.py", SNOOP + """
    for name in ("HOME", "TMPDIR"):  # its private folder, writable
        with open(os.path.join(os.environ[name], "probe"), "w") as f:
            f.write("ok")
    print("home and tmp writable")
    """)
    run = run_in_job(instance, script, script_uids=script_uids)

    assert run.result.success, run.failure
    [uid] = [int(line.split()[1]) for line in run.event_log.splitlines()
             if line.startswith("uid ")]
    assert uid in script_uids
    assert "parent environ refused: PermissionError" in run.event_log
    assert "home and tmp writable" in run.event_log
    for value in worker_secrets.values():
        assert value not in run.everything


def test_uid_ranges_with_system_or_existing_users_are_refused(instance: dg.DagsterInstance,
                                                               tmp_path: Path):
    script = write(tmp_path / "hello.py", "print('hello from the script')\n")
    nobody = pwd.getpwnam("nobody")
    for uids, said in (("0-100", "no system uids"), ("lots", "is not a uid range"),
                       (f"{nobody.pw_uid - 1}-{nobody.pw_uid}", "holds the uid of user(s) nobody")):
        run = run_in_job(instance, script, script_uids=uids)
        assert not run.result.success
        assert said in run.failure and "STAGECOACH_SCRIPT_UIDS" in run.failure
        assert "hello from the script" not in run.event_log


def test_a_secret_logged_or_reported_through_pipes_is_masked(
        instance: dg.DagsterInstance, shared_folder: Path, mode: dict[str, str]):
    token = secrets.token_urlsafe(18)
    script = write(shared_folder / f"pipes_{secrets.token_hex(4)}.py", """
        import os
        from dagster_pipes import open_dagster_pipes
        token = os.environ["API_TOKEN"]
        with open_dagster_pipes() as pipes:
            pipes.log.info(f"calling the API with {token}")
            pipes.log.warning(f"quoted: {token!r}")
            pipes.report_custom_message({"token": token, "rows": 2, token: "as a key"})
    """)
    run = run_in_job(instance, script, env={"API_TOKEN": token}, secret_names=["API_TOKEN"],
                     **mode)

    assert run.result.success, run.failure
    assert f"calling the API with {MASK}" in run.event_log
    assert f"quoted: '{MASK}'" in run.event_log
    assert run.outcome.metadata == {"token": MASK, "rows": 2, MASK: "as a key"}
    assert token not in run.everything and token not in repr(run.outcome)


def test_a_secret_straddling_the_64_kib_line_split_is_masked(
        instance: dg.DagsterInstance, tmp_path: Path):
    token = secrets.token_urlsafe(24)  # 32 characters
    script = write(tmp_path / "long_line.py", f"""
        import os, sys
        token = os.environ["API_TOKEN"]
        for stream in (sys.stdout, sys.stderr):  # the line is read in 65536-byte pieces
            stream.write("x" * ({MAX_LINE_CHARS} - 10) + token + " end\\n")
            stream.flush()
        sys.exit(3)  # the error's tail shows the stderr line
    """)
    run = run_in_job(instance, script, env={"API_TOKEN": token}, secret_names=["API_TOKEN"])

    assert not run.result.success
    assert run.failure.count(MASK) >= 1 and f"{MASK} end" in run.everything
    for piece in (token, token[:10], token[10:]):  # neither half of it on either side
        assert piece not in run.everything


def test_a_connection_host_and_a_literal_env_stay_visible(
        stagecoach_env: Path, monkeypatch: pytest.MonkeyPatch):
    password, token = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    monkeypatch.setenv("CRM_DB_URL", "duckdb:///:memory:")
    monkeypatch.setenv("VENDOR_PASSWORD", password)
    monkeypatch.setenv("SCORE_TOKEN", token)
    (stagecoach_env / "workflows").mkdir(exist_ok=True)
    (stagecoach_env / "workflows" / "show.py").write_text(
        "import os\n"
        "for name in ('HOST', 'PORT', 'USERNAME', 'PASSWORD'):\n"
        "    print(name.lower(), os.environ['STAGECOACH_CONN_VENDOR_' + name])\n"
        "print('target', os.environ['TARGET'], 'token', os.environ['TOKEN'])\n")
    defs = write_spec(stagecoach_env, """
  show:
    steps:
      - kind: python
        script: show.py
        connections: [vendor]
        env: {TARGET: 127.0.0.1, TOKEN: {env: SCORE_TOKEN}}
""", extra="""
  vendor: {kind: sftp, host: 127.0.0.1, port: 2222, username: vendor_user,
           password: {env: VENDOR_PASSWORD}}
""")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("auto_show_job").execute_in_process(instance=instance)
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))

    for shown in ("host 127.0.0.1", "port 2222", "username vendor_user",
                  f"password {MASK}", f"target 127.0.0.1 token {MASK}"):
        assert shown in logs
    assert password not in logs and token not in logs


def test_a_secret_too_short_to_mask_is_refused_before_the_script_runs(
        instance: dg.DagsterInstance, tmp_path: Path):
    ran = tmp_path / "ran"
    script = write(tmp_path / "short.py", f"open({str(ran)!r}, 'w').write('ran')\n")
    run = run_in_job(instance, script, env={"PIN": "4821"}, secret_names=["PIN"])

    assert not run.result.success
    assert "secret PIN is shorter than 6 characters" in run.failure
    assert "4821" not in run.everything and not ran.exists()


# ---------------------------------------------------------------- SSH commands


def test_ssh_output_masks_a_secret_split_across_reads_and_lines(sshd):
    token = secrets.token_urlsafe(24)
    script = (f'head -c {MAX_LINE_CHARS - 10} /dev/zero | tr "\\0" x\n'
              'printf %s "${API_TOKEN:0:10}"; sleep 0.5\n'  # two reads, at the line split
              'printf "%s end\\n" "${API_TOKEN:10}"\n'
              'echo "host $DB_HOST"\n'
              'echo "careless: $API_TOKEN"; exit 4\n')
    log = Recorder()
    result = ssh_resource(sshd).run(script, log, env={"API_TOKEN": token, "DB_HOST": "127.0.0.1"},
                                    secret_names=["API_TOKEN"])

    assert result.exit_code == 4
    assert log.lines[-2:] == ["host 127.0.0.1", f"careless: {MASK}"]
    everything = "\n".join(log.lines) + result.tail
    assert f"{MASK} end" in everything
    for piece in (token, token[:10], token[10:]):
        assert piece not in everything


def test_ssh_refuses_a_secret_too_short_to_mask(sshd):
    with pytest.raises(SshCommandError, match="secret PIN is shorter than 6") as refused:
        ssh_resource(sshd).run("echo hi", Recorder(), env={"PIN": "4821"}, secret_names=["PIN"])
    assert "4821" not in str(refused.value)


# ---------------------------------------------------------------- the masker itself


def fed(masker: Masker, chunks: list[str]) -> str:
    stream = masker.stream()
    return "".join(stream.feed(chunk) for chunk in chunks) + stream.end()


def test_the_stream_masker_catches_a_secret_cut_anywhere():
    secret = "s3cr3t-" + secrets.token_hex(6)
    masker = Masker({"TOKEN": secret, "OTHER": secret + "-longer"})
    text = f"a {secret} b {secret}-longer c {secret}"
    for cut in range(len(text) + 1):
        assert fed(masker, [text[:cut], text[cut:]]) == f"a {MASK} b {MASK} c {MASK}"
    assert fed(masker, list(text)) == f"a {MASK} b {MASK} c {MASK}"  # one character at a time


def test_the_stream_masker_passes_a_whole_line_on_at_once():
    stream = Masker({"TOKEN": "s3cr3t-" + secrets.token_hex(6)}).stream()
    assert stream.feed("127.0.0.1 is up\nnext") == "127.0.0.1 is up\n"  # "next" may start it
    assert stream.end() == "next"


def test_encoded_forms_are_masked_and_a_masker_without_secrets_changes_nothing():
    secret = "p@ss/w0rd+" + secrets.token_hex(4)
    masker = Masker({"PASSWORD": secret})
    url = f"postgresql://u:{secret.replace('@', '%40').replace('/', '%2F').replace('+', '%2B')}@h"
    assert masker.text(url) == f"postgresql://u:{MASK}@h"
    assert Masker({}).text("127.0.0.1 " + secret) == "127.0.0.1 " + secret
    assert Masker({"EMPTY": ""}).text("nothing to hide") == "nothing to hide"
