"""One secret masker for everything a Python script or an SSH command says: its stdout and
stderr, its Pipes log messages and reported metadata, and the error tail.

Only secrets are masked (values of `Secret` fields and `{env: NAME}` values), never hosts,
ports or user names: masking `127.0.0.1` would hide what an operator needs and mask every
other use of it. Output is masked as a stream: a secret split across two reads, or across the
64 KiB split of a long line, is still caught, because the last (longest secret - 1)
characters are held back until the next chunk or the end (at once at a newline when no
secret holds one). Each secret is also masked in its URL-encoded, JSON-escaped and ascii()
forms, and a number in reported metadata whose digits hold a secret is masked whole.

A secret shorter than MASK_MIN_CHARS is refused (the step does not run): masking it would
hide ordinary words ("prod") and, by what it hides, give the value away; not masking it
would let it leak.
"""

import codecs
import json
import re
import urllib.parse
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

MASK = "***"
MASK_MIN_CHARS = 6
TAIL_LINES = 20
MAX_LINE_CHARS = 65536  # a longer line without a newline is passed on in pieces


def forms(secret: str) -> set[str]:
    """The ways a secret is commonly printed: as is, URL-encoded (a password in a DSN),
    JSON-escaped (a value in a printed dict), Python's ascii() escapes (a printed repr)."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
            json.dumps(secret)[1:-1], ascii(secret)[1:-1]}


class Masker:
    """Replaces each secret with *** in text; `stream()` for output read in chunks."""

    def __init__(self, secrets: Mapping[str, str] | None = None):
        """`secrets`: variable name → value. A value under MASK_MIN_CHARS (but not empty) is
        a ValueError naming the variable, never showing the value."""
        values: set[str] = set()
        for name, value in (secrets or {}).items():
            text = "" if value is None else str(value)
            if 0 < len(text) < MASK_MIN_CHARS:
                raise ValueError(
                    f"secret {name} is shorter than {MASK_MIN_CHARS} characters, too short to "
                    "be masked in the run's logs; use a longer secret (the step did not run)")
            if text:
                values |= forms(text)
        ordered = sorted(values, key=len, reverse=True)  # the longest match wins
        self.longest = len(ordered[0]) if ordered else 0
        self.multi_line = any("\n" in v or "\r" in v for v in ordered)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def text(self, text: str) -> str:
        """A whole message (a log line, an error) masked."""
        return self.pattern.sub(MASK, text) if self.pattern else text

    def value(self, value: Any) -> Any:
        """Strings inside a JSON-like value (a Pipes message, metadata) masked, keys too."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            shown = str(value)  # a numeric secret reported as a number
            return MASK if self.text(shown) != shown else value
        return value

    def stream(self) -> "StreamMasker":
        return StreamMasker(self)


class StreamMasker:
    """Text in as it comes, masked text out; what could still be the start of a secret is
    kept until the next `feed` or `end`."""

    def __init__(self, masker: Masker):
        self.masker, self.held = masker, ""

    def feed(self, text: str) -> str:
        buffer = self.held + text
        pattern = self.masker.pattern
        if pattern is None:
            self.held = ""
            return buffer
        # A secret starting before `safe` ends inside the buffer: it can be decided now.
        safe = len(buffer) - (self.masker.longest - 1)
        if not self.masker.multi_line:
            safe = max(safe, buffer.rfind("\n") + 1)  # no secret spans a newline
        out, pos = [], 0
        for match in pattern.finditer(buffer):
            if match.start() >= safe:
                break
            out += [buffer[pos:match.start()], MASK]
            pos = match.end()
        cut = max(pos, safe)
        out.append(buffer[pos:cut])
        self.held = buffer[cut:]
        return "".join(out)

    def end(self) -> str:
        rest, self.held = self.masker.text(self.held), ""
        return rest


class MaskedLines:
    """Bytes in (UTF-8, undecodable bytes replaced), whole masked lines out to `log` and a
    tail of the last TAIL_LINES; a line longer than MAX_LINE_CHARS goes out in pieces."""

    def __init__(self, log: Callable[[str], None], masker: Masker):
        self.log = log
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stream = masker.stream()
        self.pending = ""
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self.decoder.decode(data, final=final)
        self.pending += self.stream.feed(text) + (self.stream.end() if final else "")
        *complete, self.pending = self.pending.split("\n")
        while len(self.pending) > MAX_LINE_CHARS:
            complete.append(self.pending[:MAX_LINE_CHARS])
            self.pending = self.pending[MAX_LINE_CHARS:]
        if final and self.pending:
            complete.append(self.pending)
            self.pending = ""
        for line in complete:
            shown = line.rstrip("\r")
            self.tail.append(shown)
            self.log(shown)

    def end(self) -> None:
        self.feed(b"", final=True)

    def text(self) -> str:
        return "\n".join(self.tail)


def secrets_of(env: Mapping[str, Any] | None, names: Collection[str]) -> dict[str, str]:
    """The entries of `env` named in `names` (those that are secrets), as strings."""
    return {name: "" if value is None else str(value)
            for name, value in (env or {}).items() if name in names}
