"""Start-up pauses the garbage collector and always resumes it: a serving process whose
collector stayed off would grow without bound on cyclic garbage."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from voicefleet_server import coldstart


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_pause_then_resume_freezes_the_survivors_and_collects_again() -> None:
    gc.unfreeze()
    coldstart.pause_collector()
    assert not gc.isenabled()
    kept = [[] for _ in range(1000)]
    coldstart.resume_collector()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)


def test_resume_without_a_pause_leaves_the_collector_as_it_was() -> None:
    gc.unfreeze()
    gc.disable()  # an embedding application's own choice
    coldstart.resume_collector()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
