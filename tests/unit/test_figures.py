"""`make figures` (scripts/figures.py) and the figures plugin (tests/figures_plugin.py):
README's and the docs' figure tables are what the committed JSON renders, the benchmark
snapshot matches bench/results, the render functions say what was counted, and the plugin
writes what the tests counted and tells a partial run from the full suite."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("figures_script", ROOT / "scripts" / "figures.py")
assert _spec is not None and _spec.loader is not None
figures = importlib.util.module_from_spec(_spec)
sys.modules["figures_script"] = figures  # dataclasses look their module up while defining
_spec.loader.exec_module(figures)

X = figures.TIMES
REMAKE = "the tables are stale or typed by hand: run `make figures` (see README, Development)"


def committed(name: Path) -> Any:
    return json.loads((ROOT / name).read_text(encoding="utf-8"))


# ---- the committed tables ------------------------------------------------------------


def test_generated_tables_are_what_the_committed_figures_render() -> None:
    run, bench = committed(figures.RELIABILITY_JSON), committed(figures.BENCH_JSON)
    for document, bodies in figures.sections(run, bench).items():
        text = (ROOT / document).read_text(encoding="utf-8")
        for marker, body in bodies.items():
            assert figures.section(text, marker) == body, f"{document} [{marker}]: {REMAKE}"


def test_the_benchmark_snapshot_matches_bench_results() -> None:
    snapshot = committed(figures.BENCH_JSON)["figures"]
    now = figures.bench_values(figures.BENCH_FIGURES, lambda source: committed(Path(source)))
    assert {key: entry["value"] for key, entry in snapshot.items()} == now, (
        "bench/results changed since the snapshot: run `make figures-bench`")


# ---- render functions ----------------------------------------------------------------


def a_run(**changes: Any) -> dict[str, Any]:
    """A full run as the plugin writes it, with the figures the tests count."""
    run: dict[str, Any] = {
        "schema": "voicefleet-figures/1",
        "date": "2026-11-22T05:06:07+00:00",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "command": ["pytest"],
        "machine": {"cpus": 2, "system": "Linux x86_64", "python": "3.11.7"},
        "full_default_suite": True,
        "partial_because": [],
        "tests": {"collected": 12, "deselected": 0, "outcomes": {"passed": 10, "skipped": 2},
                  "by_file": {}, "not_passed": {}},
        "figures": {
            "server": {
                "fuzz": {"cases": 430, "operations": 14, "statuses": {"200": 5, "400": 425}},
                "fuzz_speech": {"cases": 80, "statuses": {"200": 54, "400": 25, "500": 1}},
                "bad_inputs_tried": 29,
                "overload": {"sustainable_rps": 3.3, "offered_rps": 33.0, "overload_ratio": 10,
                             "bursts": 3, "statuses": {"200": 33, "429": 219},
                             "admitted_p95_s": 2.4, "rss_mib_after_each_burst": [628.2, 640.4]},
                "faults_injected": 4,
                "faults_survived": 3,
                "requests_lost": 0,
            },
            "operator": {
                "chaos scenarios run": 8,
                "chaos scenarios survived": 8,
                "chaos scenarios survived (which)": ["a | b", "c"],
                "API errors injected": 25,
                "API errors retried to success": 24,
                "duplicate children found": 0,
                "orphans left after VoiceService deletion": 0,
                figures.GUARD_VIOLATIONS: 0,
                "guard timeline rounds checked (pure decision)": 18000,
                "guard restarts in those timelines": 2358,
                "guard evictions while metrics were unreachable": 0,
                figures.GUARD_UNREADABLE: 15,
            },
        },
    }
    run.update(changes)
    return run


def rows(markdown: str) -> dict[str, str]:
    """A rendered two-column table as {label: value} (labels keep their escapes)."""
    found = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| figure |"):
            label, value = line[2:-2].split(" | ", 1)
            found[label] = value
    return found


def row(markdown: str, start: str) -> str:
    (value,) = [v for label, v in rows(markdown).items() if label.startswith(start)]
    return value


def test_the_reliability_table_says_what_the_run_counted() -> None:
    table = figures.render_reliability(a_run())
    assert row(table, "fuzz cases") == (
        "510 (430 from the schema, 80 speech requests); 1 answered 5xx")
    assert row(table, "bad inputs") == "29"
    assert row(table, "overload").startswith(
        f"10{X} the measured sustainable rate (3.3 → 33 req/s, 3 bursts): 33 {X} 200, 219 {X} 429; "
        "p95 of admitted requests 2.4 s; resident memory 628.2 → 640.4 MiB")
    assert row(table, "faults survived") == "3 of 4 injected"
    assert row(table, "operator chaos") == (
        "8 of 8 survived; 24 of 25 injected API errors retried to success; "
        "0 duplicate children; 0 orphans")
    assert row(table, "memory guard") == (
        "0 promise violations over 18,000 random rounds (2,358 restarts); "
        "0 evictions over 15 unreadable metrics reads")
    assert row(table, "requests that got no answer") == "0"


def test_without_the_soak_the_overload_row_shows_the_quick_check() -> None:
    run = a_run()
    del run["figures"]["server"]["overload"]
    assert row(figures.render_reliability(run), "overload") == figures.NOT_COUNTED
    run["figures"]["server"]["overload_quick"] = {
        "requests": 24, "max_queue": 8, "statuses": {"200": 9, "429": 15}}
    assert row(figures.render_reliability(run), "overload").startswith(
        f"24 requests at once against a queue of 8: 9 {X} 200, 15 {X} 429 (the soak")


def test_a_count_added_only_on_success_reads_zero_when_every_case_failed() -> None:
    run = a_run()
    del run["figures"]["server"]["faults_survived"]
    del run["figures"]["operator"]["chaos scenarios survived"]
    table = figures.render_reliability(run)
    assert row(table, "faults survived") == "0 of 4 injected"
    assert row(table, "operator chaos").startswith("0 of 8 survived")


def test_a_figure_the_run_did_not_count_is_said_so_never_filled_in() -> None:
    run = a_run()
    del run["figures"]["operator"]
    del run["figures"]["server"]["faults_injected"]
    table = figures.render_reliability(run)
    for start in ("faults survived", "operator chaos", "memory guard"):
        assert row(table, start) == figures.NOT_COUNTED
    assert row(table, "bad inputs") == "29"


def test_the_stamp_names_date_commit_machine_and_what_did_not_pass() -> None:
    run = a_run(commit="0123456789abcdef+dirty")
    run["tests"]["outcomes"] = {"failed": 1, "passed": 9}
    run["tests"]["not_passed"] = {"tests/server/test_x.py::test_y": "failed"}
    stamp = figures.render_reliability(run).splitlines()[0]
    assert stamp == (
        "Measured 2026-11-22 at `0123456+dirty` by the full default test suite on a 2-CPU "
        "Linux x86_64 machine (1 failed, 9 passed; not passed: `tests/server/test_x.py::test_y`)."
    )


def test_a_partial_run_is_stamped_as_one() -> None:
    run = a_run(full_default_suite=False, partial_because=["-k 'speech'"])
    assert "by a partial run of the test suite (-k 'speech') on a" in figures.run_stamp(run)
    slow = a_run(tiers=["default", "slow"])
    assert "by the full default test suite with --slow on a" in figures.run_stamp(slow)


def test_the_detailed_tables_list_every_figure_of_their_group() -> None:
    table = figures.render_group(a_run(), "operator")
    listed = rows(table)
    assert len(listed) == len(a_run()["figures"]["operator"])
    assert listed["chaos scenarios survived (which)"] == "a \\| b; c"  # a cell never splits
    assert listed["guard timeline rounds checked (pure decision)"] == "18,000"
    assert rows(figures.render_group(a_run(), "server"))["fuzz_speech"] == (
        "cases: 80, statuses: (200: 54, 400: 25, 500: 1)")
    assert rows(figures.render_group(a_run(figures={}), "server")) == {"—": figures.NOT_COUNTED}


@pytest.mark.parametrize(
    ("value", "text"),
    [(18000, "18,000"), (2.4, "2.4"), (33.0, "33"), (0.125, "0.125"), (554.5, "554.5"),
     (1485.6, "1,486"), (123456.7, "123,457"),
     (None, "—"), (True, "yes")],
)
def test_numbers_read_as_a_reader_wants_them(value: Any, text: str) -> None:
    assert figures.num(value) == text


def test_a_partial_run_is_refused_with_the_reason() -> None:
    partial = a_run(full_default_suite=False, partial_because=["-k 'speech'"])
    with pytest.raises(figures.FiguresError, match=r"(?s)partial run.*-k 'speech'.*make test"):
        figures.check_full_run(partial, "last-run.json")
    with pytest.raises(figures.FiguresError, match="schema"):
        figures.check_full_run(a_run(schema="other"), "last-run.json")
    figures.check_full_run(a_run(), "last-run.json")


def test_a_section_is_replaced_between_its_markers_only() -> None:
    text = "intro 1.0\n<!-- figures:x -->\nold 2.0\n<!-- /figures:x -->\noutro 3.0\n"
    new = figures.replace_section(text, "x", "| new |")
    assert new == "intro 1.0\n<!-- figures:x -->\n| new |\n<!-- /figures:x -->\noutro 3.0\n"
    assert figures.section(new, "x") == "| new |"
    assert figures.replace_section(new, "x", "| new |") == new
    with pytest.raises(ValueError, match="figures:y"):
        figures.replace_section(text, "y", "body")


def test_bench_figures_are_read_from_their_json() -> None:
    results = {"tables": {"spike": [{"name": "CPU utilisation (target 36 %)", "slo_share": 0.5},
                                    {"name": "GPU utilisation", "slo_share": 0.4}]}}
    path = ("tables", "spike", figures.Named("CPU"), "slo_share")
    assert figures.extract(results, path) == 0.5
    spec = [figures.BenchFigure("k", "label", "r.json", path, figures.percent)]
    assert figures.bench_values(spec, lambda source: results) == {"k": 0.5}
    moved = [figures.BenchFigure("k", "label", "r.json", ("tables", "steady"), figures.percent)]
    with pytest.raises(figures.FiguresError, match=r"r\.json: no k"):
        figures.bench_values(moved, lambda source: results)
    snapshot = {"figures": {"k": {"value": 0.5, "date": "2026-11-22", "commit": "94c808a"}}}
    assert rows(figures.render_bench(snapshot, spec)) == {
        "label": "50.0 % | 2026-11-22 at `94c808a`"}


# ---- the plugin ----------------------------------------------------------------------

SUITE = {
    "conftest.py": """
        import figures_plugin

        def pytest_configure(config):
            figures_plugin.register(config)
    """,
    "test_demo.py": """
        import pytest
        from figures_plugin import group

        FIGURES = group("demo")

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_counts(n):
            FIGURES["cases"] += n

        def test_counted_before_it_fails():
            FIGURES.add("tried")
            assert False

        def test_records():
            FIGURES.record("shape", {"a": 1})

        def test_uncounted():
            pass
    """,
}


def run_suite(tmp_path: Path, *args: str) -> dict[str, Any]:
    for name, text in SUITE.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = .\n")
    env = {key: value for key, value in os.environ.items() if key != "VOICEFLEET_FIGURES"}
    env["PYTHONPATH"] = str(ROOT / "tests")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the plugin alone: starts in a second
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                   cwd=tmp_path, env=env, capture_output=True, timeout=120)
    result: dict[str, Any] = json.loads(
        (tmp_path / ".cache/figures/last-run.json").read_text(encoding="utf-8"))
    return result


def test_the_plugin_writes_what_the_tests_counted_and_which_tests_ran(tmp_path: Path) -> None:
    run = run_suite(tmp_path)
    assert run["figures"] == {"demo": {"cases": 6, "shape": {"a": 1}, "tried": 1}}
    assert run["full_default_suite"] is True and run["partial_because"] == []
    assert run["tiers"] == ["default"]
    assert run["tests"]["outcomes"] == {"failed": 1, "passed": 5}
    assert run["tests"]["not_passed"] == {"test_demo.py::test_counted_before_it_fails": "failed"}
    assert run["commit"] == "unknown"  # no git checkout here
    assert run["date"][:2] == "20"


def test_the_plugin_marks_a_narrowed_run_partial(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-k", "counts")
    assert run["full_default_suite"] is False
    assert run["figures"] == {"demo": {"cases": 6}}
    assert any("-k 'counts'" in reason for reason in run["partial_because"])
    assert any("3 tests deselected" in reason for reason in run["partial_because"])
    run = run_suite(tmp_path, "-x")
    assert any("did not run" in reason for reason in run["partial_because"])
    run = run_suite(tmp_path, "test_demo.py")
    assert run["partial_because"] == ["test paths were given on the command line"]


def test_the_commit_is_heads_and_dirty_when_tracked_files_changed(tmp_path: Path) -> None:
    from figures_plugin import git_commit

    assert git_commit(tmp_path) == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "a.txt").write_text("1")
    for args in (["init", "-q"], ["add", "a.txt"], ["commit", "-qm", "a"]):
        subprocess.run([*git, *args], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("new")
    assert git_commit(tmp_path) == head  # untracked files do not count, as git describe
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path) == head + "+dirty"
