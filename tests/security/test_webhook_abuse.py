"""The webhook endpoint under abuse: wrong or missing tokens, replayed, oversized and slow
requests, hostile JSON, run config smuggled in, and a flood, are refused without launching a
run, and no answer names a job, holds a trace or an environment fact.

The endpoint runs in this process (so its limits can be small) and launches through GraphQL
into a real `dagster dev` (webserver and daemon) on loopback; the runs that exist in that
instance are counted before and after each attack. Every answer is recorded, and the last test
checks that none of them holds a job or workflow name.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from assets.names import PARAMS_TAG, WEBHOOK_REQUEST_ID_TAG
from orchestration.cli.webhook import (
    MAX_BODY_BYTES,
    Launcher,
    WebhookLimits,
    WebhookServer,
    WebhookTarget,
    graphql_launcher,
    make_server,
    request_id_store,
    webhook_targets,
)
from orchestration.spec_loader import load_workflows
from tests.conftest import free_port
from tests.e2e.dagster_dev import (
    LOCATION,
    REPOSITORY,
    DagsterDev,
    run_details,
    running_dagster_dev,
    wait_for_run,
)

pytestmark = [pytest.mark.security, pytest.mark.timeout(600)]

WORKFLOW, JOB = "hooks", "hooks_job"
OPEN_TOKEN_ENV, STRICT_TOKEN_ENV = "SECURITY_OPEN_TOKEN", "SECURITY_STRICT_TOKEN"
LIMITS = WebhookLimits(requests_per_caller=20, window_seconds=4.0, replay_window_seconds=600,
                       header_timeout_seconds=4.0, body_timeout_seconds=1.5)


def spec(root: Path) -> str:
    return f"""
workflow: {{name: {WORKFLOW}, owners: [team:data], params: {{region: eu, threshold: 1}}}}
connections:
  landing: {{kind: folder, path: {root / 'landing'}}}
couriers:
  people: {{from: landing, path: "{{{{ params.region }}}}/people.csv"}}
triggers:
  open_door: {{job: workflow, when: {{kind: webhook, token: {{env: {OPEN_TOKEN_ENV}}},
                                      params: {{region: str, threshold: int}}}}}}
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
    store_url: str
    answers: list[str] = field(default_factory=list)  # every status line, header and body

    def call(self, token: str | None, job: str = JOB, body: bytes = b"",
             headers: dict[str, str] | None = None, source: str = "127.0.0.1",
             port: int | None = None) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection(self.host, port or self.port, timeout=30,
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
    for region in ("eu", "us"):
        (root / "landing" / region).mkdir()
        (root / "landing" / region / "people.csv").write_text("id,name\n1,ada\n")
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
        store_url = f"duckdb:///{root / 'data' / 'requests.duckdb'}"
        with serving(targets, graphql_launcher(dev.url), store_url, raw) as server:
            yield Endpoint(dev, server, "127.0.0.1", server.server_address[1],
                           tokens[OPEN_TOKEN_ENV], tokens[STRICT_TOKEN_ENV], store_url)


@contextlib.contextmanager
def serving(targets: list[WebhookTarget], launcher: Launcher, store_url: str,
            secrets_to_scrub: list[str], limits: WebhookLimits = LIMITS
            ) -> Iterator[WebhookServer]:
    """A real webhook server on a free loopback port, in a thread of this process."""
    server = make_server("127.0.0.1", 0, targets, launcher,
                         request_id_store(store_url, limits.replay_window_seconds),
                         secrets_to_scrub, limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


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
            assert time.monotonic() - started < LIMITS.header_timeout_seconds
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
    launched = [r for r in fresh.runs() if r.get(WEBHOOK_REQUEST_ID_TAG) == request_id]
    assert [r["id"] for r in launched] == [run_id]
    assert len(fresh.runs()) == before + 1
    assert wait_for_run(fresh.dev, run_id) == "SUCCESS"


def ghost_target(token: str) -> WebhookTarget:
    """A trigger whose job the running Dagster does not have: Dagster refuses the launch."""
    return WebhookTarget(WORKFLOW, "ghost", "ghost_job",
                         hashlib.sha256(token.encode()).digest())


def test_a_failed_launch_answers_without_details_and_frees_its_id(
        fresh: Endpoint, caplog: pytest.LogCaptureFixture):
    """Dagster refuses the launch: 502 with a fixed message and a correlation id, nothing of
    Dagster's answer, no trace; the id is logged here with the details; the request id is
    freed, so the honest retry is not a 409."""
    request_id = f"retry-{secrets.token_hex(8)}"
    caplog.set_level("INFO", logger="stagecoach.webhook")
    with serving([ghost_target(fresh.open_token)], graphql_launcher(fresh.dev.url),
                 fresh.store_url, [fresh.open_token]) as ghost:
        answers = [fresh.call(fresh.open_token, job="ghost_job", port=ghost.server_address[1],
                              headers={"X-Request-Id": request_id}) for _ in range(2)]
    for status, _, text in answers:
        assert status == 502, (status, text)
        body = json.loads(text)
        assert set(body) == {"error", "correlation_id"}, body
        assert body["error"] == ("the launch failed; no run was started; quote correlation id "
                                 f"{body['correlation_id']} to the platform team")
        assert body["correlation_id"] in caplog.text  # the details are in the server's log
    assert "ghost_job" in caplog.text and fresh.open_token not in caplog.text
    assert fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})[0] == 201


