"""Sealing benchmark: Stagecoach's GPG + zip + md5 of a delivery file against the same steps done
by the `gpg`, `zip` and `md5sum` programs, side by side in one run, with peak memory.

The requirement: "Sealing (zip + GPG + md5) of the same file streams too" — memory stays flat
as the file grows. Run from the project root:

    .venv/bin/python benchmarks/sealing.py                 # 1 GiB file, 3 interleaved rounds
    .venv/bin/python benchmarks/sealing.py --size-mb 100   # quick check

Each variant runs in a fresh child process; its peak RSS is the kernel's high-water mark from
`os.wait4` (which covers the gpg process each variant starts and waits for). The file is CSV-like
text (compressible, as delivery files are), generated once into --workdir and reused. Times are
the median of --repeat rounds; the ratio is baseline time / Stagecoach time (1.0 = as fast).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def make_file(path: Path, size_mb: int) -> None:
    if path.exists() and path.stat().st_size >= size_mb * MIB:
        return
    with open(path, "w") as out:
        row, written = 0, 0
        while written < size_mb * MIB:
            lines = "".join(f"{row + i},customer{(row + i) * 7919 % 100003}@example.com,"
                            f"+1212555{(row + i) % 10000:04d},{(row + i) * 31 % 977}.50\n"
                            for i in range(10_000))
            out.write(lines)
            written += len(lines)
            row += 10_000


def make_key(folder: Path) -> Path:
    home = folder / "gnupg"
    if not (folder / "recipient.asc").exists():
        home.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "",
                        "--quick-gen-key", "Bench <bench@example.com>", "future-default",
                        "default", "never"], check=True, capture_output=True)
        exported = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--armor",
                                   "--export"], check=True, capture_output=True)
        (folder / "recipient.asc").write_bytes(exported.stdout)
    return folder / "recipient.asc"


def child_stagecoach(source: Path, key: Path, out: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from assets import spec
    from assets.sealing import seal

    sealed = seal(source, source.name, spec.Seal(gpg=spec.GpgSeal(recipients=[str(key)]),
                                                 zip=True), None, out)
    return {"size": sealed.size, "md5": sealed.md5}


def child_programs(source: Path, key: Path, out: Path) -> dict:
    """What an operator's shell script would do: gpg, then zip, then md5sum."""
    with tempfile.TemporaryDirectory() as home:
        subprocess.run(["gpg", "--homedir", home, "--batch", "--quiet", "--import", str(key)],
                       check=True, capture_output=True)
        encrypted = out / (source.name + ".gpg")
        subprocess.run(["gpg", "--homedir", home, "--batch", "--quiet", "--trust-model",
                        "always", "--recipient", "bench@example.com", "--output",
                        str(encrypted), "--encrypt", str(source)], check=True)
        packed = out / (encrypted.name + ".zip")
        subprocess.run(["zip", "-q", "-j", "-6", str(packed), str(encrypted)], check=True)
        md5 = subprocess.run(["md5sum", str(packed)], check=True, capture_output=True,
                             text=True).stdout.split()[0]
    return {"size": packed.stat().st_size, "md5": md5}


def measure(variant: str, source: Path, key: Path, workdir: Path) -> dict:
    out = workdir / f"out-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", variant, str(source),
                             str(key), str(out)], stdout=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    result = json.loads(proc.stdout.read() or b"{}")
    if status != 0:
        raise SystemExit(f"{variant} failed")
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": elapsed, "peak_mib": usage.ru_maxrss / 1024, **result}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stagecoach-bench-seal"))
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        variant, source, key, out = args.child
        run = child_stagecoach if variant == "stagecoach" else child_programs
        print(json.dumps(run(Path(source), Path(key), Path(out))))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.workdir / f"delivery-{args.size_mb}mb.csv"
    make_file(source, args.size_mb)
    key = make_key(args.workdir)
    size_mib = source.stat().st_size / MIB
    print(f"file: {source} ({size_mib:,.0f} MiB); {args.repeat} interleaved rounds")
    results: dict[str, list[dict]] = {"programs": [], "stagecoach": []}
    for _ in range(args.repeat):
        for variant in results:
            results[variant].append(measure(variant, source, key, args.workdir))
    print(f"{'variant':12} {'median s':>9} {'MiB/s':>8} {'peak RSS MiB':>13} {'sealed MiB':>11}")
    medians = {}
    for variant, runs in results.items():
        medians[variant] = statistics.median(r["seconds"] for r in runs)
        print(f"{variant:12} {medians[variant]:9.2f} {size_mib / medians[variant]:8.1f} "
              f"{max(r['peak_mib'] for r in runs):13.1f} {runs[0]['size'] / MIB:11.1f}")
    print(f"ratio (programs time / stagecoach time): "
          f"{medians['programs'] / medians['stagecoach']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
