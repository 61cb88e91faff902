"""The webhook endpoint under abuse: wrong or missing tokens, replayed, oversized and slow
requests, and a flood, are refused without launching a run, and no answer names a job.

The endpoint runs in this process (so its limits can be small) and launches through GraphQL
into a real `dagster dev` (webserver and daemon) on loopback; the runs that exist in that
instance are counted before and after each attack. Every answer is recorded, and the last test
checks that none of them holds a job or workflow name.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestration.spec_loader import load_workflows
from orchestration.webhook import (
    MAX_BODY_BYTES,
    REQUEST_ID_TAG,
    WebhookLimits,
    WebhookServer,
    graphql_launcher,
    make_server,
    webhook_targets,
)
from tests.e2e.dagster_dev import DagsterDev, running_dagster_dev, wait_for_run

pytestmark = [pytest.mark.security, pytest.mark.timeout(600)]

WORKFLOW, JOB = "hooks", "hooks_job"
OPEN_TOKEN_ENV, STRICT_TOKEN_ENV = "SECURITY_OPEN_TOKEN", "SECURITY_STRICT_TOKEN"
LIMITS = WebhookLimits(requests_per_caller=20, window_seconds=4.0, replay_window_seconds=600,
                       max_connections=4, socket_timeout_seconds=1.5)


def spec(root: Path) -> str:
    return f"""