def test_an_unreachable_request_id_table_answers_503_without_details(fresh: Endpoint):
    """The request id table cannot be reached (nothing listens on the port): 503 with
    Retry-After and a fixed message, never the database URL or the driver's error."""
    url = f"postgresql+psycopg2://stagecoach:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    before = fresh.runs()
    targets, raw = webhook_targets(load_workflows(fresh.dev.workflows),
                                   {OPEN_TOKEN_ENV: fresh.open_token,
                                    STRICT_TOKEN_ENV: fresh.strict_token})
    with serving(targets, graphql_launcher(fresh.dev.url), url, raw) as broken:
        status, headers, text = fresh.call(fresh.open_token, port=broken.server_address[1],
                                           headers={"X-Request-Id": f"db-{secrets.token_hex(8)}"})
    assert status == 503 and headers.get("retry-after") == "5", (status, text)
    assert set(json.loads(text)) == {"error", "correlation_id"}
    for fact in ("s3cret", "postgresql", "5432", "nowhere", "psycopg", "Traceback"):
        assert fact not in text, text
    assert fresh.runs() == before


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


def trickle(port: int, stop: threading.Event, got: list[bytes], source: str = "127.0.0.1"
            ) -> None:
    """A slow client: one header line every 1.5 s, never finishing the request head."""
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as raw:
        raw.sendall(f"POST /launch/{JOB} HTTP/1.1\r\n".encode())
        raw.settimeout(1.5)
        for line in range(1000):
            try:
                got.append(raw.recv(65536))
                return  # the server answered (408) and closed
            except TimeoutError:
                pass
            if stop.is_set():
                return
            try:
                raw.sendall(f"X-Slow-{line}: x\r\n".encode())
            except OSError:
                got.append(b"")
                return


def test_slow_clients_cannot_starve_the_server(fresh: Endpoint):
    """40 clients trickle header lines: /health answers within 1 s throughout, other callers
    are served, and each slow client is cut off with 408 at the header deadline however often
    it sends a byte (the old server held a worker per client and answered 503). They come
    from three addresses, within the 16 connections one address may hold (see
    test_webhook_review for that cap)."""
    stop, got = threading.Event(), []
    clients = [threading.Thread(target=trickle, args=(fresh.port, stop, got,
                                                      f"127.0.0.{3 + n % 3}"), daemon=True)
               for n in range(40)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        health = []
        deadline = time.monotonic() + LIMITS.header_timeout_seconds + 1
        while time.monotonic() < deadline:
            started = time.monotonic()
            connection = http.client.HTTPConnection(fresh.host, fresh.port, timeout=5)
            connection.request("GET", "/health")
            answer = connection.getresponse()
            health.append((answer.status, answer.read(), time.monotonic() - started))
            connection.close()
            time.sleep(0.25)
        assert health and all(s == 200 and b == b"ok" for s, b, _ in health), health[:3]
        assert max(t for _, _, t in health) < 1.0, max(t for _, _, t in health)
        assert fresh.call("wrong")[0] == 401  # a launch request is served meanwhile
        for client in clients:
            client.join(timeout=LIMITS.header_timeout_seconds + 5)
        assert len(got) == 40
        assert all(g.startswith(b"HTTP/1.1 408") for g in got), got[:3]
        fresh.answers.append(got[0].decode())
    finally:
        stop.set()


HOSTILE_BODIES = {
    "200 KB of [": b"[" * 200_000,
    "a 5,000-digit integer": b'{"params": {"threshold": ' + b"9" * 5000 + b"}}",
    "invalid UTF-8": b'{"tags": {"k": "\xff\xfe"}}',
    "NaN": b'{"params": {"threshold": NaN}}',
    "not JSON": b'{"params": ',
}


@pytest.mark.bad_input
def test_hostile_json_gets_400_and_the_honest_retry_launches(fresh: Endpoint):
    """Each hostile body is answered 400 (the old server dropped the connection and kept the
    request id reserved); the same X-Request-Id then launches once."""
    request_id = f"hostile-{secrets.token_hex(8)}"
    before = fresh.runs()
    for name, body in HOSTILE_BODIES.items():
        status, _, text = fresh.call(fresh.open_token, body=body,
                                     headers={"X-Request-Id": request_id})
        assert status == 400, (name, status, text)
        assert "Traceback" not in text and len(text) < 300, (name, text)
    assert fresh.runs() == before
    assert fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})[0] == 201
    assert fresh.call(fresh.open_token, headers={"X-Request-Id": request_id})[0] == 409


