"""A uid of its own for each run of a Python step's script, and a root-owned place for the
files the worker shares with it.

One shared script user let any leftover process of that user read a later run's
/proc/<pid>/environ and plant symlinks in its folders. Here every step takes a free uid from
STAGECOACH_SCRIPT_UIDS (no passwd entry needed: root may switch to any uid), held by a lock
file under a root-owned folder for as long as the step runs, so two concurrent steps never
share one. When the step ends (success, failure or timeout) every process of that uid is
killed, so nothing lingers into the next step that draws it.
"""

import contextlib
import fcntl
import os
import random
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from resources.settings import SCRIPT_UIDS_ENV

KILL_ROUNDS = 100  # a forking script may need more than one sweep


class IsolationError(Exception):
    """The private folder or a uid could not be had; the message says what to do."""


def private_root() -> Path:
    """`<tmp>/stagecoach-scripts-<euid>`: owned by the worker, writable by nobody else (a
    folder someone else made there first is refused, not used)."""
    root = Path(tempfile.gettempdir()) / f"stagecoach-scripts-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o711)
    info = os.lstat(root)
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
            or info.st_mode & 0o022):
        raise IsolationError(f"{root} is not a folder owned by the worker and writable by it "
                             "alone; remove it (someone else may have created it)")
    os.chmod(root, 0o711)  # the uids pass through to their step's folder, whatever the umask
    return root


@contextlib.contextmanager
def step_folder(uid: int | None) -> Iterator[tuple[Path, Path]]:
    """(the step's folder for the Pipes files, its HOME/TMPDIR inside it).

    The step's folder is the worker's, readable by the uid's group (gid = uid) only and
    writable by nobody else, so a script cannot plant a link where the worker writes. HOME is
    the uid's own. Both are removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="step-", dir=private_root()))
    try:
        home = work / "home"
        os.mkdir(home, 0o700)
        if uid is not None:
            os.chown(work, os.geteuid(), uid)  # (a folder of the worker's alone: no race)
            os.chmod(work, 0o750)
            os.chown(home, uid, uid)
        yield work, home
    finally:
        if uid is not None:
            kill_all(uid)  # before removing: nothing of the uid writes there any more
        _remove(work)


def shared_file(path: Path, uid: int | None, mode: int) -> None:
    """Create `path` (new, not a link) for the script: owned by the uid, by file handle."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if uid is not None:
            os.fchown(fd, uid, uid)
    finally:
        os.close(fd)


def readable_by_group(path: Path, gid: int | None) -> None:
    """Let the uid's group read a file the worker wrote in the step's folder (whatever the
    worker's umask), by file handle."""
    if gid is None:
        return
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o640)
    finally:
        os.close(fd)


def parse_uids(text: str) -> range:
    """`200000-265535` as a range; a ValueError that says what to write otherwise."""
    first, dash, last = text.strip().partition("-")
    try:
        low, high = int(first), int(last if dash else first)
    except ValueError:
        raise ValueError(f"{SCRIPT_UIDS_ENV}={text!r} is not a uid range such as "
                         "200000-265535") from None
    if not 1000 <= low <= high < 2**32 - 1:
        raise ValueError(f"{SCRIPT_UIDS_ENV}={text!r}: the range must lie within "
                         "1000-4294967294 (no system uids), lowest first")
    return range(low, high + 1)


@contextlib.contextmanager
def lease_uid(uids: range) -> Iterator[int]:
    """A uid of `uids` that no other step holds, held until the end (then its processes are
    killed). The uids are tried from a random start, so a uid is rarely reused soon."""
    locks = private_root() / "uids"
    with contextlib.suppress(FileExistsError):
        os.mkdir(locks, 0o700)
    start = random.randrange(len(uids))
    for index in range(len(uids)):
        uid = uids[(start + index) % len(uids)]
        fd = os.open(locks / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            kill_all(uid)  # what a crashed worker's step may have left
            yield uid
        finally:
            kill_all(uid)
            os.close(fd)  # (releases the lock)
        return
    raise IsolationError(f"all {len(uids)} uids of {SCRIPT_UIDS_ENV} are in use by running "
                         "steps; widen the range or run fewer steps at once")


def kill_all(uid: int) -> None:
    """SIGKILL every process of `uid` (kill(-1) from a child running as it, repeated until
    none is left: a fork bomb cannot outrun it)."""
    for _ in range(KILL_ROUNDS):
        if not processes_of(uid):
            return
        _kill_as(uid)
        time.sleep(0.01)
    raise IsolationError(f"processes of script uid {uid} survived {KILL_ROUNDS} rounds of "
                         "SIGKILL; check the machine")


def processes_of(uid: int) -> list[int]:
    """The live (not zombie) processes whose real uid is `uid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if (fields.get("Uid", "").split()[:1] == [str(uid)]
                and not fields.get("State", "").strip().startswith("Z")):
            found.append(int(name))
    return found


def _kill_as(uid: int) -> None:
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then out
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal, but itself
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _remove(folder: Path) -> None:
    """Remove a step's folder (links not followed: rmtree does not)."""
    shutil.rmtree(folder, ignore_errors=True)
