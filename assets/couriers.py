"""Courier assets: pull one file pattern or one SQL query from a connection.

A courier's materialization is a manifest of local files for the feed to read: files are copied
into the staging area (a folder's through the descriptor its path checks opened, so no path
escapes them), SQL results are streamed into Parquet. xlsx and non-UTF-8 text are converted to
UTF-8 CSV here, so feeds only ever read CSV, JSON lines or Parquet with DuckDB's own readers.
"""


import codecs
import csv
import gzip
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import dagster as dg

from assets import bad_rows, spec
from assets.common import (
    STEP_RETRY_POLICY,
    asset_partition,
    ends_on_termination,
    owners_of,
    partitions_for,
    signed,
    template_context,
)
from assets.names import OPTIONAL_COURIERS_TAG, STAGING_KEY, connection_key, courier_key
from assets.staged import Manifest, StagedFile, StagedFormat
from assets.templating import render_sql, render_text
from resources.connections.files import (
    FileConnection,
    TransferError,
    UnsafeArchive,
    UnsafePath,
    check_archive,
    checked_template_path,
)
from resources.progress import recorded_transfers, transfer_metadata
from resources.retries import not_retried_reason, step_may_retry
from resources.staging import StagingResource

DUCKDB_ENCODINGS = {"utf-8", "utf8", "utf-8-sig"}
# What openpyxl raises for a damaged workbook: XML that does not parse, a part missing or of
# the wrong shape (values and types it cannot convert).
XLSX_ERRORS = (zipfile.BadZipFile, KeyError, OSError, ParseError, ValueError, TypeError,
               IndexError, AttributeError)
MANIFEST = "manifest.json"


def manifest_path(staging: StagingResource, workflow: str, courier: str,
                  partition: str | None) -> Path:
    """Where a courier lists the files of its last pull (per partition), for the feed to read."""
    return staging.folder(workflow, "couriers", courier, partition or "current") / MANIFEST


def courier_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The couriers' family: one asset per courier (its connection's resource is bound by the
    connections' family, staging by the assembly point)."""
    return dg.Definitions(assets=[build_courier_asset(workflow, name, courier)
                                  for name, courier in workflow.couriers.items()])


