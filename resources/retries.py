"""Where retries live (docs/retries.md): ONE layer per fault.

- A transient network fault (refused, reset, timed out, a server's "busy, later" answer) is
  retried inside the connection, with a short budget (`retries`, `backoff_seconds`), by
  tenacity; S3 by botocore's own `standard` retry mode instead.
- Everything else that may pass (an unexpected error, a lost warehouse connection during a
  write) is retried by the step's Dagster `RetryPolicy`.
- A permanent refusal (a login, a host key, a missing file, permission denied, a 4xx) is retried
  nowhere, and neither is a fault the connection already retried: the step fails with
  `dg.Failure(allow_retries=False)`, so 4 connection attempts are never multiplied by 3 step
  tries.

`step_may_retry` is the step's half of that contract: errors carry `permanent` (the connection
judged it a refusal) or `retried_inside` (its inner budget is spent).
"""

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import tenacity

T = TypeVar("T")

MAX_DELAY_SECONDS = 300.0  # one wait never exceeds this, whatever retries x backoff_seconds
_JITTER = 0.1  # up to this share of a backoff is added at random
PERMANENT_REASON = "not retried: a retry cannot fix this"
SPENT_REASON = "not retried by the step: the connection's own retries were spent"


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the errors it was raised from, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)


def backoff_delay(attempt: int, backoff_seconds: float) -> float:
    """Seconds to wait before retry number `attempt` (0-based): doubling, plus a little jitter."""
    base = backoff_seconds * (2 ** attempt)
    return base + random.uniform(0, base * _JITTER)


def retry_delay(failed_attempts: int, backoff_seconds: float) -> float:
    """The wait after attempt `failed_attempts` (1-based): doubling from `backoff_seconds`,
    capped at MAX_DELAY_SECONDS so 10 retries of 300 s end within an hour, not days."""
    return min(backoff_delay(failed_attempts - 1, backoff_seconds), MAX_DELAY_SECONDS)


def worst_case_wait(retries: int, backoff_seconds: float) -> float:
    """The longest total sleep of `retries` retries (jitter at its maximum): docs/retries.md."""
    return sum(min(backoff_seconds * 2 ** n * (1 + _JITTER), MAX_DELAY_SECONDS)
               for n in range(retries))


def run_with_retries(attempt: Callable[[], T], *, attempts: int, backoff_seconds: float,
                     should_retry: Callable[[BaseException], bool],
                     on_retry: Callable[[int, BaseException, float], None],
                     wait: Callable[[int, BaseException], float | None] | None = None) -> T:
    """`attempt()`, up to `attempts` times while it raises an error `should_retry` accepts.

    `on_retry(failed attempt number, its error, seconds until the next)` is called before each
    wait (the log line); `wait` may ask for a longer wait than the backoff (a Retry-After).
    The last error is raised as is; when more than one attempt was made it carries
    `retried_inside = attempts made`, so the step does not retry it again.
    """

    def delay(state: tenacity.RetryCallState) -> float:
        seconds = retry_delay(state.attempt_number, backoff_seconds)
        failed = state.outcome.exception() if state.outcome else None
        if wait is not None and failed is not None:
            asked = wait(state.attempt_number, failed)
            if asked is not None:
                seconds = max(seconds, asked)
        return seconds

    def before_sleep(state: tenacity.RetryCallState) -> None:
        failed = state.outcome.exception() if state.outcome else None
        assert failed is not None  # tenacity sleeps only after a failed attempt
        on_retry(state.attempt_number, failed,
                 state.next_action.sleep if state.next_action else 0.0)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)), wait=delay,
        retry=tenacity.retry_if_exception(should_retry), before_sleep=before_sleep,
        sleep=time.sleep, reraise=True)
    made = 0

    def counted() -> T:
        nonlocal made
        made += 1
        return attempt()

    try:
        return retrying(counted)
    except Exception as failed:
        if made > 1:
            mark_retried_inside(failed, made)
        raise


def mark_retried_inside(error: BaseException, attempts: int) -> None:
    """Record on `error` that a connection already made `attempts` attempts at it."""
    # An exception type with __slots__ refuses the attribute: the step may retry it then.
    with contextlib.suppress(AttributeError):
        error.retried_inside = attempts  # type: ignore[attr-defined]


def step_may_retry(error: BaseException) -> bool:
    """Whether a step's RetryPolicy may run the step again after `error`: not when the error
    (or one it was raised from) is a permanent refusal, nor when a connection already spent
    its retry budget on it (the attempts would multiply)."""
    return not any(getattr(e, "permanent", False) or getattr(e, "retried_inside", 0)
                   for e in causes(error))


def not_retried_reason(error: BaseException) -> str:
    """Why the step is not retried after `error`, for its failure message."""
    if any(getattr(e, "permanent", False) for e in causes(error)):
        return PERMANENT_REASON
    return SPENT_REASON
