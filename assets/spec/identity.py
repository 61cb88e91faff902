"""Identity resolution: which domain tables describe the same people, and how to match them."""

from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    model_validator,
)

from assets.spec.common import Model, Name, Owner
from assets.spec.feeds import Percent

IdentityRole = Literal["email", "phone", "given_name", "surname", "full_name", "birthdate",
                       "postal_code", "address", "city", "country", "gender", "id", "text"]
# Values a household (or an office) shares: on their own they never make two records one person.
HOUSEHOLD_ROLES = frozenset({"email", "phone", "surname", "postal_code", "address", "city",
                             "country", "gender"})
# Values that tell the people of a household apart.
PERSON_ROLES = frozenset({"given_name", "full_name", "birthdate", "id"})
Column = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class IdentitySource(Model):
    key: Column | list[Column] = Field(description="The domain table's key column(s): each "
                                       "record is (table, key) in the map.")
    columns: dict[Name, Column] = Field(
        default_factory=dict, description="Identity field → this table's column, where the "
        "names differ; default the field's own name.")
    absent: list[Name] = Field(default_factory=list, description="Fields this table does not "
                               "hold: NULL for its records.")
    updated_at: Column | None = Field(None, description="A timestamp column: the record's "
                                      "recency for `most_recent` survivorship.")


class ExactRule(Model):
    name: Name
    columns: list[Name] = Field(min_length=1, description="Fields that must all be equal and "
                                "not null; a pair matched by it is explained by `name`.")


class SplinkTraining(Model):
    method: Literal["em", "given"] = Field(
        default="em", description="em: m and u estimated from the data (u by random sampling, "
        "m by expectation maximisation); given: read a splink model (`model_file`).")
    model_file: str | None = Field(
        default=None, description="given: a splink model JSON "
        "(linker.misc.save_model_to_json), relative to the spec.")
    em_blocking_rules: list[list[Name]] = Field(
        default_factory=list, description="One EM pass per rule; default the blocking rules.")
    recall: float = Field(
        default=0.8, gt=0, le=1, description="Estimated recall of the exact rules, for the "
        "prior probability that two records match.")
    max_pairs: int = Field(default=1_000_000, ge=1000, le=100_000_000,
                           description="Random pairs for estimating u.")
    seed: int = Field(default=42, description="Sampling seed: the same data gives the same model.")


class Probabilistic(Model):
    blocking_rules: list[list[Name]] = Field(
        min_length=1, description="Pairs compared: those equal on all fields of one rule.")
    threshold: float = Field(0.95, gt=0, lt=1, description="Match probability at which a "
                             "scored pair merges.")
    review_floor: float = Field(0.5, ge=0, lt=1, description="Scored pairs at or above this "
                                "probability may be sampled into the review pairs.")
    training: SplinkTraining = Field(default_factory=SplinkTraining)


SurvivorshipRule = Literal["most_recent", "most_frequent", "first_non_null", "preferred_source"]


class Survivorship(Model):
    rule: SurvivorshipRule = "most_recent"
    sources: list[Name] = Field(default_factory=list, description="preferred_source, "
                                "first_non_null: the sources in order of preference.")


class IdentityChecks(Model):
    max_cluster_size: int = Field(
        default=50, ge=2, description="The check `max_cluster_size` fails when a customer "
        "gathers more source records than this.")
    min_stability: Percent = Field(
        default="99%", description="The check `id_stability` fails when fewer records than "
        "this keep their customer id from the previous run.")
    blocking: bool = Field(default=False, description="A failed check stops the steps downstream.")


class IdentityResolution(Model):
    """One customer across sources: exact rules, then splink, then stable ids."""

    description: str | None = None
    owners: list[Owner] | None = None
    sources: dict[Name, IdentitySource] = Field(min_length=1, description="Domain tables.")
    fields: dict[Name, IdentityRole] = Field(min_length=1, description="The standardised "
                                             "fields compared, each with its role.")
    exact_rules: list[ExactRule] = Field(default_factory=list)
    probabilistic: Probabilistic | None = None
    survivorship: dict[Name, SurvivorshipRule | Survivorship] = Field(
        default_factory=dict, description="Per field; default most_recent.")
    id_prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")] = Field(
        "SC", description="Customer ids are the prefix and a 10-digit sequence number.")
    review_pairs: int = Field(1000, ge=0, le=100_000, description="Pairs of each layer "
                              "sampled into identity.<name>_pairs.")
    checks: IdentityChecks = Field(default_factory=IdentityChecks)

    @model_validator(mode="after")
    def _rules_or_splink(self) -> Self:
        if not self.exact_rules and self.probabilistic is None:
            raise ValueError("give `exact_rules`, `probabilistic` or both: nothing would match")
        return self

    def survivorship_of(self, field: str) -> Survivorship:
        rule = self.survivorship.get(field, "most_recent")
        return Survivorship(rule=rule) if isinstance(rule, str) else rule

    def source_column(self, source: str, field: str) -> str | None:
        """The column holding `field` in `source` (None: the source lacks it)."""
        item = self.sources[source]
        if field in item.absent:
            return None
        return item.columns.get(field, field)
