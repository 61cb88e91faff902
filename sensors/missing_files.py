"""Which of a courier group's files are there: one listing per directory, whatever the number of
couriers, and the three Amperity policies for the ones that are not (notify and continue,
notify and stop, wait for missing files)."""

from __future__ import annotations

import fnmatch
import posixpath
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from assets import spec
from assets.common import connection_key
from assets.templating import date_context, render_text
from resources.files import RemoteFile, is_partial, split_pattern


@dataclass(frozen=True)
class ExpectedFile:
    courier: str
    connection: str
    pattern: str  # rendered for the day, relative to the connection's base

    @property
    def folder(self) -> str:
        return split_pattern(self.pattern)[0]


def expected_files(workflow: spec.Workflow, couriers: list[str], day: date
                   ) -> list[ExpectedFile]:
    """The file patterns of the group's file couriers for `day` (SQL couriers have no file)."""
    values = date_context(day, workflow.workflow.params)
    expected = []
    for name in couriers:
        courier = workflow.couriers[name]
        if courier.path is not None:
            expected.append(ExpectedFile(name, courier.from_, render_text(courier.path, values)))
    return expected


def look(workflow: spec.Workflow, expected: list[ExpectedFile], resources: Any
         ) -> dict[str, list[RemoteFile]]:
    """Courier name → the files matching its pattern, listing each directory of each connection
    once (a tick over 1,000 couriers in one folder is one listing)."""
    by_folder: dict[tuple[str, str], list[ExpectedFile]] = defaultdict(list)
    for item in expected:
        by_folder[(item.connection, item.folder)].append(item)
    found: dict[str, list[RemoteFile]] = {item.courier: [] for item in expected}
    for (connection, folder), items in by_folder.items():
        resource = getattr(resources, connection_key(workflow.workflow.name, connection))
        listing = resource.list_files(posixpath.join(folder, "*"))
        for item in items:
            glob = split_pattern(item.pattern)[1]
            found[item.courier] += [f for f in listing
                                    if fnmatch.fnmatchcase(posixpath.basename(f.path), glob)
                                    and not is_partial(f.path)]
    return found


def describe_missing(expected: list[ExpectedFile], found: dict[str, list[RemoteFile]]
                     ) -> list[str]:
    """`courier: connection/pattern` for each courier that found nothing."""
    return [f"{e.courier}: {e.connection}/{e.pattern}" for e in expected if not found[e.courier]]
