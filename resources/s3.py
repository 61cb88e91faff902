"""An S3 bucket and prefix as a file connection (dagster-aws's S3Resource, so endpoint_url reaches
any S3-compatible store)."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import ssl
from pathlib import Path
from typing import Any, ClassVar

import botocore.exceptions as boto_errors
from boto3.s3.transfer import TransferConfig
from dagster_aws.s3 import S3Resource

from resources.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    safe_relative,
    split_pattern,
)
from resources.retry import RetryingConnection, causes

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

    # The ETag of an unencrypted upload is its md5 (of each part, when multipart).
    checks_md5: ClassVar[bool] = True

    def get_object_to_set_on_execution_context(self) -> S3BucketResource:
        return self  # S3Resource hands assets a bare boto3 client; they need list_files & co.

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
            self.get_client().download_file(self.bucket, self._key(remote), str(local))
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
                client.upload_file(str(local), self.bucket, key, Config=TRANSFER)
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
