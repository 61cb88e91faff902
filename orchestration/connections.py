"""Spec connections → Dagster resources, with every env reference as a `dg.EnvVar`.

A missing variable is then reported by Dagster, by name, when a run starts; its value never
appears in run config, logs or the UI.

The SFTP, S3 and SMB resources are imported by their builders: paramiko, boto3 with dagster-aws
and smbprotocol cost about a second of imports in every process that loads the code location
(each run, each code server), paid only by a workflow that has such a connection.
"""

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets import spec
from assets.names import connection_key
from assets.registry import Entry, Registry
from resources.connections.folder import FolderResource
from resources.connections.ftp import FtpResource
from resources.connections.mail import SmtpResource
from resources.warehouse import WarehouseResource

if TYPE_CHECKING:
    from resources.connections.s3 import S3BucketResource
    from resources.connections.sftp import SftpResource
    from resources.connections.smb import SmbResource


def _value(setting: spec.Setting | None) -> Any:
    if isinstance(setting, spec.EnvRef):
        return dg.EnvVar(setting.env)
    return setting


def _settings(connection: spec.Connection, *names: str) -> dict[str, Any]:
    """The named fields, env references as EnvVar, unset ones left to the resource's default."""
    values = {name: _value(getattr(connection, name)) for name in names}
    return {k: v for k, v in values.items() if v is not None}


ResourceFactory = Callable[[Any, dict[str, Any]], dg.ConfigurableResource]


def _folder(connection: spec.FolderConnection, retry: dict[str, Any]) -> FolderResource:
    return FolderResource(path=connection.path, **retry)


def _sftp(connection: spec.SftpConnection, retry: dict[str, Any]) -> "SftpResource":
    from resources.connections.sftp import SftpResource

    return SftpResource(port=connection.port, base_path=connection.base_path,
                        timeout_seconds=connection.timeout_seconds, **retry, **_settings(
                            connection, "host", "username", "password", "private_key_path",
                            "private_key_passphrase", "known_hosts", "host_key"))


def _s3(connection: spec.S3Connection, retry: dict[str, Any]) -> "S3BucketResource":
    from resources.connections.s3 import S3BucketResource

    fields = {"bucket": _value(connection.bucket), "region_name": _value(connection.region),
              "endpoint_url": _value(connection.endpoint_url),
              "aws_access_key_id": _value(connection.access_key_id),
              "aws_secret_access_key": _value(connection.secret_access_key)}
    # `retries` sets botocore's standard-mode attempts (S3BucketResource.get_client): the one
    # retry layer for S3; Stagecoach's own loop makes one attempt around it.
    return S3BucketResource(prefix=connection.prefix, **retry,
                            **{k: v for k, v in fields.items() if v is not None})


def _ftp(connection: spec.FtpConnection, retry: dict[str, Any]) -> FtpResource:
    return FtpResource(**retry, **_settings(
        connection, "host", "port", "username", "password", "tls", "ca_file", "verify_tls",
        "base_path", "passive", "timeout_seconds"))


def _smb(connection: spec.SmbConnection, retry: dict[str, Any]) -> "SmbResource":
    from resources.connections.smb import SmbResource

    return SmbResource(**retry, **_settings(connection, "host", "port", "share", "username",
                                            "password", "base_path", "encrypt",
                                            "timeout_seconds"))


def _smtp(connection: spec.SmtpConnection, retry: dict[str, Any]) -> SmtpResource:
    return SmtpResource(**_settings(connection, "host", "port", "username", "password",
                                    "security", "ca_file", "verify_tls", "from_address",
                                    "timeout_seconds"))


def _sql(connection: spec.SqlConnection, retry: dict[str, Any]) -> WarehouseResource:
    return WarehouseResource(url=dg.EnvVar(connection.url.env), **retry)


CONNECTIONS: Registry[ResourceFactory] = Registry("connection", spec.Connection, [
    Entry(spec.FolderConnection, _folder), Entry(spec.SftpConnection, _sftp),
    Entry(spec.FtpConnection, _ftp), Entry(spec.SmbConnection, _smb),
    Entry(spec.S3Connection, _s3), Entry(spec.SmtpConnection, _smtp),
    Entry(spec.SqlConnection, _sql),
])


def connection_definitions(workflow: spec.Workflow) -> dg.Definitions:
    """The connections' family: one resource per spec connection, under
    `<workflow>__<connection>`, bound once for every asset, job and sensor that names it."""
    name = workflow.workflow.name
    return dg.Definitions(resources={connection_key(name, c): resource_for(conn, c)
                                     for c, conn in workflow.connections.items()})


def resource_for(connection: spec.Connection, name: str = "") -> dg.ConfigurableResource:
    """The resource for the spec connection `name`: every kind but smtp retries transient
    faults as the spec says and names `name` in its errors."""
    retry: dict[str, Any] = ({"connection_name": name, "retries": connection.retries,
                              "backoff_seconds": connection.backoff_seconds}
                             if isinstance(connection, spec.Retried) else {})
    resource = CONNECTIONS.build(connection)(connection, retry)
    text = f"`{name}`: a {connection.kind} connection." if name else (
        f"A {connection.kind} connection.")
    if connection.description:
        text += f" {connection.description}"
    return _described(type(resource), text)(**{
        field: getattr(resource, field) for field in resource.model_fields_set})


@cache
def _described(cls: type[dg.ConfigurableResource], description: str
               ) -> type[dg.ConfigurableResource]:
    """The resource class under its own name, documented by the spec's connection: Dagster's
    Resources page shows a resource's class docstring, so each connection gets a class whose
    docstring is its kind and description (the class's own docstring is the same for all)."""
    return type(cls.__name__, (cls,), {"__doc__": description, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})
