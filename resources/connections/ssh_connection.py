"""The connection settings every SSH-based resource has (SFTP transfers, SSH commands),
checked by sftp's `open_ssh_client`."""

import dagster as dg
from pydantic import Field


class SshConnection(dg.ConfigurableResource):
    """Host, login and the host key to trust: a pinned key, else known_hosts."""

    host: str
    port: int = 22
    username: str
    password: str | None = None
    private_key_path: str | None = None
    private_key_passphrase: str | None = None
    known_hosts: str | None = Field(
        default=None, description="Default ~/.ssh/known_hosts.")
    host_key: str | None = Field(
        default=None, description="The server's public host key pinned, as in known_hosts "
        "without the host ('ssh-ed25519 AAAA…'); when set, only this key is accepted and "
        "known_hosts is not read.")
    timeout_seconds: float = 30
