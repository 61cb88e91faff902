"""The loader's reference checkers: plain functions of their inputs, all run in one pass."""

from pathlib import Path

from assets import spec
from orchestration.checks.common import Context
from orchestration.checks.groups import check_triggers
from orchestration.spec_problems import Problem
from tests.unit.test_spec_catalogue import WITH_CHAINS, errors_of


def test_every_section_is_checked_in_one_pass(tmp_path: Path) -> None:
    """A chain's mutex conflict is reported beside another section's error, not after it is
    fixed (the checker depends on its own chain only, not on errors found so far)."""
    text = WITH_CHAINS.replace("  scores:\n", "  scores:\n    mutex: scoring\n", 1).replace(
        "    from: landing\n", "    from: landng\n", 1)
    assert errors_of(text, tmp_path) == [
        "wf.yaml:20 couriers.orders.from: unknown connection 'landng' (known: landing, "
        "vendor_sftp, vendor_sftp_batch)",
        "wf.yaml:54 automations.nightly.chain: the children hold different mutexes (exports, "
        "scoring) and a run holds one: give them the same one"]


def test_a_checker_is_a_function_of_its_inputs() -> None:
    trigger = spec.Trigger.model_validate(
        {"job": "nightly", "when": {"kind": "file_change", "connection": "crm",
                                    "path": "in/{{ run_id }}.csv"}})
    sections = {name: {} for name in ("connections", "couriers", "databases")}
    sections["triggers"] = {"drop": trigger}
    sections["connections"] = {"crm": spec.SqlConnection(kind="sql", url=spec.EnvRef(env="X"))}
    known = {"connections": {"crm"}, "courier_groups": {"inbound"}, "orchestration_groups": set(),
             "automations": set(), "domain_tables": set(), "queries": set()}
    context = Context.of(sections, known, None, None)
    expected = [
        Problem(("triggers", "drop", "job"), "unknown job 'nightly' (known: inbound, workflow)"),
        Problem(("triggers", "drop", "when", "connection"), "a file_change trigger needs a "
                "folder or sftp or ftp or smb or s3 connection, not sql"),
        Problem(("triggers", "drop", "when", "path"), "{{ run_id }} is unknown here: the "
                "sensor renders it before any run; use the date macros or `workflow` instead")]
    assert check_triggers(context) == expected
    assert check_triggers(context) == expected  # nothing kept between calls