@pytest.mark.parametrize("body", [
    {"run_config": {"resources": {f"{WORKFLOW}__landing": {"config": {"path": "/srv/x"}}}}},
    {"run_config": {}},
    {"resources": {"warehouse": {"config": {"url": "duckdb:///tmp/x"}}}},
    {"execution": {"config": {}}},
    {"params": {"threshold": 2}, "loggers": {}},
], ids=["run_config.resources", "empty run_config", "resources", "execution", "loggers"])
def test_run_config_is_refused(fresh: Endpoint, body: dict):
    """Connections, folders and secrets stay the spec's: no part of a run config is taken."""
    before = fresh.runs()
    status, _, text = fresh.call(fresh.open_token, body=json.dumps(body).encode())
    assert status == 400, (status, text)
    assert "the body may hold only params, tags, partition" in text, text
    assert fresh.runs() == before


@pytest.mark.bad_input
@pytest.mark.parametrize(("body", "named"), [
    ({"params": {"region": 3}}, "param 'region' must be text"),
    ({"params": {"threshold": "5"}}, "param 'threshold' must be a whole number (int)"),
    ({"params": {"threshold": True}}, "param 'threshold' must be a whole number (int)"),
    ({"params": {"path": "/srv"}}, "param 'path' is not declared by this trigger; allowed: "
                                   "region (str), threshold (int)"),
    ({"params": ["region"]}, "params must be a JSON object"),
    ({"tags": {"dagster-k8s/config": "{}"}}, "tag 'dagster-k8s/config': keys are"),
    ({"tags": {"dagster/priority": "9"}}, "tag 'dagster/priority': stagecoach/ and dagster/"),
    ({"partition": "2026-01-01"}, "partition: this job is not dated"),
])
def test_params_tags_and_partition_are_checked(fresh: Endpoint, body: dict, named: str):
    before = fresh.runs()
    status, _, text = fresh.call(fresh.open_token, body=json.dumps(body).encode())
    assert (status, json.loads(text)["error"][:len(named)]) == (400, named), text
    assert fresh.runs() == before


MATERIALIZED = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { eventConnection { events {
    __typename ... on MaterializationEvent { metadataEntries { label
        ... on MarkdownMetadataEntry { mdStr } } } } } } } }
"""


def courier_files(dev: DagsterDev, run_id: str) -> str:
    events = dev.graphql(MATERIALIZED, {"runId": run_id})["runOrError"]["eventConnection"]
    return " ".join(e["mdStr"] for event in events["events"]
                    for e in event.get("metadataEntries", []) if e["label"] == "files")


def test_declared_params_reach_the_runs_templates(fresh: Endpoint):
    """`region` picks the courier's folder through `{{ params.region }}`: the run reads
    us/people.csv instead of the workflow's default eu/; caller tags land under webhook/."""
    status, _, text = fresh.call(fresh.open_token, body=json.dumps({
        "params": {"region": "us", "threshold": 5}, "tags": {"ticket": "OPS-7"}}).encode())
    assert status == 201, text
    run_id = json.loads(text)["run_id"]
    assert wait_for_run(fresh.dev, run_id) == "SUCCESS", run_details(fresh.dev, run_id)
    tags = run_details(fresh.dev, run_id)["tags"]
    assert json.loads(tags[PARAMS_TAG]) == {"region": "us", "threshold": 5}
    assert tags["webhook/ticket"] == "OPS-7" and "ticket" not in tags
    assert "us/people.csv" in courier_files(fresh.dev, run_id)
    status, _, text = fresh.call(fresh.open_token)  # no params: the workflow's own
    run_id = json.loads(text)["run_id"]
    assert wait_for_run(fresh.dev, run_id) == "SUCCESS"
    assert "eu/people.csv" in courier_files(fresh.dev, run_id)


