"""Stopping a child process and everything it started: Python scripts and shell alert
channels run in their own process group (`start_new_session=True`), so one signal reaches the
whole group."""

import contextlib
import os
import signal
import subprocess


def stop_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the process's group; SIGKILL what is left after `grace_seconds`; reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_seconds)
        if process.poll() is not None and not group_alive(process.pid):
            break


def group_alive(group: int) -> bool:
    """Whether any process of the group is still running."""
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