def build_courier_asset(workflow: spec.Workflow, name: str, courier: spec.Courier
                        ) -> dg.AssetsDefinition:
    """The asset that pulls a courier's files or query rows into staging."""
    connection = workflow.connections[courier.from_]
    wf = workflow.workflow.name
    conn_key = connection_key(wf, courier.from_)
    source = courier.query if connection.kind == "sql" else courier.path
    described = courier.description or (
        f"Pulls `{source}` from connection `{courier.from_}` ({connection.kind})."
    )

    @dg.asset(
        key=courier_key(name),
        group_name=wf,
        description=described,
        owners=owners_of(workflow, courier),
        kinds={connection.kind, "parquet" if connection.kind == "sql" else courier.format.type},
        partitions_def=partitions_for(workflow) if courier.dated else None,
        required_resource_keys={conn_key, STAGING_KEY},
        metadata={"connection": courier.from_, "source": source,
                  "format": dg.MetadataValue.json(courier.format.model_dump())
                  if connection.kind != "sql" else "sql query → parquet"},
        retry_policy=STEP_RETRY_POLICY,
    )
    @ends_on_termination
    @signed
    def _courier(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        staging: StagingResource = getattr(context.resources, STAGING_KEY)
        conn = getattr(context.resources, conn_key)
        partition = asset_partition(context)
        folder = manifest_path(staging, wf, name, partition).parent
        # This run's files go to their own folder: until the new manifest replaces the old
        # one, the files the old manifest names stay as they were.
        work = folder / context.run_id
        work.mkdir(exist_ok=True)
        values = template_context(context, workflow)
        with recorded_transfers() as transfers:
            if connection.kind == "sql":
                files, fmt = _pull_query(context, conn, courier, values, work)
            else:
                files, fmt = _pull_files(context, conn, name, courier, values, work)
        manifest = Manifest(files=files, format=fmt, partition=partition)
        staging.write_json(folder / MANIFEST, manifest.model_dump(mode="json"))
        for earlier in folder.iterdir():
            if earlier.is_dir() and earlier != work:
                shutil.rmtree(earlier, ignore_errors=True)
        total = sum(f.size for f in files)
        return dg.MaterializeResult(metadata={
            "files": dg.MetadataValue.md("\n".join(f"- `{f.source}` ({f.size:,} bytes)"
                                                   for f in files) or "no files"),
            "file_count": len(files),
            "bytes": total,
            "manifest": dg.MetadataValue.path(str(folder / MANIFEST)),
            **transfer_metadata(transfers),
        })

    return _courier


def transfer_failure(what: str, failed: TransferError) -> dg.Failure:
    """The step's failure for a connection error. A refusal the connection judged permanent
    (host key, login, unsafe name, missing database or role, bad URL) bypasses the step's
    RetryPolicy too: the next attempt would be refused the same way. So does a fault the
    connection already retried (docs/retries.md: one retry layer, attempts never multiply)."""
    if not step_may_retry(failed):
        return dg.Failure(f"{what}: {failed} ({not_retried_reason(failed)})",
                          allow_retries=False)
    return dg.Failure(f"{what}: {failed}")


def _pull_files(context: dg.AssetExecutionContext, conn: FileConnection, courier_name: str,
                courier: spec.Courier, values: dict[str, Any], folder: Path
                ) -> tuple[list[StagedFile], StagedFormat]:
    pattern = render_text(courier.path or "", values)
    try:
        checked_template_path(f"courier `{courier_name}`", "path", pattern)
    except UnsafePath as bad:
        raise dg.Failure(str(bad), allow_retries=False) from bad
    try:
        found = conn.list_files(pattern)
    except TransferError as failed:
        raise transfer_failure(f"courier could not list {pattern!r}", failed) from failed
    optional = context.run.tags.get(OPTIONAL_COURIERS_TAG, "").split(",")
    if not found and courier_name in optional:
        context.log.warning(f"no file matches {conn.describe(pattern)!r}: the group's "
                            "`missing_files: notify_and_continue` goes on without it")
    elif not found and courier.required:
        raise dg.Failure(
            f"no file matches {conn.describe(pattern)!r}; check the path and that the file "
            "arrived, or set `required: false` on the courier to load nothing instead",
            allow_retries=False,  # waiting for files is the sensors' job, not a retry's
        )
    files = []
    for item in found:
        try:
            local = conn.local_path(item.path)
            if local is None:
                local = folder / Path(item.path).name
                context.log.info(f"downloading {conn.describe(item.path)} "
                                 f"({item.size:,} bytes)")
                conn.download(item.path, local, size=item.size)
        except TransferError as failed:
            raise transfer_failure("courier download failed", failed) from failed
        original = local
        local = _normalise(local, courier.format, folder, conn.describe(item.path))
        # `original` is the file as it arrived: activations that forward files send it as is.
        files.append(StagedFile(path=str(local), original=str(original),
                                name=Path(item.path).name, source=conn.describe(item.path),
                                size=item.size))
    fmt = courier.format.model_dump()
    if courier.format.type == "xlsx":  # converted to plain CSV by _normalise
        # Lines of the CSV are reported as the sheet's rows (`sheet_skip_rows` above them).
        fmt.update(type="csv", delimiter=",", encoding="utf-8", quote='"', escape=None,
                   skip_rows=0, compression="none", header=courier.format.header,
                   converted_from="xlsx", sheet_skip_rows=courier.format.skip_rows)
    elif courier.format.encoding.lower() not in DUCKDB_ENCODINGS:  # transcoded, decompressed
        fmt.update(encoding="utf-8", compression="none", source_encoding=courier.format.encoding)
    return files, StagedFormat.model_validate(fmt)


def _normalise(local: Path, fmt: spec.FileFormat, folder: Path, source: str) -> Path:
    """Turn xlsx and non-UTF-8 text into UTF-8 CSV, streaming; other files are left as they are.

    Bytes the encoding cannot decode are written through unchanged, so they stay invalid
    UTF-8 on their own line: the feed then treats that row as a bad row, with its line number,
    under the domain table's `bad_rows` policy, instead of failing the whole file here.
    """
    if fmt.type == "xlsx":
        return _xlsx_to_csv(local, fmt, folder / f"{local.stem}.csv", source)
    if fmt.encoding.lower() in DUCKDB_ENCODINGS:
        return local
    target = folder / f"{local.name}.utf8"
    compressed = fmt.compression == "gzip" or (fmt.compression == "auto" and local.suffix == ".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(local, "rb") as raw, open(target, "wb") as out:
            # typeshed's StreamReader factory omits `errors`, which codecs.StreamReader takes.
            decoder = codecs.getreader(fmt.encoding)(
                raw, errors="surrogateescape")  # pyright: ignore[reportCallIssue]
            shutil.copyfileobj(_Encoded(decoder), out, 1 << 20)
    except bad_rows.GZIP_ERRORS as bad:
        target.unlink(missing_ok=True)
        raise dg.Failure(bad_rows.gzip_problem(source, str(local), fmt),
                         allow_retries=False) from bad
    except UnicodeError as bad:  # a codec that cannot pass bytes through (e.g. utf-16)
        target.unlink(missing_ok=True)
        raise dg.Failure(f"{source}: cannot decode as {fmt.encoding}: {bad}; set "
                         "`format.encoding` to the file's real encoding",
                         allow_retries=False) from bad
    return target


class _Encoded:
    """Wrap a text reader so copyfileobj writes UTF-8 bytes (undecodable bytes as they were)."""

    def __init__(self, reader: Any):
        self.reader = reader

    def read(self, size: int = -1) -> bytes:
        return self.reader.read(size).encode("utf-8", "surrogateescape")


def _xlsx_to_csv(local: Path, fmt: spec.FileFormat, target: Path, source: str) -> Path:
    from openpyxl import load_workbook  # heavy: imported only when an xlsx arrives

    if not zipfile.is_zipfile(local):
        with open(local, "rb") as head:
            start = head.read(8)
        looks = ("an old binary .xls workbook" if start.startswith(b"\xd0\xcf\x11\xe0")
                 else "empty" if not start else "text, perhaps CSV" if start.isascii()
                 else "not a zip archive")
        raise dg.Failure(f"{source} is not an xlsx workbook (it is {looks}); ask the sender "
                         "for an .xlsx export, or set `format.type` on the courier to the "
                         "file's real type", allow_retries=False)
    try:
        check_archive(local, f"{local} (xlsx)")  # an xlsx is a zip: no bomb, no odd members
    except UnsafeArchive as bad:
        raise dg.Failure(str(bad), allow_retries=False) from bad
    try:
        book = load_workbook(local, read_only=True, data_only=True)
    except XLSX_ERRORS as bad:
        raise _corrupt_xlsx(source, bad) from bad
    try:
        if fmt.sheet and fmt.sheet not in book.sheetnames:
            raise dg.Failure(f"{source}: no sheet {fmt.sheet!r} (sheets: "
                             f"{', '.join(book.sheetnames)})", allow_retries=False)
        sheet = book[fmt.sheet] if fmt.sheet else book.worksheets[0]
        with open(target, "w", newline="", encoding="utf-8") as out:
            _write_rows(csv.writer(out), _sheet_rows(sheet, source), fmt.skip_rows)
    finally:
        book.close()
    return target


def _sheet_rows(sheet: Any, source: str) -> Iterator[tuple]:
    """The sheet's rows; read-only workbooks parse the sheet's XML only now, so a corrupt
    sheet shows up here rather than when the workbook opens."""
    rows = sheet.iter_rows(values_only=True)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except XLSX_ERRORS as bad:
            raise _corrupt_xlsx(source, bad) from bad
        yield row


def _write_rows(writer: Any, rows: Iterator[tuple], skip_rows: int) -> None:
    width = 0  # read-only sheets may drop a row's empty trailing cells: pad them back
    for index, row in enumerate(rows):
        if index >= skip_rows:
            values = ["" if v is None else v for v in row]
            width = width or len(values)
            writer.writerow(values + [""] * (width - len(values)))


def _corrupt_xlsx(source: str, bad: BaseException) -> dg.Failure:
    """A damaged workbook: the same file fails the same way on every try, so no retry."""
    return dg.Failure(f"{source} is a zip archive but not a readable xlsx workbook "
                      f"({type(bad).__name__}: {bad}); ask the sender for the file again",
                      allow_retries=False)


def _pull_query(context: dg.AssetExecutionContext, conn: Any, courier: spec.Courier,
                values: dict[str, Any], folder: Path) -> tuple[list[StagedFile], StagedFormat]:
    bound = render_sql(courier.query or "", values, conn.placeholder.format)
    target = folder / "result.parquet"
    try:
        rows = conn.query_to_parquet(bound.text, bound.params, target, lambda rows: (
            context.log.info(f"{rows:,} rows read so far")))
    except TransferError as failed:
        raise transfer_failure("courier", failed) from failed
    return ([StagedFile(path=str(target), source=f"query on {courier.from_}",
                        size=target.stat().st_size, rows=rows)],
            StagedFormat.model_validate({"type": "parquet"}))
