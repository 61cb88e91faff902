"""Property: any mutation of a valid spec either loads or fails with Stagecoach's own spec error
(SpecInvalid, every message `file:line path: message`), never another exception.

Hypothesis mutates the demo workflow and the catalogue's valid specs: it deletes, replaces,
renames and adds keys, swaps values for odd ones (wrong types, templates, paths that escape,
control characters, huge numbers, nested structures), and edits the YAML text itself (stray
characters, cut lines, tabs, anchors). Runtime stays bounded: 200 examples, no deadline.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration.spec_loader import SpecInvalid, load_workflow_text
from orchestration.spec_yaml import Lines, parse_yaml
from tests.reliability_report import count_cases
from tests.unit.test_spec_catalogue import GROUPS, VALID, WITH_ALERTS

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "workflows"
SOURCES = [
    ("demo", (DEMO / "acme_retail.yaml").read_text(encoding="utf-8"), DEMO),
    ("catalogue", VALID, None),
    ("catalogue+groups", VALID + GROUPS, None),
    ("catalogue+alerts", WITH_ALERTS, None),
]
ERROR_LINE = re.compile(r"^wf\.yaml:\d+ .*\S", re.S)  # file:line, then path: message
# STAGECOACH_FUZZ_EXAMPLES=5000 for a longer hunt (the default keeps `make test` quick).
EXAMPLES = int(os.environ.get("STAGECOACH_FUZZ_EXAMPLES", "200"))

SPECIAL_TEXT = [
    "", " ", "{{", "}}", "{{ ds_nodash }}", "{{ params.nope }}", "{% for x in y %}{{ x }}",
    "{{ ''.__class__.__mro__ }}", "../../etc/passwd", "/abs/path", "a\\b", "a\x00b", "\t",
    "select * from domain.nope", "select 1; drop table x", "*", "**/*.csv", "sftp", "folder",
    "team:x", "x@y.z", "2026-13-45", "0 3 * * *", "61 * * * *", "5m", "-1h", "utf-9",
    "America/Nowhere", "\u202e\u0000", "é" * 70, "x" * 5000, "null", "~", "yes", "on",
    "[1, 2", "{a: b", "&anchor", "*alias", "!!python/object:os.system", "0x1F", "1e309",
]
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_TEXT),
    st.text(max_size=30),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(["kind", "env", "from", "to", "sql",
                                                   "path", "name", "columns", "tag"]),
                                  st.text(max_size=12)), inner, max_size=4),
        st.builds(lambda name: {"env": name}, st.text(max_size=12)),
    ),
    max_leaves=8,
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of the parsed YAML tree (the root included)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def parent_of(tree: Any, path: tuple) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


@st.composite
def tree_mutation(draw: st.DrawFn, tree: Any) -> Any:
    """One change at one random place of the tree (which is modified in place)."""
    path = draw(st.sampled_from(paths(tree)))
    operation = draw(st.sampled_from(["delete", "replace", "rename", "add", "wrap", "empty"]))
    if not path:  # the root itself
        if operation == "replace":
            return draw(values)
        if isinstance(tree, dict):
            tree[draw(st.one_of(st.sampled_from(["workflow", "connections", "couriers",
                                                 "extra", "alerts", "triggers"]),
                                st.text(max_size=10)))] = draw(values)
        return tree
    parent, key = parent_of(tree, path), path[-1]
    if operation == "delete":
        del parent[key]
    elif operation == "replace":
        parent[key] = draw(values)
    elif operation == "rename" and isinstance(parent, dict):
        parent[draw(st.one_of(st.text(max_size=15), st.sampled_from(
            ["from", "to", "kind", "query", "courier", "env", "on", "yes", "1", ""])))] = \
            parent.pop(key)
    elif operation == "add" and isinstance(parent[key], dict):
        parent[key][draw(st.text(max_size=15))] = draw(values)
    elif operation == "add" and isinstance(parent[key], list):
        parent[key].append(draw(values))
    elif operation == "wrap":
        parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]},
                                            str(parent[key])]))
    else:
        parent[key] = draw(st.sampled_from([{}, [], "", None]))
    return tree


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> str:
    """An edit of the YAML text: what a slip of the keyboard or a bad merge does."""
    lines = text.splitlines(keepends=True)
    at = draw(st.integers(0, max(len(lines) - 1, 0)))
    edit = draw(st.sampled_from(["insert", "cut", "duplicate", "indent", "tab", "char"]))
    if edit == "insert":
        lines.insert(at, draw(st.sampled_from(["- x\n", "  : y\n", "a: &a [*a]\n", "---\n",
                                               "key: [unclosed\n", "? complex\n", "%TAG\n",
                                               "!!binary x\n", "a: !!python/name:os.system\n",
                                               "\x07\n", "\ufeffbom: 1\n", "<<: *nope\n"])))
    elif edit == "cut" and lines:
        del lines[at:at + draw(st.integers(1, 5))]
    elif edit == "duplicate" and lines:
        lines.insert(at, lines[at])
    elif edit == "indent" and lines:
        lines[at] = " " * draw(st.integers(1, 3)) + lines[at]
    elif edit == "tab" and lines:
        lines[at] = "\t" + lines[at].lstrip(" ")
    elif lines:
        line = lines[at]
        position = draw(st.integers(0, len(line)))
        lines[at] = line[:position] + draw(st.one_of(
            st.text(min_size=1, max_size=3),
            st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\ufffe", "\x85", ":", "#", "'",
                             '"', "{", "[", "&", "*", "!", "|", ">", "%", "@", "`"]))
        ) + line[position:]
    return "".join(lines)


@st.composite
def mutated_specs(draw: st.DrawFn) -> tuple[str, str, Path | None]:
    name, text, base = draw(st.sampled_from(SOURCES))
    if draw(st.integers(0, 3)) == 0:  # a quarter of the examples edit the text
        return name, draw(text_mutation(text)), base
    tree = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        tree = draw(tree_mutation(tree))
    return name, yaml.safe_dump(tree, sort_keys=False, allow_unicode=True), base


@pytest.mark.bad_input
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(case=mutated_specs())
def test_a_mutated_spec_loads_or_fails_with_a_spec_error(case: tuple[str, str, Path | None],
                                                         tmp_path_factory):
    name, text, base = case
    count_cases("bad_input", 1, "hypothesis examples (mutated valid specs)")
    try:
        load_workflow_text(text, "wf.yaml", base or tmp_path_factory.getbasetemp())
    except SpecInvalid as invalid:
        assert invalid.errors, name
        for error in invalid.errors:
            assert ERROR_LINE.match(str(error)), (name, str(error))
            assert error.line >= 1, (name, str(error))


def test_every_source_is_valid_unmutated(tmp_path: Path):
    for name, text, base in SOURCES:
        assert load_workflow_text(text, "wf.yaml", base or tmp_path), name


LAUGHS = "workflow: {name: a}\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))


@pytest.mark.bad_input
@pytest.mark.parametrize(("text", "expected"), [
    ("workflow: {name: a}\nx: &a [*a]\n", "wf.yaml:2 not usable YAML: an alias (*name) refers "
                                          "to a value that contains it"),
    ("workflow: {name: a}\ncouriers: &c {x: *c}\n", "wf.yaml:2 not usable YAML: an alias"),
    (LAUGHS, "wf.yaml:2 not usable YAML: more than 200,000 values once aliases (*name) are "
             "expanded"),
    # Deep nesting: a spec error either way, whether the parser's stack holds (the section is
    # then unknown) or not (libyaml's constructor recurses: "nested too deeply").
    ("workflow: {name: a}\nx: " + "[" * 5000 + "]" * 5000 + "\n",
     ("wf.yaml:2 x: unknown section 'x'", "wf.yaml:1 not usable YAML: values nested too deeply")),
    ("workflow:\n  name: a\x07b\n", "wf.yaml:2 not valid YAML: #x0007 is not allowed"),
], ids=["cyclic alias", "cyclic section", "billion laughs", "deep nesting", "control character"])
def test_yaml_bombs_are_spec_errors(text: str, expected: str | tuple[str, ...], tmp_path: Path):
    """What Hypothesis found (a cyclic alias crashed the loader with RecursionError, a control
    character with yaml's ReaderError), and the alias bomb it would take long to find."""
    with pytest.raises(SpecInvalid) as refused:
        load_workflow_text(text, "wf.yaml", tmp_path)
    assert str(refused.value.errors[0]).startswith(expected), refused.value.errors


def safe_loader_reading(text: str) -> tuple[str, dict]:
    """What PyYAML's safe loader reads (its repr: NaN is not equal to itself) and the line of
    every path in its nodes once the data is built from them (a merge key's entries are then
    the mapping's own): what a spec's lines and data must be, however they are built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        assert node is not None
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    lines = Lines()
    lines.walk(node)
    return repr(data), lines.lines


@given(st.dictionaries(st.text(max_size=12), values, min_size=1, max_size=6),
       st.sampled_from([None, False, True]))
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_a_spec_reads_as_the_safe_loader_reads_it(document: dict, flow: bool | None):
    """A plain spec is built straight from libyaml's events (no nodes): its data and every
    path's line are the safe loader's, whatever the scalars (null, bools, big ints, floats,
    dates, odd text) and the layout (block, flow)."""
    text = yaml.safe_dump(document, allow_unicode=True, default_flow_style=flow)
    data, lines, errors = parse_yaml(text, "wf.yaml")
    assert not errors
    assert (repr(data), lines.lines) == safe_loader_reading(text)


@pytest.mark.parametrize("text", [
    "a: &x {b: 1}\nc: *x\n", "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n", "a: !!str 1\n",
    "=: 1\n", "a: 1\nb:\n  c: 2\n  c: 3\n",
], ids=["alias", "merge key", "explicit tag", "value key", "duplicate key"])
def test_what_a_plain_spec_does_not_use_reads_as_before(text: str):
    """Anchors, merge keys, tags, value and duplicate keys take the general path (nodes,
    then data): read as the safe loader reads them, a duplicate key reported at its line."""
    data, lines, errors = parse_yaml(text, "wf.yaml")
    expected_data, expected_lines = safe_loader_reading(text)
    assert repr(data) == expected_data
    assert lines.lines == expected_lines
    assert [str(e) for e in errors] == (["wf.yaml:4 b.c: duplicate key: the later value would "
                                         "silently win"] if "c: 3" in text else [])


CONNECTION_SHAPES = {
    "sql": {"kind": "sql", "url": {"env": "CRM_DB_URL"}},
    "sql, literal url": {"kind": "sql", "url": "postgresql://crm:hunter2@db.example.com/crm"},
    "sql, url a list": {"kind": "sql", "url": ["x"]},
    "sql, no url": {"kind": "sql"},
    "sftp": {"kind": "sftp", "host": "h", "username": "u", "password": {"env": "P"}},
    "sftp, literal password": {"kind": "sftp", "host": "h", "username": "u", "password": "p"},
    "folder": {"kind": "folder", "path": "landing"},
    "no kind": {"url": {"env": "X"}},
    "unknown kind": {"kind": "oracle", "url": {"env": "X"}},
    "not a mapping": "crm",
    "empty": None,
}
CONNECTION_NAMES = ["crm", "crm_batch", "landing", "nope", "Bad-Name"]


@st.composite
def profile_specs(draw: st.DrawFn) -> str:
    """Connections of every shape (valid, a literal secret, broken), profiles swapping any two
    names (defined, undefined, invalid), and steps and a chain using them under `run_as`."""
    connections = {name: draw(st.sampled_from(list(CONNECTION_SHAPES.values())))
                   for name in draw(st.lists(st.sampled_from(CONNECTION_NAMES[:4]), min_size=1,
                                             max_size=3, unique=True))}
    names = st.sampled_from(CONNECTION_NAMES)
    profiles = {"batch": {"connections": draw(st.dictionaries(names, names, max_size=3))}}
    if draw(st.booleans()):
        profiles["other"] = draw(st.sampled_from([None, "x", {"connections": "crm"},
                                                  {"connections": {"crm": None}}]))
    step = draw(st.sampled_from([
        {"kind": "sql", "connection": draw(names), "sql": "select 1"},
        {"kind": "alarm", "connection": draw(names), "query": "select 1", "condition": ">",
         "threshold": 1},
        {"kind": "sync", "connection": draw(names), "tables": {"a": "b.c"}},
        {"kind": "sql", "sql_source": {"connection": draw(names), "path": "q.sql"}},
        {"kind": "ssh", "connection": draw(names), "command": "true"}]))
    automations = {"export": {"run_as": draw(st.sampled_from(["batch", "other", "nope"])),
                              "steps": [step]},
                   "nightly": {"chain": ["export"], "run_as": "batch"}}
    spec = {"workflow": {"name": "acme"}, "connections": connections, "profiles": profiles,
            "automations": automations}
    if draw(st.booleans()):
        spec["triggers"] = {"changed": {"job": "export", "when": {
            "kind": "sql_change", "connection": draw(names), "query": "select 1"}}}
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.mark.bad_input
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=profile_specs())
def test_profiles_over_any_connection_shape_load_or_fail_with_spec_errors(text: str,
                                                                          tmp_path_factory):
    """What crashed `validate` with a KeyError: a profile swapping a connection that failed
    its own validation (a literal `url`)."""
    count_cases("bad_input", 1, "hypothesis examples (profiles over connection shapes)")
    try:
        load_workflow_text(text, "wf.yaml", tmp_path_factory.getbasetemp())
    except SpecInvalid as invalid:
        assert invalid.errors, text
        for error in invalid.errors:
            assert ERROR_LINE.match(str(error)), (text, str(error))
            assert "hunter2" not in str(error), (text, str(error))
