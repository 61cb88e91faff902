"""A TCP proxy on loopback that a test can cut mid-transfer or take down and bring back.

It stands in front of a real server (sshd, pyftpdlib, smbd, moto, PostgreSQL), so the client
library meets what a killed server or a dropped network looks like: connections reset in the
middle of a stream, then refused connects, then (if the test says so) the same port answering
again. For FTP it also relays passive data connections (the 227 reply is rewritten), so a
cut reaches the data channel as it would a real one.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import threading
from dataclasses import dataclass, field

_PASV = re.compile(rb"227 [^(]*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    dead: bool = False


@dataclass
class Trigger:
    direction: str  # "up" (client to server) or "down"
    after_bytes: int  # counted from when the trigger was armed
    down_for: float | None  # seconds refused after the cut; None: down until `up()`


@dataclass
class FaultProxy:
    upstream_port: int
    ftp: bool = False
    port: int = 0
    counted: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    cuts: int = 0
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listeners: list[socket.socket] = []
        self._trigger: Trigger | None = None
        self._armed_at = {"up": 0, "down": 0}
        self._hanging_up = False
        self.up()

    # ---------------------------------------------------------------- what tests call
    def up(self) -> None:
        """Listen (again) on the same port."""
        listener = self._listen(self.port)
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(listener, self.upstream_port, True),
                         daemon=True).start()

    def down(self) -> None:
        """Stop listening (connects are refused) and reset every open connection."""
        with self._lock:
            listeners, self._listeners = self._listeners, []
            for pair in self._pairs:
                pair.dead = True
        for listener in listeners:
            _close_listener(listener)

    def cut_after(self, direction: str, after_bytes: int, down_for: float | None) -> None:
        """Once `after_bytes` more bytes went `direction`, reset every connection and refuse
        new ones for `down_for` seconds (forever if None): a server killed mid-stream."""
        with self._lock:
            self._armed_at = dict(self.counted)
            self._trigger = Trigger(direction, after_bytes, down_for)

    def hang_up(self, hanging: bool = True) -> None:
        """Accept each new connection, count it and reset it at once: a server that takes the
        call and crashes, so `connections` counts the client's attempts on the server side."""
        with self._lock:
            self._hanging_up = hanging

    def reset_counts(self) -> None:
        with self._lock:
            self.counted = {"up": 0, "down": 0}
            self.connections = 0

    def close(self) -> None:
        with self._lock:
            self._trigger = None
        self.down()

    # ---------------------------------------------------------------- plumbing
    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        with self._lock:
            self._listeners.append(listener)
        return listener

    def _accept(self, listener: socket.socket, upstream: int, keep: bool) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            with self._lock:
                hanging = self._hanging_up
                if hanging:
                    self.connections += 1
            if hanging:
                _reset(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()
            if not keep:  # a passive data port: one connection
                _close_listener(listener)
                return

    def _pump(self, pair: _Pair) -> None:
        open_ends = {pair.client, pair.server}
        try:
            while open_ends and not pair.dead:
                ready, _, _ = select.select(list(open_ends), [], [], 0.05)
                for end in ready:
                    data = end.recv(256 * 1024)
                    other = pair.server if end is pair.client else pair.client
                    if not data:  # half close: pass it on, keep the other way open
                        open_ends.discard(end)
                        other.shutdown(socket.SHUT_WR)
                        continue
                    direction = "up" if end is pair.client else "down"
                    if self._count(direction, len(data)):
                        return
                    if self.ftp and direction == "down":
                        data = self._relay_pasv(data)
                    other.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            _reset(pair.client)
            _reset(pair.server)

    def _count(self, direction: str, size: int) -> bool:
        """Add to the counts; True when this chunk fires the trigger (it is not passed on)."""
        with self._lock:
            self.counted[direction] += size
            trigger = self._trigger
            if trigger is None or trigger.direction != direction or (
                    self.counted[direction] - self._armed_at[direction] < trigger.after_bytes):
                return False
            self._trigger = None
            self.cuts += 1
        self.down()
        if trigger.down_for is not None:
            threading.Timer(trigger.down_for, self.up).start()
        return True

    def _relay_pasv(self, data: bytes) -> bytes:
        match = _PASV.search(data)
        if not match:
            return data
        numbers = [int(n) for n in match.groups()]
        listener = self._listen(0)
        threading.Thread(target=self._accept,
                         args=(listener, numbers[4] * 256 + numbers[5], False),
                         daemon=True).start()
        port = listener.getsockname()[1]
        reply = f"227 Entering Passive Mode (127,0,0,1,{port // 256},{port % 256})".encode()
        return data[:match.start()] + reply + data[match.end():]


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a killed process's kernel does to a connection with unread data."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _close_listener(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
    listener.close()
