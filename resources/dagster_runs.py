"""Runs of other jobs launched and followed through the Dagster webserver's GraphQL API.

A run cannot start another run itself: a launch needs the workspace, which only the webserver
and the daemon hold. So the webhook and a chain's job children both go through GraphQL, the
API Dagster documents for launching from outside.
"""

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

from resources.retries import causes, run_with_retries

REPOSITORY_NAME = "__repository__"  # where Dagster puts the jobs of a plain Definitions
POLL_FAILURES_ALLOWED = 5  # status polls failing in a row before waiting gives up (~2 min)
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED}


class LaunchFailed(Exception):
    """Dagster refused or could not take a launch; the message is Dagster's answer.
    `transient`: the webserver could not be reached (a retry may work), rather than a refusal
    (an unknown job, bad config) that would be refused again.
    `outcome_unknown`: the request may have reached Dagster (a timeout, a cut connection, an
    error status), so a run may exist; False when Dagster answered no or was never reached."""

    def __init__(self, message: str, transient: bool = False, outcome_unknown: bool = False):
        super().__init__(message)
        self.transient, self.outcome_unknown = transient, outcome_unknown


class DagsterRuns:
    """Launch, follow and terminate runs of one code location's jobs."""

    def __init__(self, dagster_url: str, location: str, timeout: float = 60):
        from dagster_graphql import DagsterGraphQLClient

        parts = urlsplit(dagster_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the Dagster URL must look like http://HOST:PORT, not "
                             f"{dagster_url!r}")
        self.location = location
        self.client = DagsterGraphQLClient(parts.hostname, port_number=parts.port,
                                           use_https=parts.scheme == "https",
                                           # typed int by Dagster; requests takes a float
                                           timeout=timeout,  # pyright: ignore[reportArgumentType]
                                           path_prefix=parts.path.rstrip("/"))

    def launch(self, job: str, tags: dict[str, str], run_config: dict[str, Any]) -> str:
        from dagster_graphql import DagsterGraphQLClientError

        try:
            return self.client.submit_job_execution(
                job, repository_location_name=self.location, repository_name=REPOSITORY_NAME,
                run_config=run_config, tags=tags)
        except DagsterGraphQLClientError as failed:
            refused = len(failed.args) >= 2  # Dagster's own answer: it launched nothing
            raise LaunchFailed(graphql_message(failed.args), transient=not refused,
                               outcome_unknown=not refused and not never_connected(failed)
                               ) from failed

    def wait(self, run_id: str, poll_seconds: float = 2.0,
             on_change: Callable[[dg.DagsterRunStatus], None] | None = None
             ) -> dg.DagsterRunStatus:
        """Poll until the run is over; `on_change` hears each new status. A poll the webserver
        did not answer (restarting) is tried again, up to POLL_FAILURES_ALLOWED times in a row
        with doubling waits (tenacity, resources/retries.py); Dagster's own answer (an unknown
        run) is not. A spent budget is marked, so the step is not retried on top of it."""
        from dagster_graphql import DagsterGraphQLClientError

        def unanswered(error: BaseException) -> bool:
            return not (isinstance(error, DagsterGraphQLClientError) and len(error.args) >= 2)

        def log_retry(number: int, failed: BaseException, delay: float) -> None:
            dg.get_dagster_logger("stagecoach.runs").warning(
                f"run {run_id}: status poll {number} of {POLL_FAILURES_ALLOWED + 1} failed "
                f"({graphql_message(failed.args)}); retrying in {delay:.1f} s")

        status = None
        while True:
            now = run_with_retries(
                lambda: self.client.get_run_status(run_id),
                attempts=POLL_FAILURES_ALLOWED + 1, backoff_seconds=poll_seconds * 2,
                should_retry=unanswered, on_retry=log_retry)
            if now != status and on_change is not None:
                on_change(now)
            status = now
            if status in FINISHED:
                return status
            time.sleep(poll_seconds)

    def terminate(self, run_id: str) -> None:
        self.client.terminate_run(run_id)


def never_connected(error: BaseException) -> bool:
    """The request never left this process: no connection to the webserver was made (refused,
    no route, a name that does not resolve, a connect timeout)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    for cause in causes(error):
        if isinstance(cause, requests.exceptions.ConnectTimeout):
            return True
        if isinstance(cause, requests.exceptions.ConnectionError) and cause.args and \
                isinstance(getattr(cause.args[0], "reason", None),
                           NewConnectionError | ConnectTimeoutError):
            return True
    return False


def graphql_message(args: tuple[Any, ...]) -> str:
    """Dagster's answer as one text: (kind, message or config errors) for a refused launch; a
    transport error's first line (the rest repeats the whole query and its variables)."""
    if not args:
        return "GraphQL error"
    if len(args) == 1:
        return (str(args[0]).strip().splitlines() or ["GraphQL error"])[0]
    detail = args[1]
    if isinstance(detail, list):  # RunConfigValidationInvalid: a list of {message, ...}
        detail = "; ".join(str(d.get("message", d)) if isinstance(d, dict) else str(d)
                           for d in detail)
    return f"{args[0]}: {detail}"
