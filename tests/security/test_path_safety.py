"""Paths and file names cannot leave a connection's base folder or bucket prefix, and archives
are refused before anything unpacks them.

The rule lives in one place (resources/connections/files.py: `path_problem`); these tests hold every
connection kind to it with the conformance suite's endpoints, whose independent client (the
server's folder, or boto3) sees everything the server holds outside the base: an attempted
escape must leave nothing there. Workflow tests check that a templated path or name that would
escape fails the run naming the activation or courier, the key and the value.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from resources.connections.files import (
    MAX_COMPRESSION_RATIO,
    UnsafeArchive,
    UnsafePath,
    check_archive,
    checked_file_name,
    checked_template_path,
    safe_relative,
)
from resources.connections.folder import FolderResource
from tests.endpoints import Endpoint
from tests.integration.test_file_connections import KINDS
from tests.specs import NAME_COLUMNS, people_spec, write_workflow

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

# A name no earlier run left behind. Under pytest-xdist every worker collects this module and
# must see the same parameters, so the run's id (shared by its workers) is taken when there is one.
ESCAPE_MARK = f"escape-{(os.environ.get('PYTEST_XDIST_TESTRUNUID') or uuid.uuid4().hex)[:8]}"
ESCAPES = [
    "../x.csv",
    "../../x.csv",
    "a/../../x.csv",
    "a/b/../../../x.csv",
    "..",
    "in/..",
    f"/tmp/{ESCAPE_MARK}.csv",
    "C:/x.csv",
    "a\\..\\..\\x.csv",
    "..\\x.csv",
    "a\x00.csv",
    "a/\n/x.csv",
    "a\r\nDELE x.csv",  # an FTP command smuggled into a path
]


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    return request.getfixturevalue(f"{request.param}_files")


@pytest.mark.parametrize("bad", ESCAPES, ids=repr)
def test_an_escape_is_refused_and_leaves_nothing_outside_the_base(
        endpoint: Endpoint, bad: str, tmp_path: Path):
    assert endpoint.outside is not None, f"{endpoint.kind}: the endpoint has no outside witness"
    local = tmp_path / "x.csv"
    local.write_bytes(b"id\n1\n")
    before = endpoint.outside()
    conn = endpoint.connection

    for value, attempt in ((bad, lambda: conn.upload(local, bad)),
                           (bad, lambda: conn.upload(local, bad, False)),
                           (bad, lambda: conn.list_files(bad)),
                           (f"{bad}/*.csv", lambda: conn.list_files(f"{bad}/*.csv")),
                           (bad, lambda: conn.download(bad, tmp_path / "got.csv"))):
        with pytest.raises(UnsafePath) as refused:
            attempt()
        assert repr(value) in str(refused.value)
        assert "must stay inside the connection's base folder or bucket prefix" in \
            str(refused.value)

    assert endpoint.outside() == before
    assert endpoint.listing(".") == {}
    assert not (tmp_path / "got.csv").exists()
    assert not Path(f"/tmp/{ESCAPE_MARK}.csv").exists()


def test_paths_inside_the_base_still_work(endpoint: Endpoint, tmp_path: Path):
    """The rule refuses escapes only: dots inside names and `a/./b` stay allowed."""
    local = tmp_path / "x.csv"
    local.write_bytes(b"id\n1\n")
    before = endpoint.outside() if endpoint.outside else {}
    assert endpoint.connection.upload(local, "in/./v1..2/..x.csv") == 5
    assert endpoint.read("in/v1..2/..x.csv") == b"id\n1\n"
    assert [f.path for f in endpoint.connection.list_files("in/v1..2/*.csv")] == \
        ["in/v1..2/..x.csv"]
    assert (endpoint.outside() if endpoint.outside else {}) == before


@pytest.mark.parametrize("bad", ESCAPES, ids=repr)
def test_the_one_rule_names_owner_key_and_value(bad: str):
    with pytest.raises(UnsafePath) as refused:
        checked_template_path("activation `partner`", "path", bad)
    message = str(refused.value)
    assert message.startswith(f"activation `partner` `path` rendered to {bad!r}, which ")
    assert "Fix the template" in message
    with pytest.raises(UnsafePath, match=r"^courier `orders` `file.name` rendered to "):
        checked_file_name("courier `orders`", "file.name", bad)
    with pytest.raises(UnsafePath):
        safe_relative(bad)


@pytest.mark.parametrize("name", ["", ".", "a/b.csv", "out/"])
def test_a_file_name_is_one_plain_name(name: str):
    with pytest.raises(UnsafePath, match="not one plain file name"):
        checked_file_name("activation `x`", "file.name", name)


def test_good_paths_are_normalised():
    assert checked_template_path("activation `x`", "path", "") == "."
    assert checked_template_path("activation `x`", "path", "out/./2026-11-07/") == \
        "out/2026-11-07"
    assert checked_file_name("activation `x`", "file.name", "a..b.csv") == "a..b.csv"


# ---------------------------------------------------------------- archives (xlsx are zips)


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize("member", ["../evil.xml", "xl/../../evil.xml", "/etc/evil.xml",
                                    "xl\\..\\..\\evil.xml", "C:/evil.xml", "xl/e\x01vil.xml"],
                         ids=repr)
def test_an_archive_with_an_escaping_member_is_refused(member: str, tmp_path: Path):
    archive = make_zip(tmp_path / "book.xlsx", {"xl/workbook.xml": b"<x/>", member: b"x"})
    with pytest.raises(UnsafeArchive) as refused:
        check_archive(archive, "courier `sheet` file book.xlsx")
    message = str(refused.value)
    assert message.startswith("courier `sheet` file book.xlsx: member ")
    assert repr(member) in message and "outside its folder" in message


def test_a_zip_bomb_is_refused_by_ratio_and_by_total(tmp_path: Path):
    bomb = make_zip(tmp_path / "bomb.xlsx", {"xl/sheet1.xml": b"\0" * (64 * 1024 * 1024)})
    with pytest.raises(UnsafeArchive, match=f"more than {MAX_COMPRESSION_RATIO}x: a zip bomb"):
        check_archive(bomb, "bomb.xlsx")
    big = make_zip(tmp_path / "big.xlsx", {f"xl/s{i}.xml": uuid.uuid4().bytes * 4096
                                           for i in range(4)})
    check_archive(big, "big.xlsx")  # within the default limits
    with pytest.raises(UnsafeArchive, match=r"big.xlsx unpacks to 262,144 bytes, above the "
                                            r"limit of 100,000"):
        check_archive(big, "big.xlsx", max_unpacked_bytes=100_000)


def test_not_a_zip_is_named(tmp_path: Path):
    (tmp_path / "fake.xlsx").write_bytes(b"id,name\n1,a\n")
    with pytest.raises(UnsafeArchive, match=r"fake\.xlsx is not a readable zip archive"):
        check_archive(tmp_path / "fake.xlsx", "fake.xlsx")


# ---------------------------------------------------------------- in a workflow


def workflow_spec(root: Path, params: dict[str, str], activation: str,
                  courier_path: str = "people.csv", courier_format: str = "") -> Path:
    (root / "landing").mkdir(exist_ok=True)
    (root / "outbox").mkdir(exist_ok=True)
    (root / "landing" / "people.csv").write_text("id,name\n1,ada\n")
    rendered_params = ", ".join(f'{k}: "{v}"' for k, v in params.items())
    return write_workflow(root, "esc", people_spec(
        "esc", root / "landing",
        workflow=f"  owners: [team:data]\n  params: {{{rendered_params}}}",
        connections=f"  outbox: {{kind: folder, path: {root / 'outbox'}}}",
        courier=f'path: "{courier_path}"{courier_format}', columns=NAME_COLUMNS, rest=f"""\
