"""SFTP delivery benchmark: Stagecoach's `SftpResource` against OpenSSH's own `sftp`, side by side.

The requirements it checks (issues 19 and 20): deliver and fetch a 1 GiB file over SFTP to sshd on
loopback at least as fast as OpenSSH's own `sftp` client in the same run (1.0x, the call:
connect, transfer, check, rename), at least 0.9x when whole processes are compared (Python's
start and Dagster's import included), on the ciphers each side negotiates and on the same
cipher; memory flat (the file is streamed, never read whole).

Run it from the project root (a full run takes a few minutes on 2 cores):

    .venv/bin/python benchmarks/sftp_delivery.py                  # 1 GiB, 3 interleaved rounds
    .venv/bin/python benchmarks/sftp_delivery.py --size-mb 100    # quick sanity check
    .venv/bin/python benchmarks/sftp_delivery.py --with-paramiko  # + paramiko's plain put()
    .venv/bin/python benchmarks/sftp_delivery.py --same-cipher    # + OpenSSH on AES-GCM too

Options: `--repeat N` (rounds, default 3), `--workdir` (default /tmp/stagecoach-bench-sftp; the
payload is kept there and reused, `rm -rf` it to free the disk), `--no-download` (uploads only),
`--with-paramiko` (adds paramiko's own `put()`, and `get()` with prefetch, as they come: the
figures Stagecoach used before; `get()` of 1 GiB takes minutes and holds the file in memory),
`--same-cipher` (adds OpenSSH's `sftp` forced to aes128-gcm@openssh.com, the cipher Stagecoach
prefers: OpenSSH itself prefers chacha20-poly1305), `--with-asyncssh` (adds asyncssh's
`put()`/`get()` with the server's request size and 64 requests in flight, AES-GCM, as a
reference for the choice of client library; needs asyncssh importable, it is not a dependency).

What it does:

1. Starts its own sshd on a free loopback port, configured like the tests' `sshd` fixture
   (tests/conftest.py): ed25519 host and user keys in a temporary folder, `Subsystem sftp
   internal-sftp`, the host key pinned in a known_hosts file that both clients check strictly.
   Neither side is told which cipher to use; the negotiated ones are reported.
2. Generates the payload (default 1 GiB of seeded pseudo-random bytes, so nothing compresses)
   and reads it once, computing its md5, so every run reads it from the page cache alike.
3. Per round, interleaved (the order flips every round so drifting load hits all alike):
   * `openssh put`: `sftp -b` with a batch `put` of the payload, as a child process;
   * `stagecoach upload`: a child process that builds an `SftpResource` and calls `upload()`
     (hidden partial name, size check, rename - the real delivery);
   * and the same for download (`sftp -b` `get` against `SftpResource.download()`).
   After every run the file that arrived is checked (size and md5) and deleted, and the page
   cache's dirty pages are flushed (`sync`) before the next run.

How it measures, per run:

* `seconds`: for OpenSSH the wall time of the `sftp` process (it starts in milliseconds); for
  Stagecoach the `upload()`/`download()` call timed inside the child (connect, authenticate,
  transfer, size check, rename) - the ratio's basis - and, as a stricter second row, the whole
  child process including Python's start and importing Dagster.
* `client cpu`: user + system CPU of the child (and its descendants: `sftp` runs `ssh`); for
  Stagecoach's call row, the CPU of the call alone. `sshd cpu`: CPU of the server's session
  processes, sampled every 50 ms. `other`: CPU the rest of the machine used meanwhile
  (/proc/stat); when it is large, other processes competed for the CPUs.
* Peak RSS: `ru_maxrss` of the child from `os.wait4(pid)` - the kernel's high-water mark of that
  child (or the largest descendant it waited for), exact, not sampled. The child is spawned
  by a small launcher (see LAUNCHER: a spawned child inherits its parent's high-water mark).
  For Stagecoach the child also records its peak before the transfer (Python + Dagster +
  paramiko imported): `added` is the difference, the memory the transfer itself took.

Throughput is payload bytes per second (MiB = 2**20 bytes), reported as the median of the
rounds with the range; the ratio is Stagecoach over OpenSSH per round (same round, same
machine load), median over rounds. The verdict uses the upload (the requirement); download is
a secondary figure. Exit code 0 whatever the verdict, 1 when a transfer failed or delivered
wrong bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import servers_ssh  # noqa: E402 (the project root is on the path from here)

MIB = 1 << 20
MIN_RATIO = 1.0  # the call against OpenSSH's sftp process (issue 19)
MIN_PROCESS_RATIO = 0.9  # whole process against whole process (issue 20)
GCM = "aes128-gcm@openssh.com"
FLAT_MIB = 64  # "memory flat": the transfer adds less than this to the child's peak RSS
VARIANTS = {
    "openssh-put": "OpenSSH sftp put",
    "stagecoach-upload": "Stagecoach upload",
    "paramiko-put": "paramiko put()",
    "asyncssh-put": "asyncssh put()",
    "openssh-put-gcm": "OpenSSH put, AES-GCM",
    "openssh-get": "OpenSSH sftp get",
    "stagecoach-download": "Stagecoach download",
    "paramiko-get": "paramiko get()",
    "asyncssh-get": "asyncssh get()",
    "openssh-get-gcm": "OpenSSH get, AES-GCM",
}


def is_upload(variant: str) -> bool:
    return "put" in variant or "upload" in variant


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    folder: Path
    port: int
    process: subprocess.Popen
    user: str = field(default_factory=getpass.getuser)

    @property
    def key(self) -> Path:
        return self.folder / "userkey"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def session_pids(self) -> list[Any]:
        """The listening sshd's descendants: the session processes of the current transfer."""
        import psutil

        return psutil.Process(self.process.pid).children(recursive=True)

    def wait_sessions_gone(self, timeout: float = 10.0) -> None:
        """Wait until the last session's processes have exited and been reaped."""
        import psutil

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not psutil.Process(self.process.pid).children():
                return
            time.sleep(0.02)


