"""Long work reports as it goes: a transfer's bytes, percent and rate at intervals, through
Dagster's logger (the run's log in the UI), and a load's rows (PostgreSQL COPY) or percent
(DuckDB's own progress) while it runs. Real servers on loopback; a small interval makes a few
MB long enough to report more than once."""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.progress import Progress, human_bytes, recorded_transfers, transfer_metadata
from resources.warehouse import WarehouseResource
from tests.endpoints import Endpoint

pytestmark = pytest.mark.timeout(180)

SIZE = 8 * 1024 * 1024
KINDS = ["sftp", "ftp", "smb", "s3", "folder"]
LINE = re.compile(r"(download|upload) .*: [\d.]+ [kMG]?B of 8\.4 MB \((\d+)%\) after \d+ s, "
                  r"[\d.]+ [kMG]?B/s")


def rebuilt(endpoint: Endpoint, **changes) -> object:
    where, settings = endpoint.rebuild
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)(**{**settings, **changes})


def progress_lines(caplog: pytest.LogCaptureFixture, operation: str) -> list[int]:
    return [int(m.group(2)) for r in caplog.records
            if r.name.endswith("stagecoach.progress") and (m := LINE.search(r.getMessage()))
            and m.group(1) == operation]


@pytest.mark.parametrize("kind", KINDS)
def test_a_transfer_reports_bytes_percent_and_rate(kind: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture):
    endpoint: Endpoint = request.getfixturevalue(f"{kind}_files")
    conn = rebuilt(endpoint, progress_seconds=0.0001)
    payload = os.urandom(SIZE)
    endpoint.put("in/big.bin", payload)
    caplog.set_level(logging.INFO)
    with recorded_transfers() as transfers:
        assert conn.download("in/big.bin", tmp_path / "big.bin", size=SIZE) == SIZE
        local = tmp_path / "big.bin"
        assert conn.upload(local, "out/big.bin") == SIZE
    down, up = progress_lines(caplog, "download"), progress_lines(caplog, "upload")
    assert len(down) >= 2 and len(up) >= 2, caplog.text[-2000:]
    assert down == sorted(down) and up == sorted(up) and max(down + up) <= 100
    assert [t["bytes"] for t in transfers] == [SIZE, SIZE]
    meta = transfer_metadata(transfers)
    assert meta["transfer_seconds"] > 0 and meta["transfer_mb_per_second"] > 0
    assert endpoint.read("out/big.bin") == payload


def test_a_short_transfer_logs_no_progress(folder_files: Endpoint, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture):
    """Within one interval (the default 5 s) a transfer says nothing until its summary."""
    folder_files.put("in/small.csv", b"a,b\n1,2\n")
    caplog.set_level(logging.INFO)
    folder_files.connection.download("in/small.csv", tmp_path / "small.csv")
    assert not [r for r in caplog.records if r.name.endswith("stagecoach.progress")]


def test_a_postgres_load_reports_rows_as_copy_sends_them(postgres_url: str, tmp_path: Path):
    rows = 350_000  # four COPY batches of at most 100,000 rows
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": pa.array(range(rows), pa.int64()),
                             "name": pa.array([f"n{i}" for i in range(rows)])}), path)
    lines: list[str] = []
    warehouse = WarehouseResource(url=postgres_url)
    with warehouse.file_load("progress", "rows", None) as load:
        load.progress = Progress("load progress.rows", unit="rows", interval_seconds=0.0001,
                                 log=lines.append)
        assert load.replace("SELECT * FROM read_parquet($path)", {"path": str(path)}) == rows
    counts = [int(re.search(r": ([\d,]+) rows", line).group(1).replace(",", ""))
              for line in lines]
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] == rows, lines
    assert all(re.search(r"rows/s$", line) for line in lines)


def test_a_duckdb_load_reports_its_percent(tmp_path: Path):
    lines: list[str] = []
    warehouse = WarehouseResource(url=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with warehouse.file_load("progress", "big", None) as load:
        load.progress = Progress("load progress.big", unit="rows", interval_seconds=0.05,
                                 log=lines.append)
        load.replace("SELECT i, md5(i::VARCHAR) AS h FROM range(4000000) r(i)", {})
    percents = [float(m.group(1)) for line in lines
                if (m := re.search(r": (\d+)% after", line))]
    assert len(percents) >= 2 and percents == sorted(percents), lines


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 2_500, 8_388_608, 1_200_000_000)] == [
        "512 B", "2.5 kB", "8.4 MB", "1.20 GB"]


def test_a_copy_the_kernel_refuses_is_made_by_reading_and_writing(tmp_path: Path):
    """copy_file_range refuses a pipe as its target (EINVAL): the bytes still all arrive."""
    import threading

    from resources.progress import copy_descriptor

    payload = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with open(source, "rb") as handle:
        copy_descriptor(handle.fileno(), write_end, len(payload))
    os.close(write_end)
    reader.join(timeout=30)
    os.close(read_end)
    assert bytes(received) == payload