queries:
  everyone:
    sql: "select customer_id, name from domain.people"
activations:
  partner:
    query: everyone
    to: outbox
{activation}"""))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if "data" not in p.relative_to(root).parts}


@pytest.mark.parametrize(("key", "activation", "value", "rendered"), [
    ("path", '    path: "{{ params.where }}"\n    file: {name: people.csv}', "../../escaped",
     "../../escaped"),
    ("path", '    path: "{{ params.where }}"\n    file: {name: people.csv}', f"/tmp/{ESCAPE_MARK}",
     f"/tmp/{ESCAPE_MARK}"),
    ("path", '    path: "out/{{ params.where }}"\n    file: {name: people.csv}', "..\\\\..",
     "out/..\\.."),
    ("file.name", '    file: {name: "{{ params.where }}"}', "../people.csv", "../people.csv"),
    ("file.name", '    file: {name: "{{ params.where }}.csv"}', "sub/people", "sub/people.csv"),
    ("seal.zip_name", '    file: {name: people.csv}\n    seal: {zip: true, zip_name: '
                      '"{{ params.where }}"}', "../people.zip", "../people.zip"),
])
def test_an_activation_template_that_escapes_fails_naming_it(
        stagecoach_env: Path, workflow_runner, key: str, activation: str, value: str,
        rendered: str):
    root = stagecoach_env
    folder = workflow_spec(root, {"where": value}, activation)
    before = tree(root)

    run = workflow_runner(folder, "esc")

    assert not run.success
    assert f"activation `partner` `{key}` rendered to {rendered!r}, which " in run.failures()
    assert tree(root) == before  # nothing delivered, inside or outside the outbox
    assert not Path(f"/tmp/{ESCAPE_MARK}").exists()


def test_a_courier_path_that_escapes_fails_naming_it(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    (root / "secret.csv").write_text("id,name\n9,outside\n")
    folder = workflow_spec(root, {"up": ".."}, "    file: {name: people.csv}",
                           courier_path="{{ params.up }}/secret.csv")

    run = workflow_runner(folder, "esc")

    assert not run.success
    assert "courier `people` `path` rendered to '../secret.csv', which goes up with '..'" in \
        run.failures()
    assert not (root / "outbox" / "people.csv").exists()


def test_an_xlsx_bomb_fails_the_courier(stagecoach_env: Path, workflow_runner):
    root = stagecoach_env
    folder = workflow_spec(root, {}, "    file: {name: people.csv}", courier_path="people.xlsx",
                           courier_format=", format: {type: xlsx}")
    make_zip(root / "landing" / "people.xlsx",
             {"[Content_Types].xml": b"<x/>", "xl/worksheets/sheet1.xml": b" " * (32 << 20)})

    run = workflow_runner(folder, "esc")

    assert not run.success
    assert "people.xlsx (xlsx): member 'xl/worksheets/sheet1.xml' unpacks" in run.failures()
    assert "a zip bomb?" in run.failures()


# ---------------------------------------------------------------- folder links


@pytest.fixture
def linked(tmp_path: Path) -> tuple[FolderResource, Path, Path]:
    """A folder connection's base with links in and out of it; `outside` holds a secret."""
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "in").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.csv").write_text("id\nsecret\n")
    (base / "in" / "good.csv").write_text("id\n1\n")
    (base / "in" / "passwd.csv").symlink_to("/etc/passwd")
    (base / "in" / "secret.csv").symlink_to(outside / "secret.csv")
    (base / "in" / "alias.csv").symlink_to("good.csv")  # inside the base: fine
    (base / "drop").symlink_to(outside)
    (base / "mirror").symlink_to(base / "in")  # a directory link inside the base: fine
    return FolderResource(path=str(base), connection_name="landing"), base, outside


