"""A small token-protected HTTP endpoint that launches a workflow's job through Dagster's GraphQL
API: `POST /launch/<job name>` with `Authorization: Bearer <token>`, `GET /health`.

Open Dagster has no authentication (dagster-io/dagster#2219), so callers outside the platform
team get this endpoint instead of the webserver: it can only launch the jobs that a spec
trigger with `when: {kind: webhook, token: {env: NAME}}` names, each with its own token, and
a caller passes only what that trigger declares (never run config: see `parse_body`).

Answers without revealing which jobs exist. The token is checked first, against every webhook
token at once (each comparison is `hmac.compare_digest` on SHA-256 digests, so every request
costs the same whatever its token or job):
- a token that opens no job at all (missing or wrong) → 401, whatever job was asked for;
- a token that opens some job, but not this one (or no job by that name exists) → 404.
Both answers carry the same body and never a job list.

The server is Starlette on uvicorn (asyncio): a slow client costs a socket, not a worker, so
`/health` and other callers are answered while many clients trickle their requests. Limits:
- a flood: each caller (connecting address) may send `requests_per_caller` requests in a sliding
  window of `window_seconds` (30 per 60 s); more get 429 with Retry-After, refused ones counting
  too. At most `max_connections` connections are open at once (more get 503), and at most
  `max_connections_per_address` from one address (more get 503 as they connect), so one
  address cannot take the whole budget. Behind a reverse proxy named in `trusted_proxies`,
  the caller is X-Forwarded-For's last hop that is not a trusted proxy.
- slow requests: the request line and headers must all arrive within `header_timeout_seconds`
  of connecting (408, then closed), the body within `body_timeout_seconds` (408).
- size: a Content-Length above 1 MiB gets 413 before the body is read (and before the token is
  checked); chunked bodies get 411; headers are limited to 16 KiB.
- hostile JSON: nesting deeper than 32, numbers longer than 30 characters, NaN/Infinity, a
  repeated key and bytes that are not UTF-8 get 400 before or while parsing, never a
  traceback; the checks are linear and run off the event loop.
- a replay: a caller may send `X-Request-Id` (8-128 letters, digits, `._:-`). It is reserved
  per trigger, for `replay_window_seconds`, in the warehouse table
  `stagecoach.webhook_requests` (so a restart and other webhook processes see it) only once the
  request is valid, and released only when the launch certainly did not happen (Dagster said
  no, or was never reached); after an unclear failure it stays used. A repeat gets 409.

No answer holds a stack trace, Dagster's own error text or an environment fact: a failed launch
gets 502 with a fixed message and a correlation id, logged here with the details (tokens
scrubbed). No log line contains a token. The caller tag holds the connecting address (a proxy's
X-Forwarded-For counts only from a trusted proxy) and the caller's own X-Caller, reduced to
plain characters.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import operator
import os
import re
import secrets
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from http import HTTPStatus
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from assets.names import (
    PARAMS_TAG,
    PARTITION_TAG,
    RUN_DAY_TAG,
    TAG_PREFIX,
    TRIGGER_TAG,
    WEBHOOK_CALLER_TAG,
    WEBHOOK_REQUEST_ID_TAG,
    job_name,
)
from assets.run_day import Calendar, DayRule, day_tags, job_dated, resolve_day
from assets.webhook_params import ParamError, check_params
from orchestration.spec_loader import LoadedWorkflow, load_workflows
from resources import settings
from resources.bookkeeping.webhook_requests import RequestIdStore
from resources.dagster_runs import DagsterRuns, LaunchFailed
from resources.warehouse import WarehouseError, WarehouseResource, first_line

LOCATION_NAME = "stagecoach"  # workspace.yaml's location_name
USER_TAG_PREFIX = "webhook/"  # callers' tags land under it: none can steer Dagster or a launcher
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
RESERVED_TAG_PREFIXES = (TAG_PREFIX, "dagster/", ".")  # `.dagster/`: Dagster's private tags
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 30
MAX_USER_TAGS = 50
MAX_CALLER_CHARS = 100
BODY_KEYS = ("params", "tags", "partition")
TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
CALLER_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:@/+=-]")
LAUNCH_PREFIX = "/launch/"
DENIED = {"error": "unknown job or wrong token"}  # one body for 401 and 404 (see above)

log = logging.getLogger("stagecoach.webhook")


class WebhookConfigError(Exception):
    """The server cannot start: a token variable is missing, or no trigger is a webhook."""


@dataclass(frozen=True)
class WebhookTarget:
    """One webhook trigger: the job it launches, the digest of its token, what callers may pass."""

    workflow: str
    trigger: str
    job: str
    token_digest: bytes = field(repr=False)
    require_request_id: bool = False
    params: Mapping[str, str] = field(default_factory=dict)
    partition_start: date | None = None  # the workflow's start_date: its jobs are dated
    timezone: str = "UTC"
    dated: bool = False  # the job is daily-partitioned (assets/run_day.job_dated)
    day_rule: DayRule | None = None  # the trigger's `partition:`


@dataclass(frozen=True)
class WebhookLimits:
    """How much one caller may ask, how long it may take, and how long ids are remembered."""

    requests_per_caller: int = 30
    window_seconds: float = 60.0
    replay_window_seconds: float = 600.0
    max_connections: int = 1000
    max_connections_per_address: int = 16  # so one address cannot hold the whole budget
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    max_callers_tracked: int = 10_000
    # Reverse proxies in front of this server: their X-Forwarded-For names the caller, and
    # their connections are not capped per address (the proxy multiplexes every caller).
    trusted_proxies: frozenset[str] = frozenset()


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
        info = item.spec.workflow
        for name, trigger in item.spec.triggers.items():
            if trigger.when.kind != "webhook" or not trigger.enabled:
                continue
            variable = trigger.when.token.env
            token = environ.get(variable, "")
            if not token:
                missing.append(f"{variable} (trigger {name!r} of workflow {info.name!r}, "
                               f"{item.path})")
                continue
            targets.append(WebhookTarget(
                info.name, name, job_name(info.name, trigger.job), _digest(token),
                trigger.when.require_request_id, dict(trigger.when.params), info.start_date,
                info.timezone, job_dated(item.spec, trigger.job), trigger.partition))
            tokens.append(token)
    if missing:
        raise WebhookConfigError("webhook token variable(s) not set or empty: "
                                 + "; ".join(missing))
    if not targets:
        raise WebhookConfigError("no enabled trigger has `when: {kind: webhook}`: nothing to "
                                 "serve")
    return targets, tokens


# A launcher takes (job name, tags, run config) and returns the run id, or raises LaunchFailed.
# The webhook always passes an empty run config: what a caller may vary travels in tags.
Launcher = Callable[[str, dict[str, str], dict[str, Any]], str]


def graphql_launcher(dagster_url: str) -> Launcher:
    """Launches runs over the GraphQL API of the webserver at `dagster_url`."""
    try:
        return DagsterRuns(dagster_url, LOCATION_NAME).launch
    except ValueError:
        raise WebhookConfigError(f"--dagster-url / {settings.DAGSTER_URL_ENV} must look like "
                                 f"http://HOST:PORT, not {dagster_url!r}") from None


def request_id_store(url: str, window_seconds: float) -> RequestIdStore:
    """The request ids in the warehouse at `url`: a run holding DuckDB's lock delays a
    reservation at most 10 s (then 503)."""
    return RequestIdStore(WarehouseResource(url=url, lock_timeout_seconds=10), window_seconds)


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def sanitise_caller(value: str) -> str:
    """The X-Caller header, safe for a tag and a log line: plain characters, ≤100 of them."""
    return " ".join(CALLER_UNSAFE.sub(" ", value).split())[:MAX_CALLER_CHARS].strip()


class BadRequest(Exception):
    """A request refused: its HTTP status, message and headers."""

    def __init__(self, status: HTTPStatus, message: str,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def _bad(message: str) -> BadRequest:
    return BadRequest(HTTPStatus.BAD_REQUEST, message)


# ---------------------------------------------------------------- the body


# A JSON string, matched possessively (never backtracking) and up to the end of the body when
# it is not closed, so a body of unclosed strings costs one pass, not one pass per quote.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # opening +1, closing -1 (minus 1 below)


def _check_nesting(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH before parsing (json recurses per level).

    Linear in the body and done in C (regex, translate, accumulate): a hostile body cannot
    hold the interpreter for long."""
    brackets = _JSON_STRING.sub(b"", raw).translate(_STEP, _NOT_BRACKET)
    if brackets and max(accumulate(map(operator.sub, brackets, repeat(1)))) > MAX_JSON_DEPTH:
        raise _bad(f"the body nests deeper than {MAX_JSON_DEPTH} levels")


