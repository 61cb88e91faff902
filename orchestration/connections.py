"""Spec connections → Dagster resources, with every env reference as a `dg.EnvVar`.

A missing variable is then reported by Dagster, by name, when a run starts; its value never
appears in run config, logs or the UI.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from assets import spec
from resources.folder import FolderResource
from resources.ftp import FtpResource
from resources.mail import SmtpResource
from resources.s3 import S3BucketResource
from resources.sftp import SftpResource
from resources.smb import SmbResource
from resources.warehouse import WarehouseResource


def _value(setting: spec.Setting | None) -> Any:
    if isinstance(setting, spec.EnvRef):
        return dg.EnvVar(setting.env)
    return setting


def _settings(connection: spec.Connection, *names: str) -> dict[str, Any]:
    """The named fields, env references as EnvVar, unset ones left to the resource's default."""
    values = {name: _value(getattr(connection, name)) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def resource_for(connection: spec.Connection, name: str = "") -> dg.ConfigurableResource:
    """The resource for the spec connection `name`: every kind but smtp retries transient
    faults as the spec says and names `name` in its errors."""
    retry: dict[str, Any] = ({"connection_name": name, "retries": connection.retries,
                              "backoff_seconds": connection.backoff_seconds}
                             if isinstance(connection, spec.Retried) else {})
    if isinstance(connection, spec.FolderConnection):
        return FolderResource(path=connection.path, **retry)
    if isinstance(connection, spec.SftpConnection):
        fields = {k: _value(getattr(connection, k)) for k in (
            "host", "username", "password", "private_key_path", "private_key_passphrase",
            "known_hosts", "host_key")}
        return SftpResource(port=connection.port, base_path=connection.base_path,
                            timeout_seconds=connection.timeout_seconds, **retry,
                            **{k: v for k, v in fields.items() if v is not None})
    if isinstance(connection, spec.S3Connection):
        fields = {"bucket": _value(connection.bucket), "region_name": _value(connection.region),
                  "endpoint_url": _value(connection.endpoint_url),
                  "aws_access_key_id": _value(connection.access_key_id),
                  "aws_secret_access_key": _value(connection.secret_access_key)}
        # One botocore attempt: Stagecoach's retries (`retries`, `backoff_seconds`) are the
        # retries; botocore's own five would multiply the attempts and the waits.
        return S3BucketResource(prefix=connection.prefix, max_attempts=1, **retry,
                                **{k: v for k, v in fields.items() if v is not None})
    if isinstance(connection, spec.FtpConnection):
        return FtpResource(**retry, **_settings(
            connection, "host", "port", "username", "password", "tls", "ca_file", "verify_tls",
            "base_path", "passive", "timeout_seconds"))
    if isinstance(connection, spec.SmbConnection):
        return SmbResource(**retry, **_settings(connection, "host", "port", "share", "username",
                                                "password", "base_path", "encrypt",
                                                "timeout_seconds"))
    if isinstance(connection, spec.SmtpConnection):
        return SmtpResource(**_settings(connection, "host", "port", "username", "password",
                                        "security", "ca_file", "verify_tls", "from_address",
                                        "timeout_seconds"))
    if isinstance(connection, spec.SqlConnection):
        return WarehouseResource(url=dg.EnvVar(connection.url.env), **retry)
    raise TypeError(f"no resource for connection kind {connection.kind!r}")
