"""An S3 bucket and prefix as a file connection (dagster-aws's S3Resource, so endpoint_url reaches
any S3-compatible store).

Retries are botocore's own, in its `standard` mode (docs/retries.md): every request is tried up
to `retries + 1` times on connection errors, throttling and 5xx, with botocore's jittered
backoff; 4xx are not retried. Stagecoach's own loop makes one attempt on top, so the two never
multiply. A download whose stream is cut mid-body is resumed by s3transfer (up to the same
number of stream attempts).
"""

import contextlib
import hashlib
import posixpath
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import botocore.exceptions as boto_errors
import dagster as dg
from boto3.s3.transfer import TransferConfig
from dagster_aws.s3 import S3Resource
from dagster_aws.s3.utils import construct_s3_client
from pydantic import PrivateAttr

from resources.connections.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    safe_relative,
    split_pattern,
)
from resources.connections.retry import RetryingConnection, causes, in_single_attempt, with_retries
from resources.progress import current

T = TypeVar("T")
PART_SIZE = 16 * 1024 * 1024
# Fixed part sizes make the multipart ETag predictable, so the md5 can be checked after upload.
TRANSFER = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
SINGLE_PUT_LIMIT = 5 * 1024**3  # S3's limit for one PUT (conditional writes use one)
# S3's (and S3-compatible stores') "slow down, try later" codes.
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
              "RequestLimitExceeded", "TooManyRequestsException", "ServiceUnavailable",
              "InternalError"}


def s3_etag(path: Path) -> tuple[str, str]:
    """(the ETag S3 gives an upload of this file with TRANSFER's part size, the file's md5),
    in one read."""
    parts, whole = [], hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(PART_SIZE):
            parts.append(hashlib.md5(block, usedforsecurity=False).digest())
            whole.update(block)
    if path.stat().st_size < PART_SIZE:
        return whole.hexdigest(), whole.hexdigest()
    joined_digest = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return f"{joined_digest}-{len(parts)}", whole.hexdigest()


