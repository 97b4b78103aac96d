"""Figures the server's hardening tests count: the `server` group of the suite's figures
plugin (tests/figures_plugin.py), which prints them at the end of every run and writes them
to `.cache/figures/last-run.json` (or `$VOICEFLEET_FIGURES`) for `make figures`.

Tests call `record(name, value)` to set a figure and `add(name, n)` to count: how many fuzz
cases, bad inputs, faults and overload requests the server went through, and how many
requests got no answer.
"""

from __future__ import annotations

from figures_plugin import group

FIGURES = group("server")
record = FIGURES.record
add = FIGURES.add