def _number(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise _bad(f"a number in the body is longer than {MAX_NUMBER_CHARS} characters")
        return kind(text)
    return parse


def _no_constant(name: str) -> Any:
    raise _bad(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a repeated key, which value counts would
    depend on the parser (json keeps the last one), so the body is refused instead."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _bad(f"key {key!r} appears twice in one object; send each key once")
        found[key] = value
    return found


def load_json(raw: bytes) -> Any:
    """The body as JSON within the limits above; BadRequest (400) for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8") from None
    _check_nesting(raw)
    try:
        return json.loads(text, parse_int=_number(int), parse_float=_number(float),
                          parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise _bad("the body is not JSON") from None


@dataclass(frozen=True)
class LaunchRequest:
    """What a caller asked for, checked against its trigger."""

    params: dict[str, Any] = field(default_factory=dict)  # JSON values (dates as text)
    tags: dict[str, str] = field(default_factory=dict)  # already under USER_TAG_PREFIX
    partition: str | None = None


def parse_body(raw: bytes, target: WebhookTarget, today: date) -> LaunchRequest:
    """`{"params": {...}, "tags": {...}, "partition": "YYYY-MM-DD"}`, all optional.

    Never run config: resources, executors, loggers and op config stay the spec's, so a caller
    cannot point a connection, a folder or a secret elsewhere.
    """
    if not raw.strip():
        return LaunchRequest()
    body = load_json(raw)
    if not isinstance(body, dict):
        raise _bad('the body is a JSON object: {"params": {...}, "tags": {...}, '
                   '"partition": "YYYY-MM-DD"}')
    unknown = sorted(set(body) - set(BODY_KEYS))
    if unknown:
        raise _bad(f"key {unknown[0]!r} is not accepted; the body may hold only "
                   f"{', '.join(BODY_KEYS)} (run config is never taken from callers)")
    params = body.get("params", {})  # only an object or no key: [], false or null are refused
    try:
        check_params(target.params, params)
    except ParamError as wrong:
        raise _bad(str(wrong)) from None
    return LaunchRequest(params, _user_tags(body.get("tags", {})),
                         _partition(body.get("partition"), target, today))


def _user_tags(tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict) or len(tags) > MAX_USER_TAGS:
        raise _bad(f"tags must be a JSON object of at most {MAX_USER_TAGS} text values")
    checked = {}
    for key, value in tags.items():
        if key.startswith(RESERVED_TAG_PREFIXES):
            raise _bad(f"tag {key!r}: stagecoach/ and dagster/ tags are set by Stagecoach, "
                       "not callers")
        if not TAG_KEY.match(key):
            raise _bad(f"tag {key!r}: keys are 1-63 letters, digits, '_', '-' or '.' (they "
                       f"are stored as {USER_TAG_PREFIX}<key>)")
        if not isinstance(value, str) or len(value) > 1000 or not _encodable(value):
            raise _bad(f"tag {key!r}: the value must be text (≤1000 characters)")
        checked[USER_TAG_PREFIX + key] = value
    return checked


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")  # a lone surrogate (\ud800) parses but cannot be sent on
    except UnicodeEncodeError:
        return False
    return True


def _partition(value: Any, target: WebhookTarget, today: date) -> str | None:
    """A day (YYYY-MM-DD) from the workflow's start_date to today, for dated jobs only."""
    if value is None:
        return None
    if target.partition_start is None:
        raise _bad("partition: this job is not dated (its workflow has no start_date); "
                   "leave it out")
    try:
        day = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        day = None
    if day is None or not target.partition_start <= day <= today:
        raise _bad(f"partition must be a day YYYY-MM-DD from "
                   f"{target.partition_start.isoformat()} to {today.isoformat()}")
    return day.isoformat()


# ---------------------------------------------------------------- the application


def _json_answer(status: HTTPStatus, body: Mapping[str, Any],
                 headers: Mapping[str, str] | None = None) -> Response:
    # Connection: close: an unread body must never be taken for the next request.
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers={"Connection": "close", **(headers or {})})


class WebhookApp:
    """Checks in order: caller's rate, body size, token, request id header, body; then it
    reserves the request id, launches, and frees the id again if nothing was launched."""

    def __init__(self, targets: list[WebhookTarget], launcher: Launcher,
                 request_ids: RequestIdStore, secrets_to_scrub: list[str] | None = None,
                 limits: WebhookLimits | None = None,
                 clock: Callable[[str], date] | None = None):
        self.targets, self.launcher, self.request_ids = targets, launcher, request_ids
        self.secrets_to_scrub = [s for s in secrets_to_scrub or [] if s]
        self.limits = limits or WebhookLimits()
        self.rate = CallerRateLimit(self.limits.requests_per_caller, self.limits.window_seconds,
                                    self.limits.max_callers_tracked)
        self.today = clock or (lambda zone: datetime.now(ZoneInfo(zone)).date())

    def asgi(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    async def dispatch(self, request: Request) -> Response:
        """Every request: one log line (method, path without query, status, caller)."""
        caller = self.caller(request)
        try:
            answer = await self.answer(request, caller)
        except Exception as error:  # any bug: a fixed answer, the details in our log only
            answer = self.failure(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", error)
        path = CALLER_UNSAFE.sub("?", request.url.path)[:200]
        log.info("%s %s %s %s", request.method, path or "-", answer.status_code, caller)
        return answer

    async def answer(self, request: Request, caller: str) -> Response:
        path = request.url.path
        if request.method in ("GET", "HEAD") and path == "/health":
            return Response(b"ok", media_type="text/plain; charset=utf-8")
        if request.method != "POST" or not path.startswith(LAUNCH_PREFIX):
            return _json_answer(HTTPStatus.NOT_FOUND, {"error": "not found"})
        try:
            return await self.launch(request, path.removeprefix(LAUNCH_PREFIX), caller)
        except BadRequest as bad:
            return _json_answer(bad.status, {"error": bad.message}, bad.headers)

    async def launch(self, request: Request, job: str, caller: str) -> Response:
        wait = self.rate.check(self.address(request))
        if wait is not None:
            raise BadRequest(HTTPStatus.TOO_MANY_REQUESTS, "too many requests; slow down",
                             {"Retry-After": str(max(1, math.ceil(wait)))})
        length = self.content_length(request)
        status, target = self.authorise(job, self.bearer(request))
        if target is None:
            raise BadRequest(status, DENIED["error"], {"WWW-Authenticate": "Bearer"}
                             if status == HTTPStatus.UNAUTHORIZED else {})
        request_id = self.request_id(request, target)
        raw = await self.read_body(request, length)
        wanted = await run_in_threadpool(parse_body, raw, target, self.today(target.timezone))
        tags = {**wanted.tags, TRIGGER_TAG: f"webhook {target.trigger}", WEBHOOK_CALLER_TAG: caller}
        if wanted.params:
            tags[PARAMS_TAG] = json.dumps(wanted.params, sort_keys=True)
        if wanted.partition:
            tags |= {PARTITION_TAG: wanted.partition, RUN_DAY_TAG: wanted.partition}
        else:  # the rule's day (assets/run_day.py): a dated job's last complete day
            tags |= day_tags(*resolve_day(Calendar(target.timezone, target.partition_start),
                                          target.dated, datetime.now(ZoneInfo("UTC")),
                                          target.day_rule))
        if request_id:
            tags[WEBHOOK_REQUEST_ID_TAG] = request_id
        return await self.launch_once(target, request_id, tags)

    async def launch_once(self, target: WebhookTarget, request_id: str | None,
                          tags: dict[str, str]) -> Response:
        """Reserve the request id, launch, and free the id only when certainly nothing was
        launched (Dagster said no, or was never reached): after a timeout a run may exist, and
        a replay with the same id must then get 409, not a second run."""
        scope = f"{target.workflow}/{target.trigger}"
        if request_id:
            refused = await self.reserve(scope, request_id)
            if refused is not None:
                return refused
        try:
            run_id = await run_in_threadpool(self.launcher, target.job, tags, {})
        except LaunchFailed as failed:
            if failed.outcome_unknown:
                return self.failure(HTTPStatus.BAD_GATEWAY, self.unknown_outcome(request_id),
                                    failed, f"launch of {target.job}")
            if request_id:
                await self.release(scope, request_id)
            return self.failure(HTTPStatus.BAD_GATEWAY, "the launch failed; no run was "
                                "started", failed, f"launch of {target.job}")
        return _json_answer(HTTPStatus.CREATED, {"run_id": run_id})

    @staticmethod
    def unknown_outcome(request_id: str | None) -> str:
        if request_id is None:
            return ("Dagster did not confirm the launch: a run may or may not have started; "
                    f"check the runs before retrying (send {REQUEST_ID_HEADER} to make "
                    "retries safe)")
        return (f"Dagster did not confirm the launch: a run may or may not have started; look "
                f"for a run tagged {WEBHOOK_REQUEST_ID_TAG}={request_id} before retrying with a "
                f"new {REQUEST_ID_HEADER} (this one stays used)")

    async def reserve(self, scope: str, request_id: str) -> Response | None:
        """None once the id is reserved; else the answer (409, or 503 when the table cannot
        be reached)."""
        try:
            fresh = await run_in_threadpool(self.request_ids.reserve, scope, request_id)
        except WarehouseError as failed:
            return self.failure(HTTPStatus.SERVICE_UNAVAILABLE, "request ids cannot be "
                                "checked right now; retry shortly", failed,
                                f"request id of {scope}", {"Retry-After": "5"})
        if not fresh:
            return _json_answer(HTTPStatus.CONFLICT, {
                "error": f"this {REQUEST_ID_HEADER} was already used; no run was launched"})
        return None

    async def release(self, scope: str, request_id: str) -> None:
        try:
            await run_in_threadpool(self.request_ids.release, scope, request_id)
        except WarehouseError as failed:  # it then expires with the replay window
            log.error("request id of %s not released: %s", scope,
                      self.scrub(first_line(failed)))

    def failure(self, status: HTTPStatus, message: str, error: BaseException,
                what: str = "request", headers: Mapping[str, str] | None = None) -> Response:
        """A fixed answer with a correlation id; the details only in this server's log."""
        correlation = secrets.token_hex(8)
        log.error("%s %s failed (correlation id %s): %s: %s", what, status.value, correlation,
                  type(error).__name__, self.scrub(str(error))[:2000])
        return _json_answer(status, {"error": f"{message}; quote correlation id "
                                              f"{correlation} to the platform team",
                                     "correlation_id": correlation}, headers)

    # -- checks
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

    @staticmethod
    def content_length(request: Request) -> int:
        """The declared body size, refused when too large before any of the body is read."""
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
        declared = request.headers.get("content-length") or "0"
        if not declared.isdigit() or len(declared) > 12:
            raise _bad("bad Content-Length")
        if int(declared) > MAX_BODY_BYTES:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"the body is limited to {MAX_BODY_BYTES} bytes")
        return int(declared)

    async def read_body(self, request: Request, length: int) -> bytes:
        try:
            raw = await asyncio.wait_for(request.body(), self.limits.body_timeout_seconds)
        except TimeoutError:
            raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time"
                             ) from None
        except ClientDisconnect:
            raise _bad("the body is shorter than its Content-Length") from None
        if len(raw) != length:
            raise _bad("the body is shorter than its Content-Length")
        return raw

    @staticmethod
    def request_id(request: Request, target: WebhookTarget) -> str | None:
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id is None:
            if target.require_request_id:
                raise _bad(f"send an {REQUEST_ID_HEADER} header (8-128 letters, digits, "
                           "'._:-')")
            return None
        if not REQUEST_ID.match(request_id):
            raise _bad(f"{REQUEST_ID_HEADER} must be 8-128 letters, digits or '._:-'")
        return request_id

    @staticmethod
    def bearer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    def address(self, request: Request) -> str:
        """The caller's address: the connecting one, or behind a trusted proxy the last
        X-Forwarded-For hop that is not itself a trusted proxy (earlier hops are the caller's
        own claims)."""
        host = request.client.host if request.client else "-"
        trusted = self.limits.trusted_proxies
        if host not in trusted:
            return host
        hops = [hop.strip() for line in request.headers.getlist("x-forwarded-for")
                for hop in line.split(",")]
        for hop in reversed(hops):
            if hop not in trusted:
                return _ip(hop) or host
        return host

    def caller(self, request: Request) -> str:
        name = sanitise_caller(request.headers.get("x-caller", ""))
        return f"{self.address(request)} {name}".strip()

    def scrub(self, text: str) -> str:
        for secret in self.secrets_to_scrub:
            text = text.replace(secret, "***")
        return text


# ---------------------------------------------------------------- the server


_TIMED_OUT = json.dumps({"error": "the request did not arrive in time"}).encode()
REQUEST_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                          b"Connection: close\r\nContent-Length: "
                          + str(len(_TIMED_OUT)).encode() + b"\r\n\r\n" + _TIMED_OUT)


