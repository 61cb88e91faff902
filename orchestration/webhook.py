"""A small token-protected HTTP endpoint that launches a workflow's job through Dagster's GraphQL
API: `POST /launch/<job name>` with `Authorization: Bearer <token>`, `GET /health`.

Open Dagster has no authentication (dagster-io/dagster#2219), so callers outside the platform
team get this endpoint instead of the webserver: it can only launch the jobs that a spec
trigger with `when: {kind: webhook, token: {env: NAME}}` names, each with its own token.

Answers without revealing which jobs exist. The token is checked first, against every webhook
token at once (each comparison is `hmac.compare_digest` on SHA-256 digests, so every request
costs the same whatever its token or job):
- a token that opens no job at all (missing or wrong) → 401, whatever job was asked for;
- a token that opens some job, but not this one (or no job by that name exists) → 404.
Both answers carry the same body and never a job list. A caller without a valid token thus
always gets 401 and learns nothing about job names; a caller with a valid token learns only
that its token does not open the name it asked for. (Answering 404 to unknown jobs before
checking the token would let anyone enumerate the job names by their 401s.)

Abuse is refused before a run is launched, and no refusal names a job:
- a flood: each caller (connecting address) may send `requests_per_caller` requests in a sliding
  window of `window_seconds` (30 per 60 s); more get 429 with Retry-After, refused ones
  counting too, so a flooding caller stays refused until it slows down. At most
  `max_connections` connections are served at once (more get 503) and a connection that sends
  nothing for `socket_timeout_seconds` is closed, so slow clients cannot hold the server.
- an oversized body: a Content-Length above 1 MiB gets 413 before the body is read (and before
  the token is checked); chunked bodies get 411.
- a replay: a caller may send `X-Request-Id` (8-128 letters, digits, `._:-`); the id is
  remembered per trigger for `replay_window_seconds` (10 min), and a request repeating it gets
  409 without a launch (a launch that failed forgets the id, so the caller can retry). A trigger
  with `require_request_id: true` refuses calls without one (400). The run is tagged with the
  id. This makes retries by the caller's side (a proxy, a queue redelivering) safe; it is not a
  signature: whoever holds the token can send a new id, so the token stays the credential.

Tokens are read from the environment once, when the server starts; a trigger whose variable
is missing or empty stops the start (an empty token would open the job to `Bearer `).
Disabled triggers (`enabled: false`) accept no calls. No answer and no log line contains a
token or another environment value. The caller tag holds the connecting address (a proxy's
X-Forwarded-For is not trusted) and the caller's own X-Caller, reduced to plain characters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orchestration import settings
from orchestration.spec_loader import LoadedWorkflow, load_workflows
from resources.dagster_runs import DagsterRuns, LaunchFailed
from sensors.common import TRIGGER_TAG, job_name

LOCATION_NAME = "stagecoach"  # workspace.yaml's location_name
CALLER_TAG = "stagecoach/webhook_caller"
REQUEST_ID_TAG = "stagecoach/webhook_request_id"
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
RESERVED_TAG_PREFIXES = ("stagecoach/", "dagster/", ".")  # `.dagster/`: Dagster's private tags
MAX_BODY_BYTES = 1024 * 1024
LINGER_SECONDS, LINGER_BYTES = 0.5, 1024 * 1024  # see WebhookServer.shutdown_request
MAX_USER_TAGS = 50
MAX_CALLER_CHARS = 100
TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}(/[A-Za-z0-9_.-]{1,63})?$")
CALLER_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:@/+=-]")
LAUNCH_PREFIX = "/launch/"
DENIED = {"error": "unknown job or wrong token"}  # one body for 401 and 404 (see above)

log = logging.getLogger("stagecoach.webhook")


class WebhookConfigError(Exception):
    """The server cannot start: a token variable is missing, or no trigger is a webhook."""


@dataclass(frozen=True)
class WebhookTarget:
    """One webhook trigger: the job it launches and the digest of its token."""

    workflow: str
    trigger: str
    job: str
    token_digest: bytes = field(repr=False)
    require_request_id: bool = False


@dataclass(frozen=True)
class WebhookLimits:
    """How much one caller may ask, and how long a request id is remembered (see above)."""

    requests_per_caller: int = 30
    window_seconds: float = 60.0
    replay_window_seconds: float = 600.0
    max_connections: int = 32
    socket_timeout_seconds: float = 10.0
    max_callers_tracked: int = 10_000
    max_request_ids: int = 100_000


class CallerRateLimit:
    """A sliding window of request times per caller; memory is bounded by forgetting the
    callers seen least recently once `max_callers` are tracked."""

    def __init__(self, limit: int, window_seconds: float, max_callers: int,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.max_callers, self.clock = (limit, window_seconds,
                                                                  max_callers, clock)
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, caller: str) -> float | None:
        """Count this request; None if it may go on, else the seconds until it could."""
        now = self.clock()
        with self._lock:
            times = self._seen.pop(caller, None) or deque()
            while times and times[0] <= now - self.window:
                times.popleft()
            times.append(now)
            while len(times) > self.limit + 1:  # keep what decides the next answer only
                times.popleft()
            self._seen[caller] = times
            while len(self._seen) > self.max_callers:
                self._seen.popitem(last=False)
            if len(times) <= self.limit:
                return None
            return max(times[0] + self.window - now, 0.0)


class RequestIds:
    """Request ids seen per trigger within the replay window (bounded: when full, refuse)."""

    def __init__(self, window_seconds: float, capacity: int,
                 clock: Callable[[], float] = time.monotonic):
        self.window, self.capacity, self.clock = window_seconds, capacity, clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def reserve(self, scope: str, request_id: str) -> bool | None:
        """True: first use (now remembered); False: seen within the window; None: full."""
        now = self.clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) <= now - self.window:
                self._seen.popitem(last=False)
            if (scope, request_id) in self._seen:
                return False
            if len(self._seen) >= self.capacity:
                return None
            self._seen[(scope, request_id)] = now
            return True

    def release(self, scope: str, request_id: str) -> None:
        with self._lock:
            self._seen.pop((scope, request_id), None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def webhook_targets(loaded: list[LoadedWorkflow], environ: Mapping[str, str] | None = None
                    ) -> tuple[list[WebhookTarget], list[str]]:
    """Every enabled webhook trigger of the specs, and the raw tokens (to scrub from messages).

    Raises WebhookConfigError naming every missing variable (never a value).
    """
    environ = os.environ if environ is None else environ
    targets, tokens, missing = [], [], []
    for item in loaded:
        workflow = item.spec.workflow.name
        for name, trigger in item.spec.triggers.items():
            if trigger.when.kind != "webhook" or not trigger.enabled:
                continue
            variable = trigger.when.token.env
            token = environ.get(variable, "")
            if not token:
                missing.append(f"{variable} (trigger {name!r} of workflow {workflow!r}, "
                               f"{item.path})")
                continue
            targets.append(WebhookTarget(workflow, name, job_name(workflow, trigger.job),
                                         _digest(token), trigger.when.require_request_id))
            tokens.append(token)
    if missing:
        raise WebhookConfigError("webhook token variable(s) not set or empty: "
                                 + "; ".join(missing))
    if not targets:
        raise WebhookConfigError("no enabled trigger has `when: {kind: webhook}`: nothing to "
                                 "serve")
    return targets, tokens


# A launcher takes (job name, tags, run config) and returns the run id, or raises LaunchFailed.
Launcher = Callable[[str, dict[str, str], dict[str, Any]], str]


def graphql_launcher(dagster_url: str) -> Launcher:
    """Launches runs over the GraphQL API of the webserver at `dagster_url`."""
    try:
        return DagsterRuns(dagster_url, LOCATION_NAME).launch
    except ValueError:
        raise WebhookConfigError(f"--dagster-url / {settings.DAGSTER_URL_ENV} must look like "
                                 f"http://HOST:PORT, not {dagster_url!r}") from None


def sanitise_caller(value: str) -> str:
    """The X-Caller header, safe for a tag and a log line: plain characters, ≤100 of them."""
    return " ".join(CALLER_UNSAFE.sub(" ", value).split())[:MAX_CALLER_CHARS].strip()


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_body(raw: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """`{"run_config": {...}, "tags": {...}}` (both optional) → run config and user tags."""
    if not raw.strip():
        return {}, {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, 'the body is a JSON object: '
                                                 '{"run_config": {...}, "tags": {...}}')
    unknown = sorted(set(body) - {"run_config", "tags"})
    if unknown:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"unknown key(s) {unknown}; known: "
                                                 "run_config, tags")
    run_config, tags = body.get("run_config") or {}, body.get("tags") or {}
    if not isinstance(run_config, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "run_config must be a JSON object")
    if not isinstance(tags, dict) or len(tags) > MAX_USER_TAGS:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"tags must be a JSON object of at most "
                                                 f"{MAX_USER_TAGS} text values")
    for key, value in tags.items():
        if key.startswith(RESERVED_TAG_PREFIXES):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"tag {key!r}: stagecoach/ and dagster/ "
                                                     "tags are set by Stagecoach, not callers")
        if not TAG_KEY.match(key):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"tag {key!r}: keys are letters, digits, "
                                                     "'_', '-', '.', at most one '/', ≤63 each")
        if not isinstance(value, str) or len(value) > 1000:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"tag {key!r}: the value must be text "
                                                     "(≤1000 characters)")
    return run_config, tags


BUSY = json.dumps({"error": "too many connections; retry shortly"}).encode()
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
               + str(len(BUSY)).encode() + b"\r\n\r\n" + BUSY)


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], targets: list[WebhookTarget],
                 launcher: Launcher, secrets_to_scrub: list[str] | None = None,
                 limits: WebhookLimits | None = None):
        super().__init__(address, WebhookHandler)
        self.targets = targets
        self.launcher = launcher
        self.secrets_to_scrub = [s for s in secrets_to_scrub or [] if s]
        self.limits = limits or WebhookLimits()
        self.rate = CallerRateLimit(self.limits.requests_per_caller, self.limits.window_seconds,
                                    self.limits.max_callers_tracked)
        self.request_ids = RequestIds(self.limits.replay_window_seconds,
                                      self.limits.max_request_ids)
        self.slots = threading.BoundedSemaphore(self.limits.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most `max_connections` at once; the rest get 503."""
        if not self.slots.acquire(blocking=False):
            log.warning("busy: %s refused (%d connections open)", client_address[0],
                        self.limits.max_connections)
            try:  # no lingering here: this is the accepting thread
                request.settimeout(1.0)
                request.sendall(BUSY_ANSWER)
                request.shutdown(socket.SHUT_WR)
                request.setblocking(False)
                request.recv(65536)  # what already arrived, so closing sends no reset
            except OSError:
                pass
            self.close_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Close after the answer has left: stop writing, then read and drop what the caller
        still sends (an unread body, at most LINGER_BYTES for LINGER_SECONDS). Closing with
        unread bytes would send a reset that can destroy the answer (e.g. a 413) before the
        caller reads it."""
        try:
            request.shutdown(socket.SHUT_WR)
            request.settimeout(LINGER_SECONDS)
            deadline, drained = time.monotonic() + LINGER_SECONDS, 0
            while drained < LINGER_BYTES and time.monotonic() < deadline:
                chunk = request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def authorise(self, job: str, token: str | None) -> tuple[HTTPStatus, WebhookTarget | None]:
        """401 when the token opens no job, 404 when it opens others but not `job` (see above).

        Every target's digest is compared, without stopping at a match, so the time taken does
        not depend on which token or job was asked for.
        """
        presented = _digest(token if token is not None else secrets.token_urlsafe(32))
        opened = [t for t in self.targets if hmac.compare_digest(presented, t.token_digest)]
        if token is None or not opened:
            return HTTPStatus.UNAUTHORIZED, None
        hit = next((t for t in opened if t.job == job), None)
        return (HTTPStatus.CREATED, hit) if hit else (HTTPStatus.NOT_FOUND, None)

    def scrub(self, text: str) -> str:
        for secret in self.secrets_to_scrub:
            text = text.replace(secret, "***")
        return text


class WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookServer
    server_version = "stagecoach-webhook"
    sys_version = ""
    caller = ""

    def do_GET(self) -> None:
        if self._path() == "/health":
            self._answer(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def setup(self) -> None:
        self.timeout = self.server.limits.socket_timeout_seconds  # slow clients are dropped
        super().setup()

    def do_POST(self) -> None:
        """Checks in order: caller's rate, body size, token, request id, body; then launch."""
        wait = self.server.rate.check(self.client_address[0])
        if wait is not None:
            self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": "too many requests; slow down"},
                       {"Retry-After": str(max(1, math.ceil(wait)))})
            return
        path = self._path()
        if not path.startswith(LAUNCH_PREFIX):
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            length = self._content_length()
        except BadRequest as bad:
            self._json(bad.status, {"error": bad.message})
            return
        job = path.removeprefix(LAUNCH_PREFIX)
        status, target = self.server.authorise(job, self._bearer())
        if target is None:
            headers = {"WWW-Authenticate": "Bearer"} if status == HTTPStatus.UNAUTHORIZED else {}
            self._json(status, DENIED, headers)
            return
        scope = f"{target.workflow}/{target.trigger}"
        try:
            request_id = self._request_id(target, scope)
            run_config, user_tags = parse_body(self._read_body(length))
        except BadRequest as bad:
            self._forget(scope)
            self._json(bad.status, {"error": bad.message})
            return
        tags = {**user_tags, TRIGGER_TAG: f"webhook {target.trigger}", CALLER_TAG: self.caller}
        if request_id:
            tags[REQUEST_ID_TAG] = request_id
        try:
            run_id = self.server.launcher(target.job, tags, run_config)
        except LaunchFailed as failed:
            self._forget(scope)
            self._json(HTTPStatus.BAD_GATEWAY, {"error": self.server.scrub(str(failed))})
            return
        self._json(HTTPStatus.CREATED, {"run_id": run_id})

    reserved_id: str | None = None

    def _request_id(self, target: WebhookTarget, scope: str) -> str | None:
        """The request's X-Request-Id, reserved against replays (BadRequest when refused)."""
        request_id = self.headers.get(REQUEST_ID_HEADER)
        if request_id is None:
            if target.require_request_id:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"send an {REQUEST_ID_HEADER} header "
                                                         "(8-128 letters, digits, '._:-')")
            return None
        if not REQUEST_ID.match(request_id):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"{REQUEST_ID_HEADER} must be 8-128 "
                                                     "letters, digits or '._:-'")
        fresh = self.server.request_ids.reserve(scope, request_id)
        if fresh is None:
            raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE, "too many request ids in the "
                                                             "replay window; retry later")
        if not fresh:
            raise BadRequest(HTTPStatus.CONFLICT, f"this {REQUEST_ID_HEADER} was already used; "
                                                  "no run was launched")
        self.reserved_id = request_id
        return request_id

    def _forget(self, scope: str) -> None:
        """A request that launched nothing frees its id, so the caller can send it again."""
        if self.reserved_id is not None:
            self.server.request_ids.release(scope, self.reserved_id)
            self.reserved_id = None

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:
            name = sanitise_caller(self.headers.get("X-Caller", ""))
            self.caller = f"{self.client_address[0]} {name}".strip()
        return parsed

    # -- helpers
    def _path(self) -> str:
        return getattr(self, "path", "").split("?", 1)[0]

    def _bearer(self) -> str | None:
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    def _content_length(self) -> int:
        """The declared body size, refused when too large before any of the body is read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"the body is limited to {MAX_BODY_BYTES} bytes")
        return length

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length) if length else b""
        except (TimeoutError, OSError):
            raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time"
                             ) from None
        if len(body) < length:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is shorter than its "
                                                     "Content-Length")
        return body

    def _json(self, status: HTTPStatus, body: dict[str, Any],
              headers: Mapping[str, str] | None = None) -> None:
        self._answer(status, json.dumps(body).encode(), "application/json", headers)

    def _answer(self, status: HTTPStatus, data: bytes, content_type: str,
                headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")  # an unread body must not reach the next request
        self.close_connection = True
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # One line per request, our own: method, path (without the query), status and caller.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = CALLER_UNSAFE.sub("?", self._path())[:200]
        status = int(code) if str(code).isdigit() else code
        log.info("%s %s %s %s", self.command or "-", path or "-", status,
                 self.caller or self.client_address[0])

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("bad request from %s: %s", self.client_address[0],
                    CALLER_UNSAFE.sub("?", format % args)[:200])

    def log_message(self, format: str, *args: Any) -> None:
        """Silences the base class's stderr lines (they would repeat the request line)."""


def make_server(host: str, port: int, targets: list[WebhookTarget], launcher: Launcher,
                secrets_to_scrub: list[str] | None = None,
                limits: WebhookLimits | None = None) -> WebhookServer:
    return WebhookServer((host, port), targets, launcher, secrets_to_scrub, limits)


def serve(host: str, port: int, dagster_url: str, workflows: Path | None = None,
          limits: WebhookLimits | None = None) -> None:
    """Load the specs, read the tokens, and answer until interrupted.

    Raises WebhookConfigError (or SpecInvalid) when it cannot start.
    """
    targets, tokens = webhook_targets(load_workflows(workflows))
    server = make_server(host, port, targets, graphql_launcher(dagster_url), tokens, limits)
    jobs = sorted({t.job for t in targets})
    log.info("webhook listening on http://%s:%s; launches %d job(s) on %s: %s", host,
             server.server_address[1], len(jobs), dagster_url, ", ".join(jobs))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("webhook stopped")
    finally:
        server.server_close()
