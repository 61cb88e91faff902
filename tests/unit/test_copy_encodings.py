"""A delimited activation file in another encoding (latin-1, cp1252, utf-8-sig, utf-16) is
written by the warehouse's COPY as UTF-8 and re-encoded as it streams past: the very bytes of
the batch path's one incremental encoder, for both warehouses; a value the encoding cannot
hold still fails naming its row and column (the batch path says which)."""

import hashlib
import itertools
from pathlib import Path

import pyarrow as pa
import pytest

from assets import file_writers, spec
from assets.file_writers import OutputEncodingError, write_file, write_query
from resources.warehouse import WarehouseResource
from tests.unit.test_postgres_copy import tricky  # noqa: F401 - the PostgreSQL table fixture
from tests.unit.test_warehouse_copy import SQL, _table, _warehouse

ENCODINGS = ["latin-1", "cp1252", "utf-8-sig", "utf-16"]
OPTIONS = [dict(encoding=encoding, encoding_errors="replace", quoting=quoting, type=kind,
                line_ending=ending)
           for encoding, quoting, kind, ending in itertools.product(
               ENCODINGS, ["minimal", "all", "none"], ["csv", "tsv"], ["lf", "crlf"])]


@pytest.fixture(scope="module")
def duckdb_tricky(tmp_path_factory: pytest.TempPathFactory) -> WarehouseResource:
    return _warehouse(tmp_path_factory.mktemp("encodings"), _table())


def _no_batch_path(*args: object) -> None:
    raise AssertionError("took the batch path")


def _check(warehouse: WarehouseResource, sql: str, tmp_path: Path, fmt: spec.OutputFile
           ) -> None:
    with pytest.MonkeyPatch.context() as patch:  # the COPY path, not the batch path, wrote it
        patch.setattr(file_writers, "write_file", _no_batch_path)
        written = write_query(warehouse, sql, tmp_path / "out", fmt)
    reference = write_file(warehouse.batches(sql), tmp_path / "reference", fmt)
    expected = reference.path.read_bytes()
    assert written.path.read_bytes() == expected
    assert written.rows == reference.rows
    assert written.size == len(expected)
    assert written.md5 == hashlib.md5(expected).hexdigest()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_duckdb_copy_reencodes_to_the_batch_paths_bytes(
        tmp_path: Path, duckdb_tricky: WarehouseResource, options: dict) -> None:
    _check(duckdb_tricky, SQL, tmp_path, spec.OutputFile(**options))


@pytest.mark.parametrize("options", OPTIONS[::5], ids=lambda o: "-".join(map(str, o.values())))
def test_postgres_copy_reencodes_to_the_batch_paths_bytes(
        tmp_path: Path, tricky: WarehouseResource, options: dict) -> None:  # noqa: F811
    _check(tricky, 'SELECT * FROM "query"."partner" ORDER BY n', tmp_path,
           spec.OutputFile(**options))


def test_a_value_the_encoding_cannot_hold_names_its_row_and_column(tmp_path: Path) -> None:
    rows = 300_000  # past the pipe's first chunks: the failure comes mid-stream
    names = ["plain"] * rows
    names[250_000] = "李小龙"
    warehouse = _warehouse(tmp_path, pa.table({"n": pa.array(range(rows), pa.int64()),
                                               "name": pa.array(names, pa.string())}))
    with pytest.raises(OutputEncodingError, match=r"row 250001, column 'name'.*latin-1"):
        write_query(warehouse, SQL, tmp_path / "out.csv", spec.OutputFile(encoding="latin-1"))