class S3BucketResource(RetryingConnection, S3Resource):
    """An S3 bucket and prefix."""

    bucket: str
    prefix: str = ""
    _operation: str = PrivateAttr("request")  # what botocore's retry log lines name

    # The ETag of an unencrypted upload is its md5 (of each part, when multipart).
    checks_md5: ClassVar[bool] = True

    def get_object_to_set_on_execution_context(self) -> Self:
        return self  # S3Resource hands assets a bare boto3 client; they need list_files & co.

    def _client_attempts(self) -> int:
        """Botocore's attempts per request: `retries + 1` (one in a sensor tick)."""
        return 1 if in_single_attempt() else self.retries + 1

    def get_client(self) -> Any:
        """A boto3 client in botocore's `standard` retry mode with `retries + 1` attempts (the
        inherited `max_attempts` is not used: `retries` is the one setting), logging each
        retry the way the other kinds do."""
        # botocore's `max_attempts` (the legacy key dagster-aws sets) counts the retries after
        # the first attempt: `total_max_attempts` would be this plus one.
        client = construct_s3_client(
            max_attempts=self._client_attempts() - 1, region_name=self.region_name,
            endpoint_url=self.endpoint_url, use_unsigned_session=self.use_unsigned_session,
            profile_name=self.profile_name, use_ssl=self.use_ssl, verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token)
        attempts = self._client_attempts()

        def remember(request_dict: dict, caught_exception: Exception | None = None,
                     response: Any = None, **_: Any) -> None:
            """Keep why the attempt failed, for the log line of the retry (if any)."""
            if caught_exception is not None:
                why = f"{type(caught_exception).__name__}: {caught_exception}"
            elif response is not None and response[0].status_code >= 300:
                error = (response[1] or {}).get("Error", {})
                why = f"HTTP {response[0].status_code} {error.get('Code', '')}".strip()
            else:
                return
            request_dict["context"]["stagecoach_failed"] = why

        def log_retry(request: Any, operation_name: str, **_: Any) -> None:
            number = request.context.get("retries", {}).get("attempt", 1)
            if number > 1:
                dg.get_dagster_logger("stagecoach.connections").warning(
                    f"{self._named(self._operation)}: attempt {number - 1} of {attempts} "
                    f"failed ({operation_name}: "
                    f"{request.context.get('stagecoach_failed', 'no answer')}); botocore "
                    "retries it (standard mode)")

        client.meta.events.register_first("needs-retry.s3", remember)
        client.meta.events.register("request-created.s3", log_retry)
        return client

    def _with_retries(self, operation: str, attempt: Callable[[], T],
                      litter: list[str] | None = None, once: bool = False) -> T:
        """One attempt of ours: botocore retries each request inside it."""
        self._operation = operation
        return with_retries(attempt, connection=self.connection_name, operation=operation,
                            retries=0, backoff_seconds=self.backoff_seconds,
                            transient=self.is_transient, litter=litter,
                            client_attempts=1 if once else self._client_attempts())

    def _key(self, remote: str) -> str:
        return posixpath.join(self.prefix, safe_relative(remote)).lstrip("/")

    def local_path(self, remote: str) -> Path | None:
        return None  # remote: couriers download it

    def describe(self, remote: str) -> str:
        return f"s3://{self.bucket}/{self._key(remote)}"

    def _list_once(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        base = posixpath.normpath(posixpath.join(self.prefix, directory)).strip("/")
        prefix = "" if base == "." else f"{base}/"
        found = []
        try:
            paginator = self.get_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for item in page.get("Contents", []):
                    base = item["Key"][len(prefix):]
                    if matches(base, name):
                        found.append(RemoteFile(joined(directory, base), item["Size"],
                                                item["LastModified"].timestamp()))
        except Exception as failed:
            raise TransferError(f"s3://{self.bucket}/{prefix} list: {failed}") from failed
        return sorted(found, key=lambda f: f.path)

    def _download_once(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            progress = current()
            if progress is not None:
                progress.restart()
            self.get_client().download_file(
                self.bucket, self._key(remote), str(local),
                Callback=progress.add if progress else None, Config=TransferConfig(
                    multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                    num_download_attempts=self._client_attempts()))
        except Exception as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        return local.stat().st_size

    def transient_error(self, error: BaseException) -> bool | None:
        """Connection errors, cut responses, 5xx and throttling are worth another attempt
        (after botocore's own `max_attempts`); 4xx (denied, no such key or bucket) are not."""
        if isinstance(error, boto_errors.NoCredentialsError):
            return False
        if isinstance(error, boto_errors.SSLError):
            # A TLS connection cut mid-way may come back; an untrusted certificate or a
            # failed handshake will not (SSLError is a botocore ConnectionError).
            chain = list(causes(error))
            if any(isinstance(c, ssl.SSLCertVerificationError) for c in chain):
                return False
            return any(isinstance(c, ssl.SSLEOFError | ssl.SSLZeroReturnError) for c in chain)
        if isinstance(error, boto_errors.ConnectionError | boto_errors.HTTPClientError
                      | boto_errors.IncompleteReadError):
            return True
        if isinstance(error, boto_errors.ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return code in _THROTTLED or status >= 500 or status == 429
        return super().transient_error(error)

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        """S3 shows an object only once its upload completes: no temporary name is needed.

        With overwrite off the object is written with one conditional PUT (`If-None-Match: *`),
        so a concurrent writer cannot slip in between a check and the write.
        """
        client, key, expected = self.get_client(), self._key(remote), local.stat().st_size
        where = self.describe(remote)
        try:
            if overwrite:
                progress = current()
                if progress is not None:
                    progress.restart()
                client.upload_file(str(local), self.bucket, key, Config=TRANSFER,
                                   Callback=progress.add if progress else None)
            elif expected > SINGLE_PUT_LIMIT:
                raise TransferError(f"{where}: overwrite off needs one conditional PUT, "
                                    f"which S3 limits to 5 GiB")
            else:
                with open(local, "rb") as body:
                    client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            head = client.head_object(Bucket=self.bucket, Key=key)
        except TransferError:
            raise
        except Exception as failed:
            code = getattr(failed, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                # botocore's retry of a PUT whose reply was lost meets its own object.
                retried = retried or bool(getattr(failed, "response", {}).get(
                    "ResponseMetadata", {}).get("RetryAttempts"))
                if retried and self._ours(client, key, local, expected, where):
                    return expected
                raise TransferError(f"{where} exists and overwrite is off") from failed
            raise TransferError(f"{where} upload: {failed}") from failed
        try:
            check_size(where, head["ContentLength"], expected)
            encrypted = head.get("ServerSideEncryption") == "aws:kms" or \
                head.get("SSECustomerAlgorithm")
            if md5 is not None and not encrypted:  # with KMS or SSE-C the ETag is no md5
                etag = head["ETag"].strip('"')
                wanted, local_md5 = (md5, md5) if "-" not in etag else s3_etag(local)
                if etag != wanted or local_md5 != md5:
                    raise TransferError(f"{where}: ETag {etag} does not match the file's md5 "
                                        f"{md5} (expected ETag {wanted})")
        except TransferError:
            # S3 has no rename: the object is visible already. Remove it, so a bad copy is
            # never taken for the file (S3 checks each part's checksum on upload, so this is
            # a last line of defence).
            with contextlib.suppress(Exception):
                client.delete_object(Bucket=self.bucket, Key=key)
            raise
        return head["ContentLength"]

    def _ours(self, client: Any, key: str, local: Path, expected: int, where: str) -> bool:
        """The object an earlier attempt's PUT wrote, its reply lost: same size and ETag."""
        try:
            head = client.head_object(Bucket=self.bucket, Key=key)
        except Exception as failed:
            raise TransferError(f"{where} upload: {failed}") from failed
        encrypted = head.get("ServerSideEncryption") == "aws:kms" or \
            head.get("SSECustomerAlgorithm")
        same = None if encrypted else head["ETag"].strip('"') in s3_etag(local)
        return self._delivered_earlier(where, True, head["ContentLength"], expected, same)
