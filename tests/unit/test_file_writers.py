"""The vectorised delimited writer writes the very bytes of the row-wise `csv.writer` one, for
every value type a query returns and every file option the spec offers."""

import datetime as dt
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets import spec
from assets.file_writers import (
    OutputEncodingError,
    _write_delimited,
    _write_delimited_vectorised,
    write_file,
)

UTC = dt.UTC
TRICKY_TEXT = ["plain", "", None, 'say "hi"', "a,b", "a;b", "a|b", "tab\there", "line\nbreak",
               "cr\rhere", "crlf\r\n", "café", "李小龙", "ø\\x", " lead", "trail ", '"', ",", "|"]


def _batch() -> pa.RecordBatch:
    n = len(TRICKY_TEXT)
    ints = [None if i % 5 == 0 else (i - 7) * 10**i for i in range(n)]
    return pa.RecordBatch.from_pydict({
        "text": pa.array(TRICKY_TEXT, pa.string()),
        "big": pa.array([None if v is None else v % 2**62 for v in ints], pa.int64()),
        "small": pa.array([None if i % 4 == 0 else i - 9 for i in range(n)], pa.int32()),
        "ratio": pa.array([None, 0.1, 1.0, 1e16, 1e15, -2.5, 1e-5, 123456789.123, float("inf"),
                           float("nan"), 3.0, 0.0, -0.0, 1e22, 2 / 3, 5e-324, 1.5, 7.0, None],
                          pa.float64()),
        "money": pa.array([None if i % 3 == 0 else Decimal(i * 137 - 900) / 100
                           for i in range(n)], pa.decimal128(18, 2)),
        "tiny": pa.array([None if i % 3 == 0 else Decimal(i) / 10**10 for i in range(n)],
                         pa.decimal128(38, 10)),
        "flag": pa.array([None if i % 3 == 0 else i % 2 == 0 for i in range(n)], pa.bool_()),
        "day": pa.array([None if i % 6 == 0 else dt.date(1900 + 7 * i, 1 + i % 12, 1 + i)
                         for i in range(n)], pa.date32()),
        "stamp": pa.array([None if i % 7 == 0 else dt.datetime(2026, 1, 1 + i, i, 2 * i, 3 * i,
                                                               0 if i % 2 else 1000 * i + i)
                           for i in range(n)], pa.timestamp("us")),
        "stamp_tz": pa.array([None if i % 7 == 0 else dt.datetime(2026, 3, 1 + i, i, tzinfo=UTC)
                              for i in range(n)], pa.timestamp("us", tz="UTC")),
        "ms": pa.array([None if i % 7 == 0 else dt.datetime(2026, 1, 1, 0, 0, 0, 5000 * i)
                        for i in range(n)], pa.timestamp("ms")),
    })


OPTIONS = [dict(type=kind, quoting=quoting, header=header, line_suffix=suffix,
                line_ending=ending)
           for kind, quoting, header, suffix, ending in itertools.product(
               ["csv", "tsv", "psv"], ["minimal", "all", "nonnumeric"], [True, False],
               ["", "|", ";"], ["lf", "crlf"])]


def _both(tmp_path: Path, batches: list[pa.RecordBatch], fmt: spec.OutputFile
          ) -> tuple[bytes, bytes]:
    rowwise, vectorised = tmp_path / "rowwise", tmp_path / "vectorised"
    assert _write_delimited(batches[0], iter(batches[1:]), rowwise, fmt) == \
        _write_delimited_vectorised(batches[0], iter(batches[1:]), vectorised, fmt)
    return rowwise.read_bytes(), vectorised.read_bytes()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_same_bytes_for_every_type_and_option(tmp_path: Path, options: dict) -> None:
    batch = _batch()
    fmt = spec.OutputFile(**options)
    rowwise, vectorised = _both(tmp_path, [batch, batch.slice(3, 5), batch.slice(0, 0)], fmt)
    assert vectorised == rowwise
    assert rowwise.count(b"\n") >= batch.num_rows + 5  # the sample really holds rows


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-8-sig", "utf-16"])
def test_same_bytes_in_other_encodings(tmp_path: Path, encoding: str) -> None:
    batch = pa.RecordBatch.from_pydict({"name": ["café", "Zoë", None, "x,y"], "n": [1, 2, 3, 4]})
    fmt = spec.OutputFile(encoding=encoding)
    rowwise, vectorised = _both(tmp_path, [batch, batch], fmt)
    assert vectorised == rowwise
    if encoding == "utf-8-sig":
        assert vectorised.count(b"\xef\xbb\xbf") == 1  # one byte-order mark, not one a batch


