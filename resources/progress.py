"""Progress of long work in the run's log: a multi-GB transfer or a load says how far it is.

A transfer reports bytes, percent (when the size is known) and rate every `interval_seconds`,
and at each 10 % once it has run that long, through Dagster's logger (so the lines show in the
run's log in the UI); its summary (bytes, seconds, rate) goes into the step's metadata. Short
transfers, done within one interval, log nothing but the summary.

The connections' transfer loops do not take a callback each: `RetryingConnection` opens a
`reporting(...)` scope around a download or upload, and each kind wraps its local file with
`tracked(...)`, which counts what goes through it.
"""

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

import dagster as dg

DEFAULT_INTERVAL_SECONDS = 5.0
STEP_PERCENT = 10


def human_bytes(count: float) -> str:
    """'512 B', '3.4 MB', '1.20 GB' (decimal units, as transfer rates are quoted)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}" if unit == "GB" else f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


class Progress:
    """Counts units (bytes or rows) of one piece of work and logs how far it is."""

    def __init__(self, what: str, total: int | None = None, unit: str = "bytes",
                 interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit = what, total, unit
        self.interval = interval_seconds
        self._log = log or dg.get_dagster_logger("stagecoach.progress").info
        self._clock = clock
        self._lock = threading.Lock()  # S3 reports from its transfer threads
        self.lines = 0
        self.restart()

    def restart(self, total: int | None = None) -> None:
        """A new attempt starts from zero (a retry re-sends the whole file)."""
        with self._lock:
            self.total = total if total is not None else self.total
            self.done = 0
            self.started = self._last = self._clock()
            self._step = 0

    def add(self, count: int) -> None:
        self.update(None, count)

    def update(self, done: int | None, count: int = 0) -> None:
        """`done` so far (absolute), or `count` more."""
        with self._lock:
            self.done = done if done is not None else self.done + count
            now = self._clock()
            step = (self.done * 100 // self.total // STEP_PERCENT
                    if self.total else 0)
            due = now - self._last >= self.interval or (
                step > self._step and now - self.started >= self.interval)
            if not due:
                return
            self._last, self._step = now, max(step, self._step)
            line = self._line(now)
            self.lines += 1
        self._log(line)

    def percent(self, percent: float) -> None:
        """Log `percent` done (work that only knows its share, such as a DuckDB query) at
        most every interval."""
        with self._lock:
            now = self._clock()
            if percent < 0 or now - self._last < self.interval:
                return
            self._last = now
            self.lines += 1
        self._log(f"{self.what}: {percent:.0f}% after {now - self.started:.0f} s")

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.unit == "bytes":
            amount = human_bytes(self.done) + (f" of {human_bytes(self.total)}"
                                               if self.total else "")
            speed = f"{human_bytes(rate)}/s"
        else:
            amount = f"{self.done:,} {self.unit}" + (f" of {self.total:,}" if self.total else "")
            speed = f"{rate:,.0f} {self.unit}/s"
        percent = f" ({self.done * 100 / self.total:.0f}%)" if self.total else ""
        return f"{self.what}: {amount}{percent} after {elapsed:.0f} s, {speed}"

    def summary(self) -> dict[str, Any]:
        """The finished work's figures, for the step's metadata."""
        elapsed = max(self._clock() - self.started, 1e-9)
        rate = self.done / elapsed
        key = "bytes" if self.unit == "bytes" else self.unit
        return {"what": self.what, key: self.done, "seconds": round(elapsed, 3),
                ("mb_per_second" if self.unit == "bytes" else f"{self.unit}_per_second"):
                round(rate / 1e6, 3) if self.unit == "bytes" else round(rate)}


_CURRENT: ContextVar[Progress | None] = ContextVar("stagecoach_progress", default=None)
_RECORDED: ContextVar[list[dict[str, Any]] | None] = ContextVar("stagecoach_transfers",
                                                                 default=None)


@contextmanager
def reporting(what: str, total: int | None, interval_seconds: float) -> Iterator[Progress]:
    """The scope of one transfer (all its attempts): `tracked` files inside count into it.
    Its summary is added to the enclosing `recorded_transfers()` list, if any."""
    progress = Progress(what, total, interval_seconds=interval_seconds)
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded.append(progress.summary())


@contextmanager
def watching(poll: Callable[[], float], progress: Progress | None) -> Iterator[None]:
    """While the block runs, a thread asks `poll()` (a percent, -1 when unknown) every interval
    and logs it: for a statement that gives no callback (DuckDB's `query_progress`)."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(min(progress.interval, 1.0)):
            try:
                progress.percent(poll())
            except Exception:  # the connection closing under it: the statement is over
                return

    thread = threading.Thread(target=watch, name="stagecoach-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def current() -> Progress | None:
    """The transfer being reported (for a client library's own callback), if any."""
    return _CURRENT.get()


@contextmanager
def recorded_transfers() -> Iterator[list[dict[str, Any]]]:
    """Collects the summaries of the transfers made inside, for a step's metadata."""
    recorded: list[dict[str, Any]] = []
    token = _RECORDED.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDED.reset(token)


def transfer_metadata(recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of the recorded transfers: bytes moved, seconds and mean rate."""
    if not recorded:
        return {}
    moved = sum(r.get("bytes", 0) for r in recorded)
    seconds = sum(r["seconds"] for r in recorded)
    return {"transfer_seconds": round(seconds, 3),
            "transfer_mb_per_second": round(moved / max(seconds, 1e-9) / 1e6, 3)}


class _Tracked:
    """A binary file whose reads or writes count into a Progress; everything else passes."""

    def __init__(self, handle: IO[bytes], progress: Progress):
        self._handle, self._progress = handle, progress

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._progress.add(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        self._progress.add(count or 0)
        return count

    def write(self, data: Any) -> int:
        count = self._handle.write(data)
        self._progress.add(len(data) if count is None else count)
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def tracked(handle: IO[bytes], total: int | None = None) -> Any:
    """`handle`, counting into the current transfer's progress (restarted: a new attempt);
    `handle` itself when no transfer is being reported."""
    progress = _CURRENT.get()
    if progress is None:
        return handle
    progress.restart(total)
    return _Tracked(handle, progress)


KERNEL_COPY_CHUNK = 1 << 20  # bytes per copy_file_range call (the size does not change its speed)


def copy_descriptor(source: int, target: int, total: int | None = None) -> None:
    """Copy one open file into another in the kernel (copy_file_range: no bytes through
    Python; 0.7-1.6 s against 3.1-3.4 s for a read/write loop on a 2.1 GB file), counting into
    the current transfer's progress; a read/write loop where the kernel cannot."""
    progress = _CURRENT.get()
    if progress is not None:
        progress.restart(total)
    try:
        while copied := os.copy_file_range(source, target, KERNEL_COPY_CHUNK):
            if progress is not None:
                progress.add(copied)
        return
    except OSError as refused:
        if refused.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while block := os.read(source, 1 << 20):  # continues where the kernel copy stopped
        view = memoryview(block)
        while view:
            view = view[os.write(target, view):]
        if progress is not None:
            progress.add(len(block))
