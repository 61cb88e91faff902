"""A folder connection raced: another process swaps a checked subfolder for a link out of the
base and back, as fast as it can, while the connection reads, lists and writes through it.
No read may return a byte from outside the base, no listing may name a file from there, and no
write may land there (the old connection checked the path, then opened it again by path).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.connections.files import TransferError
from resources.connections.folder import FolderResource

pytestmark = [pytest.mark.security, pytest.mark.timeout(60)]

RACE_SECONDS = 2.0
SWAPPER = """
import ctypes, os, sys, time
base, outside, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sub, link = os.path.join(base, "sub").encode(), os.path.join(base, ".link").encode()
os.symlink(outside, link)
renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
end, swaps = time.monotonic() + seconds, 0
print("ready", flush=True)
while time.monotonic() < end:  # RENAME_EXCHANGE: `sub` is a folder, then a link, never missing
    if renameat2(-100, sub, -100, link, 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
    swaps += 1
if swaps % 2:
    renameat2(-100, sub, -100, link, 2)
os.unlink(link)
print(swaps, flush=True)
"""


@pytest.fixture
def raced(tmp_path: Path) -> tuple[FolderResource, Path, Path]:
    """`base/sub/passwd` inside (b"mine"); `outside/passwd` (b"SECRET") and
    `outside/secret.txt` beside the base."""
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "sub").mkdir(parents=True)
    outside.mkdir()
    (base / "sub" / "passwd").write_bytes(b"mine")
    (outside / "passwd").write_bytes(b"SECRET")
    (outside / "secret.txt").write_bytes(b"SECRET")
    return FolderResource(path=str(base), connection_name="landing", retries=0), base, outside


@contextlib.contextmanager
def swapping(base: Path, outside: Path) -> Iterator[None]:
    """Swaps `base/sub` for a link to `outside` and back (atomically, Linux's renameat2) in
    another process for RACE_SECONDS; asserts it really swapped."""
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(base), str(outside),
                                str(RACE_SECONDS)], stdout=subprocess.PIPE, text=True)
    assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
    try:
        yield
    finally:
        swaps = int(swapper.stdout.readline() or 0)
        swapper.wait(timeout=10)
    assert swaps > 100, swaps


def racing() -> Iterator[int]:
    end, attempt = time.monotonic() + RACE_SECONDS, 0
    while time.monotonic() < end:
        attempt += 1
        yield attempt


def test_a_raced_read_never_returns_a_file_from_outside(raced, tmp_path: Path):
    conn, base, outside = raced
    got = tmp_path / "got"
    read, refused = [], 0
    with swapping(base, outside):
        for _ in racing():
            try:
                conn.download("sub/passwd", got)
                read.append(got.read_bytes())
            except TransferError:  # the folder was a link at that moment
                refused += 1
    assert b"SECRET" not in read, read.count(b"SECRET")
    assert read and set(read) == {b"mine"} and refused, (len(read), refused)


def test_a_raced_listing_never_names_a_file_from_outside(raced):
    conn, base, outside = raced
    listed = set()
    with swapping(base, outside):
        for _ in racing():
            with contextlib.suppress(TransferError):
                listed |= {f.path for f in conn.list_files("sub/*")}
    assert listed == {"sub/passwd"}, listed


def test_a_raced_write_never_lands_outside(raced, tmp_path: Path):
    conn, base, outside = raced
    local = tmp_path / "out.csv"
    local.write_text("id\n1\n")
    delivered = 0
    with swapping(base, outside):
        for attempt in racing():
            with contextlib.suppress(TransferError):
                conn.upload(local, f"sub/out{attempt}.csv", overwrite=attempt % 2 == 0)
                delivered += 1
    assert sorted(p.name for p in outside.iterdir()) == ["passwd", "secret.txt"]
    assert delivered and (base / "sub").is_dir()
    assert all(p.read_text() == "id\n1\n" for p in (base / "sub").glob("out*.csv"))