def test_unencodable_value_names_row_and_column(tmp_path: Path) -> None:
    clean = pa.RecordBatch.from_pydict({"id": [1, 2, 3], "name": ["ok", "fine", "good"]})
    batch = pa.RecordBatch.from_pydict({"id": [4, 5, 6], "name": ["ok", "李", "good"]})
    fmt = spec.OutputFile(encoding="latin-1")
    with pytest.raises(OutputEncodingError, match=r"row 5, column 'name': '李'.*latin-1"):
        _write_delimited_vectorised(clean, iter([batch]), tmp_path / "out.csv", fmt)
    replaced = spec.OutputFile(encoding="latin-1", encoding_errors="replace")
    rowwise, vectorised = _both(tmp_path, [batch], replaced)
    assert vectorised == rowwise and b"?" in vectorised


def test_a_lone_column_quotes_its_empty_values(tmp_path: Path) -> None:
    batch = pa.RecordBatch.from_pydict({"only": ["a", "", None]})
    rowwise, vectorised = _both(tmp_path, [batch], spec.OutputFile())
    assert vectorised == rowwise == b'only\na\n""\n""\n'


def test_write_file_takes_the_vectorised_path_and_counts_rows(tmp_path: Path) -> None:
    batch = _batch()
    written = write_file(iter([batch, batch]), tmp_path / "out.csv", spec.OutputFile())
    assert written.rows == 2 * batch.num_rows
    _write_delimited(batch, iter([batch]), tmp_path / "reference.csv", spec.OutputFile())
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=20),
       numbers=st.lists(st.one_of(st.none(), st.integers(-10**15, 10**15)), min_size=20,
                        max_size=20),
       options=st.sampled_from(OPTIONS))
def test_same_bytes_for_any_text(tmp_path: Path, values: list, numbers: list, options: dict
                                 ) -> None:
    batch = pa.RecordBatch.from_pydict({"text": pa.array(values, pa.string()),
                                        "n": pa.array(numbers[:len(values)], pa.int64())})
    rowwise, vectorised = _both(tmp_path, [batch], spec.OutputFile(**options))
    assert vectorised == rowwise


@pytest.mark.parametrize("delimiter", [" ", ".", "-", ":", "e", "t", ";"])
def test_same_bytes_when_the_delimiter_can_stand_in_numbers_and_dates(tmp_path: Path,
                                                                      delimiter: str) -> None:
    fmt = spec.OutputFile(delimiter=delimiter, line_suffix="5")
    rowwise, vectorised = _both(tmp_path, [_batch()], fmt)
    assert vectorised == rowwise


def _json_lines_as_before(batches: list[pa.RecordBatch]) -> bytes:
    """The JSON-lines writer as it was: json.dumps of each record."""
    return "".join(json.dumps(record, default=str, ensure_ascii=False) + "\n"
                   for batch in batches for record in batch.to_pylist()).encode()


def test_json_lines_same_bytes_as_json_dumps(tmp_path: Path) -> None:
    batch = _batch()
    nested = pa.RecordBatch.from_pydict({
        "tags": pa.array([["a", "b"], None, []], pa.list_(pa.string())),
        "attrs": pa.array([{"k": 1}, None, {"k": None}], pa.struct([("k", pa.int64())])),
        "f32": pa.array([0.1, None, 2.5], pa.float32()),
        'odd "key"\n': pa.array(["x\x0b\\u000B", None, "\x01\x1f"], pa.string()),
    })
    for batches in ([batch, batch.slice(2, 4)], [nested]):
        written = write_file(iter(batches), tmp_path / "out.jsonl", spec.OutputFile(type="jsonl"))
        assert (tmp_path / "out.jsonl").read_bytes() == _json_lines_as_before(batches)
        assert written.rows == sum(b.num_rows for b in batches)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=20),
       numbers=st.lists(st.one_of(st.none(), st.floats(), st.integers(-10**15, 10**15)),
                        min_size=20, max_size=20))
def test_json_lines_same_bytes_for_any_text(tmp_path: Path, values: list, numbers: list) -> None:
    floats = [None if n is None else float(n) for n in numbers[:len(values)]]
    batch = pa.RecordBatch.from_pydict({"text": pa.array(values, pa.string()),
                                        "x": pa.array(floats, pa.float64())})
    write_file(iter([batch]), tmp_path / "out.jsonl", spec.OutputFile(type="jsonl"))
    assert (tmp_path / "out.jsonl").read_bytes() == _json_lines_as_before([batch])
