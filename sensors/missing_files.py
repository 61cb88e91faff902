"""Which of a courier group's files are there: one listing per directory, whatever the number of
couriers, and the three Amperity policies for the ones that are not (notify and continue,
notify and stop, wait for missing files)."""

import bisect
import fnmatch
import posixpath
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from assets import spec
from assets.names import connection_key
from assets.templating import date_context, render_text
from resources.connections.files import RemoteFile, is_partial, split_pattern
from resources.connections.retry import single_attempt

LISTING_BUDGET_SECONDS = 40  # of one tick's listings: Dagster times a tick out at 60 s
WILDCARDS = "*?["  # fnmatch's special characters


@dataclass(frozen=True)
class ExpectedFile:
    """A file a group expects for a day: which courier, on which connection, what pattern."""

    courier: str
    connection: str
    pattern: str  # rendered for the day, relative to the connection's base

    @property
    def folder(self) -> str:
        return split_pattern(self.pattern)[0]


def expected_files(workflow: spec.Workflow, couriers: list[str], day: date
                   ) -> list[ExpectedFile]:
    """The file patterns of the group's file couriers for `day` (SQL couriers have no file)."""
    values = {**date_context(day, workflow.workflow.params), "workflow": workflow.workflow.name}
    expected = []
    for name in couriers:
        courier = workflow.couriers[name]
        if courier.path is not None:
            expected.append(ExpectedFile(name, courier.from_, render_text(courier.path, values)))
    return expected


class _Listing:
    """One directory's files, indexed by name so that matching 1,000 couriers' patterns against
    10,000 files costs a lookup (a plain name) or a slice of the sorted names (a glob: only the
    names sharing its literal prefix are tried), not 10 million comparisons."""

    def __init__(self, files: list[RemoteFile]):
        self.by_name: dict[str, list[RemoteFile]] = defaultdict(list)
        for item in files:
            name = posixpath.basename(item.path)
            if not is_partial(name):
                self.by_name[name].append(item)
        self.names = sorted(self.by_name)

    def matching(self, glob: str) -> list[RemoteFile]:
        wildcard = next((i for i, ch in enumerate(glob) if ch in WILDCARDS), None)
        if wildcard is None:
            return list(self.by_name.get(glob, ()))
        prefix, found = glob[:wildcard], []
        for name in self.names[bisect.bisect_left(self.names, prefix):]:
            if not name.startswith(prefix):
                break
            if fnmatch.fnmatchcase(name, glob):
                found += self.by_name[name]
        return found


def look(workflow: spec.Workflow, expected: list[ExpectedFile], resources: Any,
         budget_seconds: float = LISTING_BUDGET_SECONDS) -> dict[str, list[RemoteFile]]:
    """Courier name → the files matching its pattern, listing each directory of each connection
    once (a tick over 1,000 couriers in one folder is one listing).

    Listings that together pass `budget_seconds` stop the look with TimeoutError: Dagster ends
    a tick at 60 s, and a folder not listed must not be reported as missing files."""
    by_folder: dict[tuple[str, str], list[ExpectedFile]] = defaultdict(list)
    for item in expected:
        by_folder[(item.connection, item.folder)].append(item)
    found: dict[str, list[RemoteFile]] = {item.courier: [] for item in expected}
    started = time.monotonic()
    for done, ((connection, folder), items) in enumerate(by_folder.items()):
        if (spent := time.monotonic() - started) > budget_seconds:
            raise TimeoutError(f"listing {done} of {len(by_folder)} folders took {spent:.0f} s "
                               f"(the budget is {budget_seconds:.0f} s, within Dagster's 60 s "
                               "per tick); the rest were not listed, so no file is reported "
                               "missing: the next tick looks again")
        resource = getattr(resources, connection_key(workflow.workflow.name, connection))
        with single_attempt():  # the next tick is the retry
            listing = _Listing(resource.list_files(posixpath.join(folder, "*")))
        for item in items:
            found[item.courier] += listing.matching(split_pattern(item.pattern)[1])
    return found


def describe_missing(expected: list[ExpectedFile], found: dict[str, list[RemoteFile]]
                     ) -> list[str]:
    """`courier: connection/pattern` for each courier that found nothing."""
    return [f"{e.courier}: {e.connection}/{e.pattern}" for e in expected if not found[e.courier]]