def test_a_folder_lists_no_link_out_of_its_base(linked, caplog: pytest.LogCaptureFixture):
    conn, base, outside = linked
    with caplog.at_level("WARNING"):
        assert [f.path for f in conn.list_files("in/*.csv")] == ["in/alias.csv", "in/good.csv"]
    assert (f"connection `landing` list: skipped 'passwd.csv': {base / 'in' / 'passwd.csv'} is "
            "a symbolic link to /etc/passwd, outside the connection's base folder") in caplog.text
    assert f"{base / 'in' / 'secret.csv'} is a symbolic link to {outside / 'secret.csv'}" in \
        caplog.text
    assert [f.path for f in conn.list_files("mirror/*.csv")] == ["mirror/alias.csv",
                                                                 "mirror/good.csv"]
    with pytest.raises(UnsafePath) as refused:
        conn.list_files("drop/*.csv")
    assert f"{base / 'drop'} is a symbolic link to {outside}, outside the connection's base " \
           f"folder {base}; refused" in str(refused.value)
    assert refused.value.permanent


@pytest.mark.parametrize(("remote", "link", "target"), [
    ("in/passwd.csv", "in/passwd.csv", "/etc/passwd"),
    ("in/secret.csv", "in/secret.csv", "outside/secret.csv"),
    ("drop/secret.csv", "drop", "outside"),
])
def test_a_folder_reads_no_link_out_of_its_base(linked, remote: str, link: str, target: str,
                                               tmp_path: Path):
    conn, base, _ = linked
    target_path = target if target.startswith("/") else str(tmp_path / target)
    with pytest.raises(UnsafePath) as refused:
        conn.download(remote, tmp_path / "got.csv")
    assert f"{base / link} is a symbolic link to {target_path}" in str(refused.value)
    assert not (tmp_path / "got.csv").exists()
    assert conn.local_path(remote) is None  # never a path to open later: always a checked copy
    assert conn.download("in/alias.csv", tmp_path / "alias.csv") == 5  # a link inside works
    assert conn.download("mirror/good.csv", tmp_path / "good.csv") == 5