class SessionCpu(threading.Thread):
    """CPU seconds of the sshd session processes serving one transfer, sampled every 50 ms.

    Per process its own user + system time, the last value seen before it exited (at most the
    last 50 ms missed). Sampled rather than read from the listener's reaped-children times:
    when paramiko closes the connection, sshd's session processes do not all wait for their
    children, and an orphan's time is reaped by init, never by the listener.
    """

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.seen, self.done = server, {}, threading.Event()

    def run(self) -> None:
        import psutil

        while True:
            stopping = self.done.is_set()
            for proc in self.server.session_pids():
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    self.seen[proc.pid] = times.user + times.system
            if stopping:
                return
            self.done.wait(0.05)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seen.values())


def start_sshd(folder: Path) -> Server:
    """sshd as the tests' `sshd` fixture starts it: ed25519 keys, internal-sftp, loopback only."""
    process, port = servers_ssh.start_sshd(folder)
    return Server(folder, port, process)


# ---------------------------------------------------------------- the payload


def ensure_payload(workdir: Path, size: int) -> Path:
    """Seeded pseudo-random bytes (incompressible, the same on every run); reused if present."""
    target = workdir / f"payload_{size}.bin"
    if target.exists() and target.stat().st_size == size:
        print(f"reusing {target} ({size / MIB:,.0f} MiB)")
        return target
    print(f"generating {target} ({size / MIB:,.0f} MiB) ...", flush=True)
    generator = random.Random(20261120)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        left = size
        while left:
            block = min(left, 8 * MIB)
            out.write(generator.randbytes(block))
            left -= block
    os.replace(partial, target)
    return target


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the children


def sftp_command(server: Server, batch: Path, cipher: str | None = None) -> list[str]:
    """OpenSSH's sftp in batch mode, host key strictly checked, with -v to record the ciphers."""
    return ["sftp", "-v", *(["-c", cipher] if cipher else []), "-b", str(batch), "-i",
            str(server.key),
            "-o", f"UserKnownHostsFile={server.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-P", str(server.port),
            f"{server.user}@127.0.0.1"]


def openssh_ciphers(log: str) -> str:
    """'chacha20-poly1305@openssh.com (MAC <implicit>)' from sftp -v's kex lines."""
    found = re.findall(r"kex: (client->server|server->client) cipher: (\S+) MAC: (\S+)", log)
    parts = {direction: f"{cipher} (MAC {mac})" for direction, cipher, mac in found}
    if len(set(parts.values())) == 1:
        return next(iter(parts.values()))
    return "; ".join(f"{d} {c}" for d, c in parts.items()) or "unknown"


