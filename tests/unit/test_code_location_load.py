"""What the code server loads (`load_code_location`): the same graph as `build_definitions`,
resolved while the garbage collector is paused, what it built then frozen out of the
collector's passes; the collector is on again afterwards, and a process that loads twice does
not keep the first load's objects frozen."""

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.definitions import build_definitions, load_code_location

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process as it was: nothing frozen, the collector on."""
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_the_code_location_is_the_built_graph_resolved_and_frozen(unfrozen: None) -> None:
    loaded = load_code_location(ROOT / "workflows")
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    built = build_definitions(ROOT / "workflows")
    assert sorted(loaded.resolve_all_asset_keys()) == sorted(built.resolve_all_asset_keys())
    assert sorted(j.name for j in loaded.resolve_all_job_defs()) == sorted(
        j.name for j in built.resolve_all_job_defs())


class _Cycle:
    """An object that refers to itself: only the collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_loading_again_frees_what_the_first_load_froze(unfrozen: None) -> None:
    garbage = _Cycle()
    probe = weakref.ref(garbage)
    load_code_location(ROOT / "workflows")  # freezes everything alive, `garbage` included
    del garbage
    gc.collect()
    assert probe() is not None  # frozen: a collection does not see it
    load_code_location(ROOT / "workflows")  # unfreezes and collects before it builds
    assert probe() is None
