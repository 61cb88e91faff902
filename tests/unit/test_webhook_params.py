"""The rules of what a webhook caller may pass, without a server: declared params and their
types (at the call and again from the run's tag), and the JSON limits that keep a body from
crashing the parser."""

from __future__ import annotations

import json
import time
from datetime import date

import pytest
from pydantic import ValidationError

from assets import spec
from assets.names import PARAMS_TAG, TRIGGER_TAG
from assets.webhook_params import ParamError, check_params, run_params
from orchestration.cli.webhook import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_CHARS,
    BadRequest,
    WebhookTarget,
    load_json,
    parse_body,
)

pytestmark = pytest.mark.bad_input

DECLARED = {"threshold": "int", "ratio": "float", "region": "str", "full": "bool",
            "as_of": "date"}


def test_declared_params_are_typed():
    got = check_params(DECLARED, {"threshold": 3, "ratio": 2, "region": "us", "full": False,
                                  "as_of": "2026-02-28"})
    assert got == {"threshold": 3, "ratio": 2, "region": "us", "full": False,
                   "as_of": date(2026, 2, 28)}


@pytest.mark.parametrize(("given", "message"), [
    ({"threshold": "3"}, "param 'threshold' must be a whole number (int)"),
    ({"threshold": 3.0}, "param 'threshold' must be a whole number (int)"),
    ({"threshold": True}, "param 'threshold' must be a whole number (int)"),
    ({"ratio": float("inf")}, "param 'ratio' must be a number (float)"),
    ({"region": "x" * 1001}, "param 'region' must be text of at most 1000 characters (str)"),
    ({"full": 1}, "param 'full' must be true or false (bool)"),
    ({"as_of": "2026-02-30"}, "param 'as_of' must be a date as YYYY-MM-DD (date)"),
    ({"as_of": "20260228"}, "param 'as_of' must be a date as YYYY-MM-DD (date)"),
    ({"path": "/srv"}, "param 'path' is not declared by this trigger; allowed: as_of (date), "
                       "full (bool), ratio (float), region (str), threshold (int)"),
])
def test_undeclared_or_mistyped_params_are_named(given: dict, message: str):
    with pytest.raises(ParamError) as refused:
        check_params(DECLARED, given)
    assert str(refused.value) == message


def workflow(params: dict[str, str]) -> spec.Workflow:
    return spec.Workflow.model_validate({
        "workflow": {"name": "wf", "params": {"region": "eu", "threshold": 1}},
        "triggers": {"hook": {"job": "workflow", "when": {
            "kind": "webhook", "token": {"env": "T"}, "params": params}}}})


def test_run_params_from_the_tag_are_checked_again():
    wf = workflow({"region": "str"})
    assert run_params(wf, {}) == {"region": "eu", "threshold": 1}
    tags = {TRIGGER_TAG: "webhook hook", PARAMS_TAG: json.dumps({"region": "us"})}
    assert run_params(wf, tags) == {"region": "us", "threshold": 1}
    for forged, named in (({**tags, PARAMS_TAG: '{"threshold": 9}'}, "'threshold'"),
                          ({PARAMS_TAG: '{"region": "us"}'}, "not launched by a webhook"),
                          ({**tags, TRIGGER_TAG: "webhook other"}, "not launched by a webhook"),
                          ({**tags, PARAMS_TAG: "[" * 100_000}, "is not JSON")):
        with pytest.raises(ParamError, match=named):
            run_params(wf, forged)


def test_a_param_type_outside_the_list_is_a_spec_error():
    with pytest.raises(ValidationError, match="'int', 'float', 'str', 'bool' or 'date'"):
        workflow({"region": "list"})


@pytest.mark.parametrize(("raw", "message"), [
    (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nests deeper than 32"),
    (b"[" * 200_000, "nests deeper than 32"),
    (b'{"a": ' + b"9" * (MAX_NUMBER_CHARS + 1) + b"}", "longer than 30 characters"),
    (b'{"a": 1.' + b"5" * 5000 + b"}", "longer than 30 characters"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b'{"a": ', "not JSON"),
])
def test_hostile_json_is_a_bad_request(raw: bytes, message: str):
    with pytest.raises(BadRequest, match=message) as refused:
        load_json(raw)
    assert refused.value.status == 400


def test_json_within_the_limits_loads():
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert load_json(nested) is not None
    assert load_json(b'{"a": "[[[[", "b": ' + b"9" * MAX_NUMBER_CHARS + b"}")["b"] == int(
        "9" * MAX_NUMBER_CHARS)  # brackets inside strings do not count as nesting


@pytest.mark.parametrize("size", [20_000, 512 * 1024])
def test_unclosed_strings_are_checked_in_linear_time(size: int):
    """`"\\` repeated: the old string regex retried from every quote (40 KB took 12 s)."""
    started = time.monotonic()
    with pytest.raises(BadRequest, match="not JSON"):
        load_json(b'"\\' * size)
    assert time.monotonic() - started < 0.5


TARGET = WebhookTarget("hooks", "open_door", "hooks_job", b"", params={"region": "str"})


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"params": []}', "params must be a JSON object"),
    (b'{"params": false}', "params must be a JSON object"),
    (b'{"params": null}', "params must be a JSON object"),
    (b'{"tags": []}', "tags must be a JSON object"),
    (b'{"tags": false}', "tags must be a JSON object"),
    (b'{"params": {"region": "eu"}, "params": {"region": "us"}}',
     "key 'params' appears twice in one object"),
    (b'{"params": {"region": "eu", "region": "us"}}', "key 'region' appears twice"),
    (b'{"params": {"region": "eu\\u0000x"}}', "param 'region' holds the character '\\\\x00'"),
    (b'{"params": {"region": "eu\\ud800"}}', "param 'region' holds the character '\\\\ud800'"),
    (b'{"params": {"region": "eu\\nus"}}', "param 'region' holds the character '\\\\n'"),
    (b'{"params": {"region": "eu\\u009b"}}', "param 'region' holds the character '\\\\x9b'"),
])
def test_body_gaps_are_refused_naming_the_key(raw: bytes, message: str):
    with pytest.raises(BadRequest, match=message) as refused:
        parse_body(raw, TARGET, date(2026, 1, 1))
    assert refused.value.status == 400


def test_a_tab_and_plain_text_pass():
    got = parse_body(b'{"params": {"region": "eu\\twest \\u00e9"}}', TARGET, date(2026, 1, 1))
    assert got.params == {"region": "eu\twest é"}
    assert parse_body(b'{"params": {}}', TARGET, date(2026, 1, 1)).params == {}