def child_stagecoach(args: argparse.Namespace) -> dict[str, Any]:
    """Run one SftpResource upload or download; time the call and record the ciphers."""
    import resource

    sys.path.insert(0, str(ROOT))
    from resources.connections.sftp import SftpResource

    settings = json.loads(args.settings)
    conn = SftpResource(**settings)
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if args.child == "stagecoach-upload":
        size = conn.upload(Path(args.source), Path(args.target).name)
    else:
        size = conn.download(Path(args.source).name, Path(args.target))
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    client, _sftp = conn._connect("probe")  # outside the timing: what was negotiated
    try:
        transport = client.get_transport()
        ciphers = (transport.local_cipher if transport.local_cipher == transport.remote_cipher
                   else f"out {transport.local_cipher}, in {transport.remote_cipher}")
        if "gcm" not in transport.local_cipher:
            ciphers += f" (MAC {transport.local_mac})"
        else:
            ciphers += " (MAC implicit)"
    finally:
        client.close()
    return {"seconds": seconds, "cpu": cpu, "size": size, "before_rss_mib": before_rss,
            "ciphers": ciphers}


def child_paramiko(args: argparse.Namespace) -> dict[str, Any]:
    """paramiko's own put()/get() with its defaults, as Stagecoach used them before."""
    import paramiko

    settings = json.loads(args.settings)
    client = paramiko.SSHClient()
    client.load_host_keys(settings["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    started = time.perf_counter()
    client.connect(settings["host"], port=settings["port"], username=settings["username"],
                   key_filename=settings["private_key_path"], allow_agent=False,
                   look_for_keys=False)
    sftp = client.open_sftp()
    if args.child == "paramiko-put":
        sftp.put(args.source, args.target, confirm=True)
    else:
        sftp.get(args.source, args.target, prefetch=True, max_concurrent_prefetch_requests=64)
    seconds = time.perf_counter() - started
    transport = client.get_transport()
    client.close()
    return {"seconds": seconds, "ciphers": f"{transport.local_cipher} (MAC {transport.local_mac})"}


def child_asyncssh(args: argparse.Namespace) -> dict[str, Any]:
    """asyncssh's put()/get() tuned as Stagecoach's pipeline is: the server's request size
    (block_size -1 asks limits@openssh.com), 64 requests in flight, AES-GCM."""
    import asyncio

    import asyncssh

    settings = json.loads(args.settings)

    async def transfer() -> dict[str, Any]:
        started = time.perf_counter()
        async with asyncssh.connect(
                settings["host"], port=settings["port"], username=settings["username"],
                client_keys=[settings["private_key_path"]], known_hosts=settings["known_hosts"],
                encryption_algs=[GCM, "aes128-ctr"]) as conn:
            async with conn.start_sftp_client() as sftp:
                if args.child == "asyncssh-put":
                    await sftp.put(args.source, args.target, block_size=-1, max_requests=64)
                else:
                    await sftp.get(args.source, args.target, block_size=-1, max_requests=64)
            cipher = conn.get_extra_info("send_cipher")
        return {"seconds": time.perf_counter() - started, "ciphers": f"{cipher} (MAC implicit)"}

    return asyncio.run(transfer())


def run_child(args: argparse.Namespace) -> int:
    out = (child_stagecoach(args) if args.child.startswith("stagecoach")
           else child_asyncssh(args) if args.child.startswith("asyncssh")
           else child_paramiko(args))
    Path(args.result).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------- measuring

# Every measured child is started by this small launcher (python -S -I: no site, ~8 MiB).
# A child's ru_maxrss counts the high-water mark of the process it was spawned from (Linux
# carries the parent's peak over fork/vfork and exec), so children spawned straight from this
# script would all show at least this script's own peak (it hashes the payload in 8 MiB blocks).
# The launcher resets its own high-water mark (/proc/self/clear_refs), spawns the child, times
# it and reaps it with os.wait4, whose rusage is that child's own (and of any descendant it
# waited for: sftp waits for its ssh), then writes the figures as JSON.
LAUNCHER = """
import json, os, sys, time
result, log, command = sys.argv[1], sys.argv[2], sys.argv[3:]
with open('/proc/self/clear_refs', 'w') as refs:
    refs.write('5')
actions = [(os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
           (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
           (os.POSIX_SPAWN_DUP2, 1, 2)]
started = time.perf_counter()
pid = os.posix_spawnp(command[0], command, os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(result, 'w') as out:
    json.dump({'seconds': seconds, 'exit': os.waitstatus_to_exitcode(status),
               'cpu': usage.ru_utime + usage.ru_stime, 'maxrss_kib': usage.ru_maxrss}, out)
"""


@dataclass
class Run:
    variant: str
    seconds: float = 0.0  # the basis of the ratio: OpenSSH's process, Stagecoach's call
    process_seconds: float = 0.0
    client_cpu: float = 0.0
    call_cpu: float | None = None
    sshd_cpu: float = 0.0
    other_cpu: float = 0.0
    peak_mib: float = 0.0
    before_mib: float | None = None
    ciphers: str = ""
    ok: bool = True
    error: str = ""


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def remote_and_local(variant: str, payload: Path, runs_dir: Path) -> tuple[Path, Path]:
    """(what the child reads, where the bytes must arrive) for a variant."""
    if is_upload(variant):
        return payload, runs_dir / "remote" / f"{variant}.bin"
    return payload, runs_dir / "local" / f"{variant}.bin"


def measure(variant: str, server: Server, payload: Path, expected_md5: str,
            runs_dir: Path) -> Run:
    """Run one transfer in a fresh child; time it, read its peak RSS from wait4, check bytes."""
    source, target = remote_and_local(variant, payload, runs_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    log, result = runs_dir / f"{variant}.log", runs_dir / f"{variant}.json"
    result.unlink(missing_ok=True)
    if variant.startswith("openssh"):
        batch = runs_dir / f"{variant}.batch"
        verb = "put" if is_upload(variant) else "get"
        batch.write_text(f'{verb} "{source}" "{target}"\n')
        command = sftp_command(server, batch, GCM if variant.endswith("-gcm") else None)
    else:
        settings = {"host": "127.0.0.1", "port": server.port, "username": server.user,
                    "private_key_path": str(server.key), "known_hosts": str(server.known_hosts),
                    "base_path": str(target.parent if is_upload(variant)
                                     else source.parent)}
        command = [sys.executable, str(Path(__file__).resolve()), "--child", variant,
                   "--settings", json.dumps(settings), "--source", str(source),
                   "--target", str(target), "--result", str(result)]
    os.sync()  # the previous run's written pages go to disk outside any timing
    server.wait_sessions_gone()
    usage_file = runs_dir / f"{variant}.rusage.json"
    usage_file.unlink(missing_ok=True)
    sessions, busy = SessionCpu(server), busy_cpu_seconds()
    sessions.start()
    launched = subprocess.run([sys.executable, "-S", "-I", "-c", LAUNCHER, str(usage_file),
                               str(log), *command], cwd=ROOT, capture_output=True, text=True)
    busy = busy_cpu_seconds() - busy
    sshd_cpu = sessions.stop()
    server.wait_sessions_gone()
    if launched.returncode != 0 or not usage_file.exists():
        return Run(variant, ok=False, error=f"launcher failed: {launched.stderr.strip()}")
    usage = json.loads(usage_file.read_text())
    run = Run(variant, seconds=usage["seconds"], process_seconds=usage["seconds"],
              client_cpu=usage["cpu"], sshd_cpu=sshd_cpu,
              peak_mib=usage["maxrss_kib"] / 1024)
    run.other_cpu = max(0.0, busy - run.client_cpu - run.sshd_cpu)
    text = log.read_text(errors="replace")
    code = usage["exit"]
    if code != 0:
        run.ok, run.error = False, f"exit {code}: " + " | ".join(text.strip().splitlines()[-5:])
        return run
    if variant.startswith("openssh"):
        run.ciphers = openssh_ciphers(text)
    else:
        detail = json.loads(result.read_text())
        run.ciphers = detail["ciphers"]
        if variant.startswith("stagecoach"):
            run.seconds, run.call_cpu = detail["seconds"], detail["cpu"]
            run.before_mib = detail["before_rss_mib"]
        else:
            run.seconds = detail["seconds"]
    # What arrived: the whole file, the same bytes, and (uploads) nothing left beside it.
    if not target.exists() or target.stat().st_size != payload.stat().st_size:
        got = target.stat().st_size if target.exists() else "no file"
        run.ok, run.error = False, f"arrived {got}, expected {payload.stat().st_size} bytes"
    elif md5_of(target) != expected_md5:
        run.ok, run.error = False, "md5 differs"
    leftovers = [p.name for p in target.parent.iterdir() if p != target]
    if leftovers:
        run.ok, run.error = False, f"left beside it: {leftovers}"
    target.unlink(missing_ok=True)
    return run


def run_all(variants: list[str], server: Server, payload: Path, expected_md5: str,
            runs_dir: Path, repeat: int) -> dict[str, list[Run]]:
    """Every variant `repeat` times, interleaved; the order flips every round."""
    runs: dict[str, list[Run]] = {v: [] for v in variants}
    size = payload.stat().st_size
    for n in range(repeat):
        for variant in (variants if n % 2 == 0 else variants[::-1]):
            print(f"round {n + 1}/{repeat}: {VARIANTS[variant]} ...", end=" ", flush=True)
            run = measure(variant, server, payload, expected_md5, runs_dir)
            runs[variant].append(run)
            if run.ok:
                print(f"{size / MIB / run.seconds:,.1f} MiB/s ({run.seconds:.2f} s), peak RSS "
                      f"{run.peak_mib:,.0f} MiB, other CPU {run.other_cpu:.1f} s", flush=True)
            else:
                print(f"FAILED: {run.error}", flush=True)
    return runs


# ---------------------------------------------------------------- report


def code_version() -> str:
    """The commit measured (and whether resources/ differs from it), and the tools' versions."""
    import cryptography
    import paramiko

    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--",
                                "resources"], capture_output=True, text=True,
                               check=True).stdout.strip()
        code = f"commit {head}{' + local changes in resources/' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        code = "commit unknown"
    openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]
    return (f"{code}; {openssh.strip()}; paramiko {paramiko.__version__}, "
            f"cryptography {cryptography.__version__}")


