"""Paths and file names cannot leave a connection's base folder or bucket prefix, and archives
are refused before anything unpacks them.

The rule lives in one place (resources/files.py: `path_problem`); these tests hold every
connection kind to it with the conformance suite's endpoints, whose independent client (the
server's folder, or boto3) sees everything the server holds outside the base: an attempted
escape must leave nothing there. Workflow tests check that a templated path or name that would
escape fails the run naming the activation or courier, the key and the value.
"""

from __future__ import annotations

import uuid
import zipfile
from pathlib import Path

import pytest

from resources.files import (
    MAX_COMPRESSION_RATIO,
    UnsafeArchive,
    UnsafePath,
    check_archive,
    checked_file_name,
    checked_template_path,
    safe_relative,
)
from tests.endpoints import Endpoint
from tests.integration.test_file_connections import KINDS
from tests.specs import NAME_COLUMNS, people_spec, write_workflow

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

ESCAPE_MARK = f"escape-{uuid.uuid4().hex[:8]}"
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