workflow: {{name: {WORKFLOW}, owners: [team:data]}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
couriers:
  people: {{from: landing, path: people.csv}}
triggers:
  open_door: {{job: workflow, when: {{kind: webhook, token: {{env: {OPEN_TOKEN_ENV}}}}}}}
  strict: {{job: workflow, when: {{kind: webhook, token: {{env: {STRICT_TOKEN_ENV}}},
                                   require_request_id: true}}}}
"""


@dataclass
class Endpoint:
    dev: DagsterDev
    server: WebhookServer
    host: str
    port: int
    open_token: str
    strict_token: str
    answers: list[str] = field(default_factory=list)  # every status line, header and body

    def call(self, token: str | None, job: str = JOB, body: bytes = b"",
             headers: dict[str, str] | None = None, source: str = "127.0.0.1"
             ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30,
                                                source_address=(source, 0))
        try:
            sent = {"Content-Type": "application/json", **(headers or {})}
            if token is not None:
                sent["Authorization"] = f"Bearer {token}"
            connection.request("POST", f"/launch/{job}", body=body, headers=sent)
            answer = connection.getresponse()
            text = answer.read().decode()
            got = {k.lower(): v for k, v in answer.getheaders()}
        finally:
            connection.close()
        self.answers.append(f"{answer.status} {answer.reason} {got} {text}")
        return answer.status, got, text

    def runs(self) -> list[dict]:
        data = self.dev.graphql("""{ runsOrError { __typename ... on Runs {
            results { runId tags { key value } } } } }""")
        return [{"id": r["runId"], **{t["key"]: t["value"] for t in r["tags"]}}
                for r in data["runsOrError"]["results"]]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    root = tmp_path_factory.mktemp("webhook_abuse")
    for folder in ("landing", "workflows", "data", "dagster_home"):
        (root / folder).mkdir()
    (root / "landing" / "people.csv").write_text("id,name\n1,ada\n")
    (root / "workflows" / f"{WORKFLOW}.yaml").write_text(spec(root))
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    tokens = {OPEN_TOKEN_ENV: secrets.token_urlsafe(24),
              STRICT_TOKEN_ENV: secrets.token_urlsafe(24)}
    env = {**os.environ, "STAGECOACH_WORKFLOWS_DIR": str(root / "workflows"),
           "STAGECOACH_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home"),
           **tokens}
    env.pop("STAGECOACH_WAREHOUSE_URL", None)
    env.pop("STAGECOACH_EXECUTOR", None)
    with running_dagster_dev(root, root / "workflows", env) as dev:
        targets, raw = webhook_targets(load_workflows(root / "workflows"), tokens)
        server = make_server("127.0.0.1", 0, targets, graphql_launcher(dev.url), raw, LIMITS)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Endpoint(dev, server, "127.0.0.1", server.server_address[1],
                           tokens[OPEN_TOKEN_ENV], tokens[STRICT_TOKEN_ENV])
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def fresh(endpoint: Endpoint) -> Endpoint:
    """Each test starts with an empty rate window (the limiter is the server's own)."""
    endpoint.server.rate = type(endpoint.server.rate)(
        LIMITS.requests_per_caller, LIMITS.window_seconds, LIMITS.max_callers_tracked)
    return endpoint


def test_wrong_missing_and_malformed_tokens_launch_nothing(fresh: Endpoint):
    before = fresh.runs()
    answers = [fresh.call(None), fresh.call("not-the-token"), fresh.call(""),
               fresh.call(fresh.open_token + "x"), fresh.call(fresh.open_token[:-1]),
               fresh.call("wrong", job="nope_job"),
               fresh.call(None, headers={"Authorization": f"Basic {fresh.open_token}"})]
    assert {status for status, _, _ in answers} == {401}
    assert len({text for _, _, text in answers}) == 1  # one body whatever the job or token
    assert all(h.get("www-authenticate") == "Bearer" for _, h, _ in answers)
    # A valid token asking for a job it does not open: 404, the same body again.
    status, _, text = fresh.call(fresh.open_token, job="nope_job")
    assert (status, text) == (404, answers[0][2])
    assert fresh.runs() == before


def read_until_closed(raw: socket.socket) -> str:
    """The whole answer: the server closes the connection after each one."""
    parts = []
    while chunk := raw.recv(65536):
        parts.append(chunk)
    return b"".join(parts).decode()


def test_an_oversized_body_gets_413_before_it_is_read(fresh: Endpoint):
    """Only the headers are sent: a server that waited for the 10 MiB body would time out."""
    before = fresh.runs()
    for token in (fresh.open_token, "wrong"):
        with socket.create_connection((fresh.host, fresh.port), timeout=10) as raw:
            raw.sendall((f"POST /launch/{JOB} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {10 * 1024 * 1024}\r\n\r\n{{").encode())
            started = time.monotonic()
            answer = read_until_closed(raw)
            assert time.monotonic() - started < LIMITS.socket_timeout_seconds
        fresh.answers.append(answer)
        assert answer.startswith("HTTP/1.0 413") or answer.startswith("HTTP/1.1 413"), answer
        assert f"limited to {MAX_BODY_BYTES} bytes" in answer
    status, _, _ = fresh.call(fresh.open_token, headers={"Transfer-Encoding": "chunked"},
                              body=b"")
    assert status == 411
    assert fresh.runs() == before


def test_a_body_that_never_arrives_is_dropped(fresh: Endpoint):
    before = fresh.runs()
    with socket.create_connection((fresh.host, fresh.port), timeout=10) as raw:
        raw.sendall((f"POST /launch/{JOB} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     f"{fresh.open_token}\r\nContent-Length: 100\r\n\r\n{{").encode())
        answer = read_until_closed(raw)
    fresh.answers.append(answer)
    assert " 408 " in answer.splitlines()[0], answer
    assert fresh.runs() == before


def test_a_replayed_request_id_launches_once(fresh: Endpoint):
    before = len(fresh.runs())
    request_id = f"order-{secrets.token_hex(8)}"
    first = fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})
    assert first[0] == 201, first
    replays = [fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})
               for _ in range(3)]
    assert {status for status, _, _ in replays} == {409}
    assert "already used; no run was launched" in replays[0][2]
    run_id = json.loads(first[2])["run_id"]
    launched = [r for r in fresh.runs() if r.get(REQUEST_ID_TAG) == request_id]
    assert [r["id"] for r in launched] == [run_id]
    assert len(fresh.runs()) == before + 1
    assert wait_for_run(fresh.dev, run_id) == "SUCCESS"


def test_a_failed_launch_frees_its_request_id(fresh: Endpoint):
    request_id = f"retry-{secrets.token_hex(8)}"
    refused = fresh.call(fresh.open_token, headers={"X-Request-Id": request_id},
                         body=json.dumps({"run_config": {"ops": {"no_such_op": {}}}}).encode())
    assert refused[0] == 502, refused
    assert fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})[0] == 201
    assert fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})[0] == 409


