"""Regressions for the webhook's security review: a hostile body that froze every caller, one
address taking every connection, a request id freed after a launch of unknown outcome, and the
caller's address behind a trusted proxy.

A real webhook server on loopback, in this process, with its request ids in a DuckDB file.
Launches go through a plain launcher that records what it was given, or through the GraphQL
client (`DagsterRuns`) to a loopback HTTP server standing in for a Dagster that takes a launch
but answers too late.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assets.names import WEBHOOK_CALLER_TAG as CALLER_TAG
from assets.names import WEBHOOK_REQUEST_ID_TAG as REQUEST_ID_TAG
from orchestration.cli.webhook import (
    Launcher,
    WebhookLimits,
    WebhookServer,
    WebhookTarget,
    request_id_store,
)
from resources.dagster_runs import DagsterRuns
from tests.security.test_webhook_abuse import serving as threaded_server
from tests.servers_ssh import free_port

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

TOKEN = secrets.token_urlsafe(24)
TARGET = WebhookTarget("hooks", "open_door", "hooks_job", hashlib.sha256(TOKEN.encode()).digest(),
                       params={"region": "str"})
QUICK = WebhookLimits(header_timeout_seconds=3.0, body_timeout_seconds=3.0)


class Recorder:
    """A launcher that keeps every launch it is asked for."""

    def __init__(self) -> None:
        self.launched: list[dict[str, str]] = []

    def __call__(self, job: str, tags: dict[str, str], run_config: dict) -> str:
        self.launched.append(tags)
        return f"run-{len(self.launched)}"


@contextlib.contextmanager
def serving(tmp_path: Path, launcher: Launcher, limits: WebhookLimits = QUICK
            ) -> Iterator[WebhookServer]:
    """The abuse tests' server (one trigger, one token) with its request ids in a DuckDB file."""
    store_url = f"duckdb:///{tmp_path / 'requests.duckdb'}"
    request_id_store(store_url, limits.replay_window_seconds).ensure()
    with threaded_server([TARGET], launcher, store_url, [TOKEN], limits) as server:
        yield server


def call(server: WebhookServer, method: str = "POST", path: str = "/launch/hooks_job",
         body: bytes = b"", headers: dict[str, str] | None = None, source: str = "127.0.0.1",
         timeout: float = 10) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1],
                                            timeout=timeout, source_address=(source, 0))
    try:
        sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        connection.request(method, path, body=body, headers=sent)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def health(server: WebhookServer, source: str = "127.0.0.1") -> tuple[int, float]:
    started = time.monotonic()
    try:
        status, _ = call(server, "GET", "/health", source=source, timeout=5)
    except OSError:
        status = 0
    return status, time.monotonic() - started


# ---------------------------------------------------------------- 1. a body that froze the server


@pytest.mark.parametrize("body", [b'"\\' * (512 * 1024), b'{"a": "' + b"\\\\" * 500_000,
                                  b'"' + b"\\x" * 500_000], ids=["unclosed", "escapes", "bad"])
def test_a_hostile_1mib_body_is_refused_at_once_and_health_answers(tmp_path: Path, body: bytes):
    """Unclosed strings made the nesting check quadratic: 40 KB held /health for 12 s."""
    recorder, answers = Recorder(), []
    with serving(tmp_path, recorder) as server:
        def attack() -> None:
            started = time.monotonic()
            answers.append((*call(server, body=body), time.monotonic() - started))

        attacker = threading.Thread(target=attack)
        attacker.start()
        checks = [health(server) for _ in range(5)]
        attacker.join(timeout=30)
    assert answers, "the hostile request got no answer in 30 s"
    status, text, took = answers[0]
    assert status == 400 and "not JSON" in text, (status, text)
    assert took < 0.9, took
    assert all(s == 200 and t < 0.5 for s, t in checks), checks
    assert recorder.launched == []


# ---------------------------------------------------------------- 2. connections per address


