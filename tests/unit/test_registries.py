"""Every kind of a spec union has exactly one registry entry, and every entry a union member:
a kind added to the spec without its builder (or the reverse) fails here, not in a night run."""

from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from assets import spec
from assets.delivery import DESTINATIONS
from assets.registry import Entry, Registry
from assets.steps.registry import STEPS
from orchestration.alert_channels import CHANNELS
from orchestration.connections import CONNECTIONS

REGISTRIES = {"connections": CONNECTIONS, "destinations": DESTINATIONS, "alerts": CHANNELS,
              "steps": STEPS}


@pytest.mark.parametrize("name", REGISTRIES)
def test_each_union_member_has_one_entry(name: str) -> None:
    registry = REGISTRIES[name]
    assert registry.problems() == []
    assert set(registry.entries) == set(spec.union_members(registry.union))


class AzureBlobConnection(spec.Model):
    kind: Literal["azure_blob"]
    container: str
    account_key: spec.Secret


WithAzure = Annotated[spec.FileStore | spec.SmtpConnection | spec.SqlConnection
                      | AzureBlobConnection, Field(discriminator="kind")]


def test_a_union_member_without_a_builder_is_named() -> None:
    registry: Registry[Any] = Registry("connection", WithAzure, CONNECTIONS.entries.values())
    assert registry.problems() == [
        "connection kind 'azure_blob' (AzureBlobConnection) has no registry entry"]
    with pytest.raises(TypeError, match="no connection builder for kind 'azure_blob'"):
        registry.build(AzureBlobConnection(kind="azure_blob", container="c",
                                           account_key=spec.EnvRef(env="AZ_KEY")))


def test_an_entry_without_a_union_member_is_named() -> None:
    entries = [*CONNECTIONS.entries.values(), Entry(AzureBlobConnection, object())]
    registry: Registry[Any] = Registry("connection", spec.Connection, entries)
    assert registry.problems() == [
        "connection registry entry AzureBlobConnection is not in the spec union"]


def test_kinds_and_secrets_come_from_the_models() -> None:
    assert CONNECTIONS.kinds == ("folder", "sftp", "ftp", "smb", "s3", "smtp", "sql")
    assert DESTINATIONS.kinds == ("folder", "sftp", "ftp", "smb", "s3", "smtp")
    assert spec.FILE_KINDS == ("folder", "sftp", "ftp", "smb", "s3")
    secrets = {e.kind: e.secrets for e in CONNECTIONS.entries.values()}
    assert secrets["s3"] == {"access_key_id", "secret_access_key"}
    assert secrets["sftp"] == {"password", "private_key_passphrase"}
    assert secrets["sql"] == {"url"}
    assert Entry(AzureBlobConnection, None).secrets == {"account_key"}
    alert_secrets = {e.kind: e.secrets for e in CHANNELS.entries.values()}
    assert alert_secrets["webhook"] == {"url", "secret"}
    assert alert_secrets["twilio"] == {"auth_token"}  # account_sid is a Setting, not a secret
    assert alert_secrets["shell"] == frozenset()


def test_a_step_takes_a_connection_exactly_when_its_entry_names_the_kinds() -> None:
    """The spec check of a step's `connection:` reads the kinds from the entry; a step model
    with the field but an entry naming no kinds would refuse every connection."""
    for model, entry in STEPS.entries.items():
        assert bool(entry.build.connections) == ("connection" in model.model_fields), model
    assert STEPS.build(spec.SshStep(kind="ssh", connection="box", command="true")
                       ).connections == ("sftp",)