def test_a_trigger_can_require_request_ids(fresh: Endpoint):
    before = fresh.runs()
    for headers in ({}, {"X-Request-Id": "short"}, {"X-Request-Id": "has spaces in it"},
                    {"X-Request-Id": "x" * 129}):
        status, _, text = fresh.call(fresh.strict_token, headers=headers)
        assert status == 400 and "X-Request-Id" in text, (headers, status, text)
    assert fresh.runs() == before
    status, _, _ = fresh.call(fresh.strict_token,
                              headers={"X-Request-Id": f"strict-{secrets.token_hex(8)}"})
    assert status == 201


def test_a_flood_is_refused_per_caller_and_bounded_in_time(fresh: Endpoint):
    """200 requests as fast as one caller can send them: the first 20 (the limit) are answered,
    the rest get 429 with Retry-After, a valid token included; another caller (127.0.0.2) is
    served meanwhile; after the window the first caller is served again."""
    before = len(fresh.runs())
    started = time.monotonic()
    statuses, retry_after = [], set()
    for _ in range(200):
        status, headers, _ = fresh.call("wrong")
        statuses.append(status)
        if status == 429:
            retry_after.add(int(headers["retry-after"]))
    elapsed = time.monotonic() - started
    assert statuses[:LIMITS.requests_per_caller] == [401] * LIMITS.requests_per_caller
    assert set(statuses[LIMITS.requests_per_caller:]) == {429}
    assert retry_after and max(retry_after) <= LIMITS.window_seconds + 1
    assert elapsed < 30, f"200 requests took {elapsed:.1f} s"
    assert fresh.call(fresh.open_token)[0] == 429  # a valid token does not jump the queue
    other = fresh.call(fresh.open_token, source="127.0.0.2")
    assert other[0] == 201, other
    assert len(fresh.runs()) == before + 1

    time.sleep(LIMITS.window_seconds + 0.5)
    assert fresh.call("wrong")[0] == 401  # the window has passed


def test_idle_connections_cannot_exhaust_the_server(fresh: Endpoint):
    """max_connections sockets that send nothing: the next caller gets 503; once the idle ones
    time out (socket_timeout_seconds) callers are served again."""
    idle = [socket.create_connection((fresh.host, fresh.port), timeout=10)
            for _ in range(LIMITS.max_connections)]
    try:
        time.sleep(0.3)
        status, headers, text = fresh.call("wrong")
        assert status == 503 and headers.get("retry-after") == "1", (status, text)
        time.sleep(LIMITS.socket_timeout_seconds + 1.0)
        assert fresh.call("wrong")[0] == 401
    finally:
        for sock in idle:
            sock.close()


def test_no_answer_names_a_job_or_workflow(endpoint: Endpoint):
    """Runs last in this module: every answer recorded above (401, 404, 408, 409, 411, 413,
    429, 503, 400, 502 and 201) is free of job and workflow names and of the tokens."""
    statuses = {int(a.removeprefix("HTTP/1.0 ").removeprefix("HTTP/1.1 ").split()[0])
                for a in endpoint.answers}
    assert statuses == {201, 400, 401, 404, 408, 409, 411, 413, 429, 502, 503}
    for answer in endpoint.answers:
        assert WORKFLOW not in answer and JOB not in answer, answer
        assert endpoint.open_token not in answer and endpoint.strict_token not in answer