def slow_client(port: int) -> socket.socket:
    """A connection that sends half a request head and waits."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(b"POST /launch/hooks_job HTTP/1.1\r\nHost: a\r\n")
    return raw


def test_one_address_cannot_take_every_connection(tmp_path: Path):
    """60 slow connections from 127.0.0.1 against a budget of 40: the 17th on gets 503 at once,
    and /health from 127.0.0.2 answers throughout (the old server answered it 503)."""
    limits = WebhookLimits(max_connections=40, max_connections_per_address=16,
                           header_timeout_seconds=4.0)
    with serving(tmp_path, Recorder(), limits) as server:
        clients = [slow_client(server.server_address[1]) for _ in range(60)]
        try:
            refused = []
            for raw in clients[16:]:
                raw.settimeout(2)
                refused.append(raw.recv(200))
            assert all(r.startswith(b"HTTP/1.1 503") for r in refused), refused[:2]
            assert b"too many open connections from this address" in refused[0]
            checks = [health(server, source="127.0.0.2") for _ in range(8)]
            assert all(s == 200 and t < 0.5 for s, t in checks), checks
            assert health(server)[0] == 503  # the capped address itself waits
        finally:
            for raw in clients:
                raw.close()
        deadline = time.monotonic() + 3
        while health(server)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # closed connections are counted off
        assert health(server)[0] == 200


# ---------------------------------------------------------------- 2b. behind a trusted proxy


def test_a_trusted_proxy_names_the_caller_and_others_cannot(tmp_path: Path):
    """Behind a proxy at 127.0.0.1, the rate limit and the caller tag follow X-Forwarded-For's
    last hop; a caller at 127.0.0.2 (not a trusted proxy) cannot pick its address that way."""
    limits = WebhookLimits(requests_per_caller=2, trusted_proxies=frozenset({"127.0.0.1"}))
    recorder = Recorder()
    with serving(tmp_path, recorder, limits) as server:
        def via(forwarded: str, source: str = "127.0.0.1", token: str = "wrong") -> int:
            return call(server, headers={"X-Forwarded-For": forwarded,
                                         "Authorization": f"Bearer {token}"}, source=source)[0]

        assert [via("10.0.0.1") for _ in range(3)] == [401, 401, 429]
        assert via("10.0.0.2") == 401  # another caller behind the same proxy is not locked out
        assert via("6.6.6.6, 10.0.0.3", token=TOKEN) == 201  # the proxy's hop, not the claim
        assert recorder.launched[0][CALLER_TAG] == "10.0.0.3"
        assert [via(f"10.0.1.{n}", source="127.0.0.2") for n in range(3)] == [401, 401, 429]


# ---------------------------------------------------------------- 3. a launch of unknown outcome


class SlowDagster(http.server.ThreadingHTTPServer):
    """Takes a launch (counts it) and answers after the client has given up."""

    daemon_threads = True

    def __init__(self) -> None:
        self.launches = 0
        super().__init__(("127.0.0.1", 0), _SlowHandler)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.launches += 1  # type: ignore[attr-defined]
        time.sleep(2.5)
        body = json.dumps({"data": {"launchPipelineExecution": {
            "__typename": "LaunchRunSuccess", "run": {"runId": "late-run"}}}}).encode()
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_timed_out_launch_keeps_its_request_id(tmp_path: Path):
    """Dagster took the launch but answered after the client's timeout: a run may exist, so the
    id stays used (the replay gets 409 and reaches Dagster no second time)."""
    dagster = SlowDagster()
    threading.Thread(target=dagster.serve_forever, daemon=True).start()
    runs = DagsterRuns(f"http://127.0.0.1:{dagster.server_address[1]}", "stagecoach", timeout=1)
    request_id = f"late-{secrets.token_hex(6)}"
    try:
        with serving(tmp_path, runs.launch) as server:
            first = call(server, headers={"X-Request-Id": request_id})
            replay = call(server, headers={"X-Request-Id": request_id})
    finally:
        dagster.shutdown()
        dagster.server_close()
    assert first[0] == 502, first
    error = json.loads(first[1])["error"]
    assert "a run may or may not have started" in error, error
    assert f"{REQUEST_ID_TAG}={request_id}" in error and TOKEN not in error
    assert replay[0] == 409, replay
    assert dagster.launches == 1


def test_a_launch_that_never_reached_dagster_frees_its_request_id(tmp_path: Path):
    """Nothing listens at the Dagster address: certainly no run, so the same id may retry."""
    runs = DagsterRuns(f"http://127.0.0.1:{free_port()}", "stagecoach", timeout=2)
    request_id = f"gone-{secrets.token_hex(6)}"
    with serving(tmp_path, runs.launch) as server:
        answers = [call(server, headers={"X-Request-Id": request_id}) for _ in range(2)]
    for status, text in answers:
        assert status == 502, (status, text)
        assert json.loads(text)["error"].startswith("the launch failed; no run was started")