@pytest.mark.parametrize(("tags", "named"), [
    ({PARAMS_TAG: '{"region": "us", "path": "/srv"}', "stagecoach/trigger": "webhook open_door"},
     "param 'path' is not declared"),
    ({PARAMS_TAG: '{"region": 7}', "stagecoach/trigger": "webhook open_door"},
     "param 'region' must be text"),
    ({PARAMS_TAG: '{"region": "us"}'}, "was not launched by a webhook trigger"),
])
def test_a_forged_params_tag_fails_the_run(fresh: Endpoint, tags: dict, named: str):
    """A params tag set elsewhere (here GraphQL, as the launchpad would) is checked again when
    the run renders its templates: the run fails naming the param, reading nothing."""
    run_id = fresh.dev.client().submit_job_execution(
        JOB, repository_location_name=LOCATION, repository_name=REPOSITORY, tags=tags)
    assert wait_for_run(fresh.dev, run_id) == "FAILURE"
    failures = " ".join(run_details(fresh.dev, run_id)["failures"])
    assert named in failures, failures


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_request_ids_survive_a_restart_and_are_shared(fresh: Endpoint, store: str,
                                                      request: pytest.FixtureRequest,
                                                      tmp_path: Path):
    """Two webhook servers on one request id table: an id used on one is refused (409) by the
    other, also after both restart; the same new id sent to both at once launches once."""
    url = (request.getfixturevalue("postgres_url") if store == "postgres"
           else f"duckdb:///{tmp_path / 'requests.duckdb'}")
    targets, raw = webhook_targets(load_workflows(fresh.dev.workflows),
                                   {OPEN_TOKEN_ENV: fresh.open_token,
                                    STRICT_TOKEN_ENV: fresh.strict_token})
    launcher, used = graphql_launcher(fresh.dev.url), f"shared-{secrets.token_hex(8)}"
    before = len(fresh.runs())
    with serving(targets, launcher, url, raw) as one, serving(targets, launcher, url, raw) as two:
        ports = one.server_address[1], two.server_address[1]
        assert fresh.call(fresh.open_token, port=ports[0], headers={"X-Request-Id": used})[0] == 201
        assert fresh.call(fresh.open_token, port=ports[1], headers={"X-Request-Id": used})[0] == 409
        racing, answers = f"race-{secrets.token_hex(8)}", []
        racers = [threading.Thread(target=lambda p=p: answers.append(fresh.call(
            fresh.open_token, port=p, headers={"X-Request-Id": racing})[0])) for p in ports * 2]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
        assert sorted(answers) == [201, 409, 409, 409], answers
    with serving(targets, launcher, url, raw) as restarted:
        port = restarted.server_address[1]
        for request_id in (used, racing):
            assert fresh.call(fresh.open_token, port=port,
                              headers={"X-Request-Id": request_id})[0] == 409
    assert len(fresh.runs()) == before + 2


def test_no_answer_names_a_job_or_workflow(endpoint: Endpoint):
    """Runs last in this module: every answer recorded above (401, 404, 408, 409, 411, 413,
    429, 503, 400, 502 and 201) is free of job and workflow names and of the tokens."""
    statuses = {int(a.removeprefix("HTTP/1.0 ").removeprefix("HTTP/1.1 ").split()[0])
                for a in endpoint.answers}
    assert statuses == {201, 400, 401, 404, 408, 409, 411, 413, 429, 502, 503}
    assert not any("Traceback" in answer for answer in endpoint.answers)
    for answer in endpoint.answers:
        assert WORKFLOW not in answer and JOB not in answer, answer
        assert endpoint.open_token not in answer and endpoint.strict_token not in answer
