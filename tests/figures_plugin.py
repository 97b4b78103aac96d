"""The suite's figures: what the tests counted, printed and written to JSON after every run.

Tests count into named groups (`group("server")`, `group("operator")`) with `record`,
`add` or `FIGURES[name] += n`; only what they counted is written. At the end of each run
the figures are printed and written, with the date, the commit tested, which tests ran and
the tiers (`--slow`), to `.cache/figures/last-run.json` (or `$VOICEFLEET_FIGURES`).
`make figures` (scripts/figures.py) turns the last full run into README's and the docs'
tables; a run that was not the whole default suite says why in `partial_because`, and
`make figures` refuses it. Registered by tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

SCHEMA = "voicefleet-figures/1"
DEFAULT_PATH = Path(".cache/figures/last-run.json")  # under the rootdir; git-ignored
# Options that add a tier of tests to the default suite (tests/conftest.py): a run with them
# still ran every default test, and its figures say which tiers it ran.
TIER_FLAGS = ("--slow", "--e2e")


class Figures(dict[str, Any]):
    """One group's figures. A missing name reads as 0, so `FIGURES[name] += n` counts."""

    def __missing__(self, name: str) -> int:
        return 0

    def record(self, name: str, value: Any) -> None:
        """Set a figure (a number, or a short dict or list of numbers and words)."""
        self[name] = value

    def add(self, name: str, amount: int = 1) -> None:
        """Add to a counting figure (requests lost, bad inputs handled...)."""
        self[name] = int(self[name]) + amount


_GROUPS: dict[str, Figures] = {}


def group(name: str) -> Figures:
    """The figures of one part of the suite; the same object for every caller."""
    return _GROUPS.setdefault(name, Figures())


def git_commit(root: Path) -> str:
    """HEAD's hash, "+dirty" when tracked files differ from it (as `git describe --dirty`:
    untracked files do not count); "unknown" outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if status.strip() else "")


def outcome_of(reports: list[pytest.TestReport]) -> str:
    """One test's outcome from its setup/call/teardown reports, as pytest's summary counts it."""
    for report in reports:
        if report.failed:
            return "failed" if report.when == "call" else "error"
    for report in reports:
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        if report.skipped:
            return "skipped"
    return "passed"


def partial_because(
    *,
    args_are_default: bool,
    narrowing_options: list[str],
    deselected: int,
    collected: int,
    ran: int,
    exitstatus: int,
) -> list[str]:
    """Why a run was not the whole default suite (empty when it was)."""
    reasons = []
    if not args_are_default:
        reasons.append("test paths were given on the command line")
    reasons += narrowing_options
    if deselected:
        reasons.append(f"{deselected} tests deselected (-k, -m, --deselect, --lf)")
    if collected == 0:
        reasons.append("no tests collected")
    if ran < collected:
        reasons.append(f"{collected - ran} of {collected} collected tests did not run")
    if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR,
                      pytest.ExitCode.USAGE_ERROR):
        reasons.append(f"the run ended with {pytest.ExitCode(exitstatus).name}")
    return reasons


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"figure value {value!r} is not JSON")


class FiguresPlugin:
    """Resets the groups at the start of a session, follows which tests run, writes the JSON
    and prints the figures at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.root = Path(config.rootpath)
        self.commit = "unknown"
        self.started = ""
        self.collected = 0
        self.deselected = 0
        self.reports: dict[str, list[pytest.TestReport]] = {}
        self.written: Path | None = None
        self.reasons: list[str] = []

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        for figures in _GROUPS.values():
            figures.clear()
        self.commit = git_commit(self.root)  # what is tested is the tree at the start
        self.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = len(session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.setdefault(report.nodeid, []).append(report)

    def _args_are_default(self) -> bool:
        config = self.config
        if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
            return True
        testpaths = config.getini("testpaths") or ["."]
        given = {(config.invocation_params.dir / arg).resolve() for arg in config.args}
        return given == {(self.root / path).resolve() for path in testpaths}

    def _narrowing_options(self) -> list[str]:
        option = self.config.option
        found = []
        for name, flag in (("keyword", "-k"), ("markexpr", "-m")):
            if getattr(option, name, ""):
                found.append(f"{flag} {getattr(option, name)!r}")
        for name, flag in (("ignore", "--ignore"), ("ignore_glob", "--ignore-glob"),
                           ("deselect", "--deselect")):
            if getattr(option, name, None):
                found.append(f"{flag} given")
        for name, flag in (("lf", "--lf"), ("stepwise", "--sw"), ("collectonly", "--co")):
            if getattr(option, name, False):
                found.append(f"{flag} given")
        return found

    def _tiers(self) -> list[str]:
        flags = [flag for flag in TIER_FLAGS if self.config.getoption(flag, default=False)]
        return ["default", *(flag.removeprefix("--") for flag in flags)]

    def summary(self, exitstatus: int) -> dict[str, Any]:
        outcomes = {nodeid: outcome_of(reports) for nodeid, reports in self.reports.items()}
        by_file: dict[str, Counter[str]] = {}
        for nodeid, outcome in outcomes.items():
            by_file.setdefault(nodeid.split("::", 1)[0], Counter())[outcome] += 1
        self.reasons = partial_because(
            args_are_default=self._args_are_default(),
            narrowing_options=self._narrowing_options(),
            deselected=self.deselected,
            collected=self.collected,
            ran=len(outcomes),
            exitstatus=exitstatus,
        )
        return {
            "schema": SCHEMA,
            "date": self.started,
            "commit": self.commit,
            "command": ["pytest", *self.config.invocation_params.args],
            "machine": {
                "cpus": os.cpu_count(),
                "system": f"{platform.system()} {platform.machine()}",
                "python": platform.python_version(),
            },
            "full_default_suite": not self.reasons,
            "tiers": self._tiers(),
            "partial_because": self.reasons,
            "tests": {
                "collected": self.collected,
                "deselected": self.deselected,
                "outcomes": dict(sorted(Counter(outcomes.values()).items())),
                "by_file": {path: dict(sorted(c.items())) for path, c in sorted(by_file.items())},
                "not_passed": {
                    nodeid: outcome for nodeid, outcome in sorted(outcomes.items())
                    if outcome not in ("passed", "skipped")
                },
            },
            "figures": {
                name: dict(sorted(figures.items()))
                for name, figures in sorted(_GROUPS.items()) if figures
            },
        }

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: the controller writes
            return
        path = Path(os.environ.get("VOICEFLEET_FIGURES") or self.root / DEFAULT_PATH)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.summary(int(exitstatus)), indent=2, default=_jsonable) + "\n"
        path.write_text(text, encoding="utf-8")
        self.written = path

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for name, figures in sorted(_GROUPS.items()):
            if figures:
                terminalreporter.section(f"voicefleet {name} figures")
                for key in sorted(figures):
                    terminalreporter.write_line(
                        f"{key}: {json.dumps(figures[key], default=_jsonable)}")
        if self.written is not None:
            run = "full default suite" if not self.reasons else "partial run: " + "; ".join(
                self.reasons)
            terminalreporter.write_line(f"figures written to {self.written} ({run})")


def register(config: pytest.Config) -> None:
    """Called from tests/conftest.py's pytest_configure."""
    config.pluginmanager.register(FiguresPlugin(config), "voicefleet-figures")
