"""The workflow: one spec file, every section together."""

from datetime import date

from pydantic import (
    Field,
)

from assets.spec.activations import Activation
from assets.spec.alerts import Alert
from assets.spec.automations import Automation, Profile
from assets.spec.common import Model, Name, Owner, TimeZone
from assets.spec.connections import Connection
from assets.spec.couriers import Courier
from assets.spec.feeds import DomainTable
from assets.spec.groups import CourierGroup, OrchestrationGroup, Trigger
from assets.spec.identity import IdentityResolution
from assets.spec.tables import Database, Query


class WorkflowInfo(Model):
    name: Name
    description: str | None = None
    owners: list[Owner] = Field(default_factory=list)
    timezone: TimeZone = "UTC"
    start_date: date | None = Field(
        None, description="First daily partition of dated couriers (required if any)."
    )
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    archive: str | None = Field(
        None, description="Connection (folder or s3) keeping a copy of every delivered file; "
                          "default a folder in Stagecoach's data directory.")



class Workflow(Model):
    """One YAML file: a tenant's whole pipeline."""

    workflow: WorkflowInfo
    connections: dict[Name, Connection] = Field(default_factory=dict)
    couriers: dict[Name, Courier] = Field(default_factory=dict)
    domain_tables: dict[Name, DomainTable] = Field(default_factory=dict)
    databases: dict[Name, Database] = Field(default_factory=dict)
    queries: dict[Name, Query] = Field(default_factory=dict)
    identity: dict[Name, IdentityResolution] = Field(default_factory=dict)
    activations: dict[Name, Activation] = Field(default_factory=dict)
    courier_groups: dict[Name, CourierGroup] = Field(default_factory=dict)
    orchestration_groups: dict[Name, OrchestrationGroup] = Field(default_factory=dict)
    triggers: dict[Name, Trigger] = Field(default_factory=dict)
    profiles: dict[Name, Profile] = Field(default_factory=dict)
    automations: dict[Name, Automation] = Field(default_factory=dict)
    alerts: dict[Name, Alert] = Field(default_factory=dict)
