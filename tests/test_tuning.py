"""Process-level tuning: start-up objects leave the garbage collector's full passes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from processor.app.tuning import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Whatever a test freezes is handed back to the collector afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_start_up_are_frozen_and_later_ones_are_not() -> None:
    """Everything alive when the service has started moves to the permanent generation
    (no full collection visits it again); objects made afterwards stay collectable."""
    before = [object() for _ in range(3)] + [[] for _ in range(1000)]
    frozen = freeze_startup_objects()
    assert frozen == gc.get_freeze_count() >= len(before)
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in tracked for o in before if gc.is_tracked(o))
    after: list[list[int]] = [[] for _ in range(10)]
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in tracked for o in after)
