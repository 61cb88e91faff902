"""Connections: where files and tables live (folder, SFTP, FTP, SMB, S3), mail and SQL."""

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from assets.spec.common import Model, Secret, Setting, kinds_of


class Retried(Model):
    """Connection operations (login, listing, each transfer, a source query) retried on
    transient faults: refused, reset or timed-out connections and the server's temporary codes.
    A refusal a retry cannot fix (wrong password, missing file, bad checksum) fails at once."""

    retries: int = Field(3, ge=0, le=10, description="Further attempts after a transient "
                         "fault; 0 turns retries off. For s3, botocore's own attempts per "
                         "request (standard mode). The step is not retried on top of them "
                         "(docs/retries.md).")
    backoff_seconds: float = Field(1.0, ge=0, le=300, description="Wait before the first "
                                   "retry, doubled each time (s3: botocore sets its own waits).")


class FolderConnection(Retried):
    kind: Literal["folder"]
    path: str = Field(description="Folder path; relative paths are relative to the spec file.")
    description: str | None = None


class SftpConnection(Retried):
    kind: Literal["sftp"]
    host: Setting
    port: int = Field(22, ge=1, le=65535)
    username: Setting
    password: Secret | None = None
    private_key_path: Setting | None = None
    private_key_passphrase: Secret | None = None
    known_hosts: Setting | None = Field(
        None, description="known_hosts file; default ~/.ssh/known_hosts. Host keys are checked."
    )
    host_key: Setting | None = Field(
        None, description="The server's host key pinned ('ssh-ed25519 AAAA…', a known_hosts "
        "line without the host): only this key is accepted, known_hosts is not read.")
    base_path: str = "."
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class S3Connection(Retried):
    kind: Literal["s3"]
    bucket: Setting
    prefix: str = ""
    region: Setting | None = None
    endpoint_url: Setting | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    description: str | None = None


class FtpConnection(Retried):
    kind: Literal["ftp"]
    host: Setting
    port: int = Field(21, ge=1, le=65535)
    username: Setting
    password: Secret | None = None
    tls: bool = Field(False, description="Explicit FTPS (AUTH TLS, encrypted data channel).")
    ca_file: Setting | None = Field(None, description="CA bundle to check the server's "
                                                      "certificate; default the system's.")
    verify_tls: bool = Field(True, description="false: encrypt without checking the server's "
                                               "certificate (explicit opt-out).")
    base_path: str = "."
    passive: bool = True
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class SmbConnection(Retried):
    kind: Literal["smb"]
    host: Setting
    port: int = Field(445, ge=1, le=65535)
    share: Setting
    username: Setting
    password: Secret | None = None
    base_path: str = Field("", description="Folder inside the share.")
    encrypt: bool = Field(False, description="Require SMB3 encryption.")
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class SmtpConnection(Model):
    """A mail server: activations send their file as an attachment, in the body, or a link."""

    kind: Literal["smtp"]
    host: Setting
    port: int = Field(587, ge=1, le=65535)
    username: Setting | None = None
    password: Secret | None = None
    security: Literal["starttls", "ssl", "none"] = "starttls"
    ca_file: Setting | None = None
    verify_tls: bool = Field(True, description="false: encrypt without checking the server's "
                                               "certificate (explicit opt-out).")
    from_address: Setting
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class SqlConnection(Retried):
    kind: Literal["sql"]
    url: Secret = Field(description="SQLAlchemy URL; it usually holds a password, so env only.")
    description: str | None = None


# Connections that hold files (couriers read them, activations write to them).
FileStore = FolderConnection | SftpConnection | FtpConnection | SmbConnection | S3Connection
FILE_KINDS = kinds_of(FileStore)
# Connections an activation can deliver a file to: a file store, or mail.
Destination = FileStore | SmtpConnection
Connection = Annotated[FileStore | SmtpConnection | SqlConnection, Field(discriminator="kind")]