@pytest.mark.parametrize("remote", ["drop/partner.csv", "drop/new/partner.csv",
                                    "in/secret.csv"])
def test_a_folder_writes_through_no_link_out_of_its_base(linked, remote: str, tmp_path: Path):
    conn, base, outside = linked
    local = tmp_path / "x.csv"
    local.write_text("id\n2\n")
    before = sorted(p.name for p in outside.rglob("*"))
    for overwrite in (True, False):
        with pytest.raises(UnsafePath, match=r"is a symbolic link to .*, outside the "
                                             r"connection.s base folder"):
            conn.upload(local, remote, overwrite)
    assert sorted(p.name for p in outside.rglob("*")) == before
    assert (outside / "secret.csv").read_text() == "id\nsecret\n"
    assert conn.upload(local, "mirror/sent.csv") == 5  # through a link inside the base
    assert (base / "in" / "sent.csv").read_text() == "id\n2\n"


def test_a_folder_delivery_to_a_linked_outbox_fails_naming_the_link(stagecoach_env: Path,
                                                                    workflow_runner):
    root = stagecoach_env
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    folder = workflow_spec(root, {}, '    path: partner\n    file: {name: people.csv}')
    (root / "outbox" / "partner").symlink_to(elsewhere)

    run = workflow_runner(folder, "esc")

    assert not run.success
    assert f"{root / 'outbox' / 'partner'} is a symbolic link to {elsewhere}" in run.failures()
    assert "1 delivery refused (not retried" in run.failures()
    assert list(elsewhere.iterdir()) == []
    retried = [e for e in run.result.all_events
               if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == []  # the step's RetryPolicy did not fire: one attempt


def test_a_linked_landing_file_is_neither_loaded_nor_forwarded(stagecoach_env: Path,
                                                               workflow_runner):
    """`landing/drop/passwd.csv -> /etc/passwd` next to a good file: the good one goes."""
    root = stagecoach_env
    folder = workflow_spec(root, {}, "    courier: people\n    file: {}",
                           courier_path="drop/*.csv")
    workflow = folder / "esc.yaml"
    workflow.write_text(workflow.read_text().replace("    query: everyone\n", ""))
    (root / "landing" / "drop").mkdir()
    (root / "landing" / "drop" / "people.csv").write_text("id,name\n1,ada\n")
    (root / "landing" / "drop" / "passwd.csv").symlink_to("/etc/passwd")

    run = workflow_runner(folder, "esc")

    assert run.success, run.failures()
    assert run.metadata("courier", "people_file")["file_count"] == 1
    assert sorted(p.name for p in (root / "outbox").iterdir()) == ["people.csv"]
    assert "skipped 'passwd.csv'" in logs(run)


def logs(run) -> str:
    return "\n".join(e.message or "" for e in run.result.all_events) + "\n".join(
        r.user_message for r in run.instance.all_logs(run.result.run_id))


# ---------------------------------------------------------------- names a path cannot hold

ODD_NAMES = ["bad\\name.csv", "new\nline.csv", "bell\x07.csv", "tab\t.csv"]


def test_odd_landing_names_are_skipped_and_the_good_file_loads(stagecoach_env: Path,
                                                               workflow_runner):
    root = stagecoach_env
    folder = workflow_spec(root, {}, "    file: {name: people.csv}", courier_path="*.csv")
    for name in ODD_NAMES:
        (root / "landing" / name).write_text("id,name\n9,odd\n")

    run = workflow_runner(folder, "esc")

    assert run.success, run.failures()
    assert run.metadata("courier", "people_file")["file_count"] == 1
    assert run.metadata("domain", "people")["dagster/row_count"] == 1
    text = logs(run)
    for name in ODD_NAMES:
        assert f"skipped {name!r}: the name holds" in text


def test_odd_names_on_an_sftp_server_are_skipped(sftp_files: Endpoint,
                                                 caplog: pytest.LogCaptureFixture):
    for name in ODD_NAMES:
        sftp_files.put(f"in/{name}", b"id\n9\n")
    sftp_files.put("in/good.csv", b"id\n1\n")
    with caplog.at_level("WARNING"):
        assert [f.path for f in sftp_files.connection.list_files("in/*.csv")] == ["in/good.csv"]
    for name in ODD_NAMES:
        assert f"skipped {'in/' + name!r}" in caplog.text
