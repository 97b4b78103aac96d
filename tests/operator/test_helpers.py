"""The polling helpers every operator scenario leans on: a check that never holds must fail."""

from __future__ import annotations

import pytest
from operator_helpers import TimedOut, eventually, settles

pytestmark = pytest.mark.timeout(10)


async def test_eventually_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def check() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await eventually(check, timeout=2, interval=0.001) == 3


async def test_eventually_raises_with_what_it_last_saw() -> None:
    with pytest.raises(TimedOut, match=r"last returned \[\]"):
        await eventually(lambda: [], timeout=0.05, interval=0.01)
    with pytest.raises(TimedOut, match="last returned False"):
        await eventually(lambda: False, timeout=0.05, interval=0.01)


async def test_eventually_raises_naming_the_last_exception() -> None:
    def missing() -> object:
        return {}["tts"]

    with pytest.raises(TimedOut, match="raised KeyError: 'tts'"):
        await eventually(missing, timeout=0.05, interval=0.01)


async def test_settles_answers_instead_of_raising() -> None:
    assert await settles(lambda: True, timeout=0.05) is True
    assert await settles(lambda: False, timeout=0.05, interval=0.01) is False
