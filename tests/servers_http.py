"""A scriptable, recording HTTP server on loopback for the alert-channel tests (and any test that
needs an HTTP endpoint).

`http_recorder` is session-scoped: one `http.server.ThreadingHTTPServer` on 127.0.0.1 and a
free port, in its own thread. It records every request (method, path, headers, raw body, time)
and answers each path from a script of replies (`recorder.script(path, Reply(503),
Reply(503), then=Reply(200))`); a path without a script gets 200 with an empty body. Tests
share the server safely by using their own path prefix (`recorder.unique_path("slack")`).

A test module makes the fixture visible by assigning it (an import would trip ruff's F811 where
tests take it as an argument): `http_recorder = servers_http.http_recorder`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0  # wait before answering (for client timeouts)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode(), "application/json; charset=utf-8"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return self.body, "application/octet-stream"


@dataclass(frozen=True)
class Recorded:
    method: str
    target: str  # path and query as sent
    headers: Message  # case-insensitive lookups: request.headers["authorization"]
    body: bytes
    at: float  # time.monotonic() when the request had been read

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query

    def json(self) -> Any:
        return json.loads(self.body)


class HttpRecorder:
    """The state behind the server: scripts per path and what arrived."""

    def __init__(self) -> None:
        self.url = ""  # http://127.0.0.1:PORT, set once the server listens
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._received: list[Recorded] = []

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def unique_path(self, prefix: str = "t") -> str:
        """A fresh path prefix ("/slack-1a2b3c4d") no other test uses."""
        return f"/{prefix}-{secrets.token_hex(4)}"

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answer the next requests to `path` with `replies` in order, afterwards with `then`
        (default: 200, empty body)."""
        with self._lock:
            self._scripts[path].extend(replies)
            if then is not None:
                self._defaults[path] = then

    def requests(self, path: str) -> list[Recorded]:
        """Requests to that path (query not compared), oldest first."""
        with self._lock:
            return [r for r in self._received if r.path == path]

    def requests_under(self, prefix: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self._received if r.path.startswith(prefix)]

    def _answer(self, request: Recorded) -> Reply:
        with self._lock:
            self._received.append(request)
            queue = self._scripts.get(request.path)
            if queue:
                return queue.popleft()
            return self._defaults.get(request.path, Reply())


def _handler_class(recorder: HttpRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "StagecoachTestHTTP/1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Recorded(self.command, self.path, self.headers, body, time.monotonic())
            reply = recorder._answer(request)
            if reply.delay_seconds:
                time.sleep(reply.delay_seconds)
            data, content_type = reply.encoded()
            try:
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, "Content-Length": str(len(data)),
                           **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the record is the log

    return Handler


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (a channel that is down)."""
    from conftest import free_port  # pytest has loaded it by now (not twice as tests.conftest)

    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def serving(recorder: HttpRecorder) -> Iterator[Callable[[], None]]:
    """Serve `recorder` on a free loopback port until the block ends; yields `stop`, which a
    test may call early (a server going away: its port then refuses connections)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(recorder))
    server.daemon_threads = True
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="http-recorder", daemon=True)
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    with pytest.MonkeyPatch.context() as env:  # never through a proxy, whatever the machine says
        for name in ("NO_PROXY", "no_proxy"):
            env.setenv(name, "127.0.0.1,localhost")
        try:
            yield stop
        finally:
            stop()


@pytest.fixture(scope="session")
def http_recorder() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder()
    with serving(recorder):
        yield recorder


@pytest.fixture
def stoppable_http() -> Iterator[tuple[HttpRecorder, Callable[[], None]]]:
    """A server of this test's own, and the function that stops it mid-test."""
    recorder = HttpRecorder()
    with serving(recorder) as stop:
        yield recorder, stop
