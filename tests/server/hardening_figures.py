"""Figures the hardening tests measure, printed at the end of the session.

Tests call `record(...)`; `pytest_terminal_summary` (imported by tests/server/conftest.py)
prints them whatever `-s`/`-q` say, so every run states how many fuzz cases, bad inputs,
faults and overload requests it put the server through, and how many requests were lost.
Figures are also written to `$VOICEFLEET_FIGURES` (JSON) when that variable is set.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

FIGURES: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    """Set a figure (a number, or a short dict of numbers)."""
    FIGURES[name] = value


def add(name: str, amount: int = 1) -> None:
    """Add to a counting figure (requests lost, bad inputs tried...)."""
    FIGURES[name] = int(FIGURES.get(name, 0)) + amount


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("voicefleet reliability figures")
    for name in sorted(FIGURES):
        terminalreporter.write_line(f"{name}: {json.dumps(FIGURES[name])}")
    path = os.environ.get("VOICEFLEET_FIGURES")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(FIGURES, out, indent=2, sort_keys=True)
