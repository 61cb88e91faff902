"""Runs of other jobs launched and followed through the Dagster webserver's GraphQL API.

A run cannot start another run itself: a launch needs the workspace, which only the webserver
and the daemon hold. So the webhook and a chain's job children both go through GraphQL, the
API Dagster documents for launching from outside.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

REPOSITORY_NAME = "__repository__"  # where Dagster puts the jobs of a plain Definitions
POLL_FAILURES_ALLOWED = 5  # status polls failing in a row before waiting gives up (~2 min)
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED}


class LaunchFailed(Exception):
    """Dagster refused or could not take a launch; the message is Dagster's answer.
    `transient`: the webserver could not be reached (a retry may work), rather than a refusal
    (an unknown job, bad config) that would be refused again."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


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
                                           use_https=parts.scheme == "https", timeout=timeout,
                                           path_prefix=parts.path.rstrip("/"))

    def launch(self, job: str, tags: dict[str, str], run_config: dict[str, Any]) -> str:
        from dagster_graphql import DagsterGraphQLClientError

        try:
            return self.client.submit_job_execution(
                job, repository_location_name=self.location, repository_name=REPOSITORY_NAME,
                run_config=run_config, tags=tags)
        except DagsterGraphQLClientError as failed:
            raise LaunchFailed(graphql_message(failed.args),
                               transient=len(failed.args) < 2) from failed

    def wait(self, run_id: str, poll_seconds: float = 2.0,
             on_change: Callable[[dg.DagsterRunStatus], None] | None = None
             ) -> dg.DagsterRunStatus:
        """Poll until the run is over; `on_change` hears each new status. A poll that fails
        (the webserver restarting) is tried again, up to POLL_FAILURES_ALLOWED in a row."""
        status, failures = None, 0
        while True:
            try:
                now = self.client.get_run_status(run_id)
                failures = 0
            except Exception:
                failures += 1
                if failures > POLL_FAILURES_ALLOWED:
                    raise
                time.sleep(poll_seconds * 2 ** min(failures, 5))
                continue
            if now != status and on_change is not None:
                on_change(now)
            status = now
            if status in FINISHED:
                return status
            time.sleep(poll_seconds)

    def terminate(self, run_id: str) -> None:
        self.client.terminate_run(run_id)


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
