"""One retry layer (docs/retries.md): the inner loop counts its attempts and marks a spent
budget; a step with a RetryPolicy does not run again after a permanent or spent error, and
does after any other."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.common import STEP_RETRY_POLICY, ends_on_termination
from resources.connections.files import TransferError
from resources.retries import (
    PERMANENT_REASON,
    SPENT_REASON,
    not_retried_reason,
    run_with_retries,
    step_may_retry,
    worst_case_wait,
)


def flaky(failures: int, error: type[Exception] = ConnectionError):
    calls = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error("down")
        return "ok"
    return attempt, calls


def test_transient_errors_are_retried_up_to_the_budget():
    attempt, calls = flaky(2)
    waits: list[float] = []
    assert run_with_retries(attempt, attempts=4, backoff_seconds=0.001,
                            should_retry=lambda e: True,
                            on_retry=lambda n, e, d: waits.append(d)) == "ok"
    assert len(calls) == 3 and len(waits) == 2 and waits[1] >= waits[0]


def test_a_spent_budget_is_marked_and_the_step_does_not_retry_it():
    attempt, calls = flaky(99)
    with pytest.raises(ConnectionError) as failed:
        run_with_retries(attempt, attempts=3, backoff_seconds=0, should_retry=lambda e: True,
                         on_retry=lambda *_: None)
    assert len(calls) == 3
    assert failed.value.retried_inside == 3  # type: ignore[attr-defined]
    assert not step_may_retry(failed.value) and not_retried_reason(failed.value) == SPENT_REASON


def test_a_refusal_is_one_attempt_and_left_unmarked():
    attempt, calls = flaky(99, PermissionError)
    with pytest.raises(PermissionError) as failed:
        run_with_retries(attempt, attempts=5, backoff_seconds=0,
                         should_retry=lambda e: not isinstance(e, PermissionError),
                         on_retry=lambda *_: None)
    assert len(calls) == 1 and not hasattr(failed.value, "retried_inside")


def test_step_may_retry_reads_the_whole_chain():
    refused = TransferError("login refused")
    refused.permanent = True
    try:
        try:
            raise refused
        except TransferError as inner:
            raise RuntimeError("courier failed") from inner
    except RuntimeError as outer:
        assert not step_may_retry(outer) and not_retried_reason(outer) == PERMANENT_REASON
    assert step_may_retry(RuntimeError("something odd"))


def test_worst_case_wait_is_the_documented_figure():
    assert worst_case_wait(3, 1.0) == pytest.approx(7.7)  # docs/retries.md, the defaults
    assert worst_case_wait(0, 1.0) == 0


def _asset_raising(make_error, calls: list[int]) -> dg.AssetsDefinition:
    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=STEP_RETRY_POLICY.max_retries))
    @ends_on_termination
    def flaky_asset(context) -> None:  # no annotation: postponed ones are strings
        calls.append(1)
        raise make_error()
    return flaky_asset


@pytest.mark.parametrize(("kind", "expected_runs"), [("spent", 1), ("permanent", 1),
                                                     ("other", 3)])
def test_the_step_runs_once_after_a_spent_or_permanent_error(kind: str, expected_runs: int):
    def make_error() -> Exception:
        error = TransferError("connection `partner` list failed")
        if kind == "spent":
            error.retried_inside = 4  # type: ignore[attr-defined]
        elif kind == "permanent":
            error.permanent = True
        else:
            return RuntimeError("an unexpected error")
        return error

    calls: list[int] = []
    with dg.instance_for_test() as instance:
        result = dg.materialize([_asset_raising(make_error, calls)], instance=instance,
                                raise_on_error=False)
    assert not result.success
    assert len(calls) == expected_runs