def round_ratios(ours: list[Run], base: list[Run], scope: str = "call") -> list[float]:
    """Per round: OpenSSH's seconds over ours (>1: faster than OpenSSH), same round only."""
    def secs(r: Run) -> float:
        return r.seconds if scope == "call" else r.process_seconds
    return [secs(b) / secs(o) for o, b in zip(ours, base, strict=False) if o.ok and b.ok]


def transfer_added(runs: list[Run]) -> float | None:
    """The most a transfer added to its child's peak RSS (None: not recorded)."""
    if not runs or runs[0].before_mib is None:
        return None
    return max(max(0.0, r.peak_mib - (r.before_mib or 0.0)) for r in runs)


def report(runs: dict[str, list[Run]], size: int, repeat: int) -> bool:
    """Print the table and the verdict; False when a transfer failed or delivered wrong bytes."""
    header = (f"{'variant':<21}{'scope':<9}{'MiB/s':>8}{'range':>11}{'seconds':>9}"
              f"{'client cpu':>11}{'sshd cpu':>9}{'other':>7}{'peak RSS':>10}{'added':>7}"
              f"{'vs OpenSSH':>12}")
    print()
    print(f"file: {size / MIB:,.0f} MiB ({size:,} bytes); {repeat} interleaved rounds, medians; "
          f"{os.cpu_count()} CPUs; MiB = 2**20 bytes")
    print(code_version())
    print(header)
    print("-" * len(header))
    ok = True
    for variant, variant_runs in runs.items():
        good = [r for r in variant_runs if r.ok]
        if len(good) < len(variant_runs):
            ok = False
            error = next(r.error for r in variant_runs if not r.ok)
            print(f"{VARIANTS[variant]:<21}FAILED: {error}")
        if not good:
            continue
        base = runs.get("openssh-put" if is_upload(variant) else "openssh-get")
        ours = not variant.startswith("openssh")
        added = transfer_added(good)
        rows = [("call", [r.seconds for r in good], [r.call_cpu for r in good])] if ours else []
        rows.append(("process", [r.process_seconds for r in good], [r.client_cpu for r in good]))
        for n, (scope, seconds, cpu) in enumerate(rows):
            speeds = [size / MIB / s for s in seconds]
            ratios = round_ratios(variant_runs, base, scope) if ours and base else []
            # Server, other-CPU and memory figures belong to the run, printed once.
            once = (f"{statistics.median(r.sshd_cpu for r in good):>9.2f}"
                    f"{statistics.median(r.other_cpu for r in good):>7.1f}"
                    f"{max(r.peak_mib for r in good):>10,.0f}"
                    f"{'' if added is None else f'{added:,.0f}':>7}") if n == 0 else " " * 33
            print(f"{VARIANTS[variant] if n == 0 else '':<21}{scope:<9}"
                  f"{statistics.median(speeds):>8,.1f}"
                  f"{f'{min(speeds):,.0f}-{max(speeds):,.0f}':>11}"
                  f"{statistics.median(seconds):>9.2f}"
                  f"{'-' if None in cpu else f'{statistics.median(cpu):.2f}':>11}{once}"
                  f"{f'{statistics.median(ratios):.2f}x' if ratios else '':>12}")
    print()
    print("ciphers negotiated (client->server):")
    for variant, variant_runs in runs.items():
        seen = sorted({r.ciphers for r in variant_runs if r.ok and r.ciphers})
        if seen:
            print(f"  {VARIANTS[variant]:<21}{', '.join(seen)}")
    print()
    busy = [VARIANTS[v] for v, rs in runs.items()
            if any(r.ok and r.other_cpu > max(1.0, 0.1 * r.process_seconds) for r in rs)]
    if busy:
        print(f"warning: other processes used the CPUs during {', '.join(busy)} ('other' CPU "
              "seconds): single runs are noisy; the per-round ratio cancels part of it")
    up = [r for r in runs.get("stagecoach-upload", []) if r.ok]
    if not up or not round_ratios(runs["stagecoach-upload"], runs.get("openssh-put", [])):
        print("FAIL: an upload failed, no verdict")
        return False
    for ours, verb in (("stagecoach-upload", "put"), ("stagecoach-download", "get")):
        for base in (f"openssh-{verb}", f"openssh-{verb}-gcm"):
            if not runs.get(ours) or not runs.get(base):
                continue
            on = ("on the ciphers each negotiated" if base == f"openssh-{verb}"
                  else f"on the same cipher ({GCM})")
            for scope, need in (("call", MIN_RATIO), ("process", MIN_PROCESS_RATIO)):
                ratios = round_ratios(runs[ours], runs[base], scope)
                if not ratios:
                    continue
                ratio = statistics.median(ratios)
                what = ("the call" if scope == "call" else "the whole process (Python, Dagster)")
                print(f"{'PASS' if ratio >= need else 'FAIL'}: {ours.split('-')[1]} "
                      f"{ratio:.2f}x OpenSSH's sftp {verb}, {what}, {on} (median; rounds "
                      f"{', '.join(f'{r:.2f}' for r in ratios)}; need >= {need}x)")
    for variant in ("stagecoach-upload", "stagecoach-download"):
        done = [r for r in runs.get(variant, []) if r.ok]
        if not done:
            continue
        added = transfer_added(done) or 0.0
        print(f"{'PASS' if added < FLAT_MIB else 'FAIL'}: memory flat - the "
              f"{variant.split('-')[1]} added {added:,.0f} MiB to its child's peak RSS "
              f"({max(r.peak_mib for r in done):,.0f} MiB with Python, Dagster and paramiko "
              f"loaded; limit {FLAT_MIB} MiB added)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1024,
                        help="payload size in MiB of 2**20 bytes (default 1024, i.e. 1 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stagecoach-bench-sftp"))
    parser.add_argument("--no-download", action="store_true", help="measure uploads only")
    parser.add_argument("--with-paramiko", action="store_true",
                        help="add paramiko's plain put() (and get(), slow) as references")
    parser.add_argument("--same-cipher", action="store_true",
                        help=f"add OpenSSH's sftp forced to {GCM}, Stagecoach's cipher")
    parser.add_argument("--with-asyncssh", action="store_true",
                        help="add asyncssh's put()/get() as references (asyncssh importable)")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    if not os.access(servers_ssh.SSHD, os.X_OK) or not shutil.which("sftp"):
        print(f"needs OpenSSH: {servers_ssh.SSHD} and sftp "
              "(apt-get install openssh-server openssh-client)")
        return 1

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    payload = ensure_payload(workdir, int(args.size_mb * MIB))
    print("reading it once (md5, page cache) ...", flush=True)
    expected_md5 = md5_of(payload)
    extra = {"-gcm": args.same_cipher, "paramiko": args.with_paramiko,
             "asyncssh": args.with_asyncssh}
    variants = [v for v in VARIANTS
                if (is_upload(v) or not args.no_download)
                and all(on or tag not in v for tag, on in extra.items())]
    runs_dir = Path(tempfile.mkdtemp(prefix="runs-", dir=workdir))
    server = start_sshd(Path(tempfile.mkdtemp(prefix="sshd-", dir=workdir)))
    try:
        print(f"sshd pid {server.process.pid} on 127.0.0.1:{server.port}", flush=True)
        runs = run_all(variants, server, payload, expected_md5, runs_dir, max(1, args.repeat))
    finally:
        servers_ssh.stop(server.process)
        shutil.rmtree(server.folder, ignore_errors=True)
        shutil.rmtree(runs_dir, ignore_errors=True)
    return 0 if report(runs, payload.stat().st_size, max(1, args.repeat)) else 1


if __name__ == "__main__":
    sys.exit(main())