_BUSY = json.dumps({"error": "too many open connections from this address"}).encode()
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Retry-After: 5\r\nConnection: close\r\nContent-Length: "
               + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with two guards against slow clients:
    - a deadline for the whole request head: uvicorn's own keep-alive timer restarts on every
      byte, so a client trickling a header line every few seconds would keep the connection;
    - at most `per_address` open connections per client address, checked when a connection is
      accepted (extra ones get 503 and are closed at once), so one address cannot take the
      server's whole connection budget. The counts live on the class `WebhookServer` makes
      for each server, and are touched only on the event loop."""

    header_timeout = 10.0
    per_address = 16
    uncapped: frozenset[str] = frozenset()
    open_by_address: Counter[str]  # set per server

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._counted: str | None = None
        host = self.client[0] if self.client else "-"
        if host not in self.uncapped:
            if self.open_by_address[host] >= self.per_address:
                self._head_deadline: asyncio.TimerHandle | None = None
                transport.write(BUSY_ANSWER)
                transport.close()
                return
            self.open_by_address[host] += 1
            self._counted = host
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:
            self._cancel_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        counted: str | None = getattr(self, "_counted", None)
        if counted is not None:
            self.open_by_address[counted] -= 1
            if self.open_by_address[counted] <= 0:
                del self.open_by_address[counted]
            self._counted = None
        super().connection_lost(exc)

    def _cancel_head_deadline(self) -> None:
        if (deadline := getattr(self, "_head_deadline", None)) is not None:
            deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT_ANSWER)
            self.transport.close()


class WebhookServer:
    """The app on uvicorn, bound at construction (port 0 picks a free one): `serve_forever` in
    one thread, `shutdown` from another."""

    def __init__(self, address: tuple[str, int], targets: list[WebhookTarget],
                 launcher: Launcher, request_ids: RequestIdStore,
                 secrets_to_scrub: list[str] | None = None,
                 limits: WebhookLimits | None = None):
        self.app = WebhookApp(targets, launcher, request_ids, secrets_to_scrub, limits)
        limits = self.app.limits
        self.socket = socket.create_server(address, backlog=1024)
        self.server_address = self.socket.getsockname()[:2]
        protocol = type("WebhookH11", (_GuardedH11,), {
            "header_timeout": limits.header_timeout_seconds,
            "per_address": limits.max_connections_per_address,
            "uncapped": frozenset(limits.trusted_proxies), "open_by_address": Counter()})
        self.uvicorn = uvicorn.Server(uvicorn.Config(
            self.app.asgi(), http=protocol, lifespan="off", log_config=None, access_log=False,
            limit_concurrency=limits.max_connections, timeout_keep_alive=1,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES, server_header=False,
            timeout_graceful_shutdown=5))
        self._stopped = threading.Event()

    @property
    def rate(self) -> CallerRateLimit:
        return self.app.rate

    @rate.setter
    def rate(self, value: CallerRateLimit) -> None:
        self.app.rate = value

    def serve_forever(self) -> None:
        self._stopped.clear()
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 15.0) -> None:
        self.uvicorn.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(host: str, port: int, targets: list[WebhookTarget], launcher: Launcher,
                request_ids: RequestIdStore, secrets_to_scrub: list[str] | None = None,
                limits: WebhookLimits | None = None) -> WebhookServer:
    """The webhook's HTTP server over `targets`, launching runs through `launcher`."""
    return WebhookServer((host, port), targets, launcher, request_ids, secrets_to_scrub, limits)


def serve(host: str, port: int, dagster_url: str, workflows: Path | None = None,
          limits: WebhookLimits | None = None, requests_url: str | None = None) -> None:
    """Load the specs, read the tokens, and answer until interrupted.

    Raises WebhookConfigError (or SpecInvalid) when it cannot start.
    """
    limits = limits or WebhookLimits()
    targets, tokens = webhook_targets(load_workflows(workflows))
    store = request_id_store(requests_url or settings.warehouse_url(),
                             limits.replay_window_seconds)
    try:
        store.ensure()
    except WarehouseError as failed:
        raise WebhookConfigError(f"the request id table cannot be created in the warehouse "
                                 f"{store.warehouse.safe_url}: {first_line(failed)}") from None
    server = make_server(host, port, targets, graphql_launcher(dagster_url), store, tokens,
                         limits)
    jobs = sorted({t.job for t in targets})
    log.info("webhook listening on http://%s:%s; launches %d job(s) on %s: %s; request ids in "
             "%s", host, server.server_address[1], len(jobs), dagster_url, ", ".join(jobs),
             store.warehouse.safe_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("webhook stopped")
    finally:
        server.server_close()
