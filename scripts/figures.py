#!/usr/bin/env python3
"""`make figures`: README's and the docs' figure tables, generated from measurements.

Reliability figures come from the last full run of the default test suite, as written by
the figures plugin (tests/figures_plugin.py) to `.cache/figures/last-run.json`; they are
copied to docs/figures/reliability.json. Benchmark figures come from bench/results/*.json
(the keys in BENCH_FIGURES), snapshotted with where and when they were measured into
docs/figures/bench.json. The tables between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->` markers are then rewritten from those two committed files;
tests/unit/test_figures.py fails when a table differs from what they render.

Everything above `main` is pure: JSON in, Markdown out. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAST_RUN = Path(".cache/figures/last-run.json")
RELIABILITY_JSON = Path("docs/figures/reliability.json")
BENCH_JSON = Path("docs/figures/bench.json")
RUN_SCHEMA = "voicefleet-figures/1"
BENCH_SCHEMA = "voicefleet-bench-figures/1"
NOT_COUNTED = "not counted in this run"
TIMES = "\N{MULTIPLICATION SIGN}"  # as in "10 times the rate", "33 times a 200"


class FiguresError(Exception):
    """A reason `make figures` refuses to write anything."""


class Missing(KeyError):
    """A figure a row needs was not counted by the run."""


# ---- formatting ----------------------------------------------------------------------


def num(value: Any) -> str:
    """A figure as a reader wants it: 18,000; 2.4; 0.125."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "—"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 10_000 else f"{value:,.0f}"
    return str(value)


def value_text(value: Any, nested: bool = False) -> str:
    """Any recorded figure (number, list, dict) as one table cell; nested ones in brackets."""
    if isinstance(value, Mapping):
        text = ", ".join(f"{key}: {value_text(item, True)}" for key, item in value.items())
    elif isinstance(value, list):
        joiner = "; " if any(isinstance(item, str) for item in value) else ", "
        text = joiner.join(value_text(item, True) for item in value)
    else:
        return num(value)
    return f"({text})" if nested else text


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]
    return "\n".join(lines)


def short_commit(commit: str) -> str:
    """abc1234, abc1234+dirty, or "unknown"."""
    head, plus, rest = commit.partition("+")
    return commit if head == "unknown" else head[:7] + plus + rest


# ---- the last run --------------------------------------------------------------------


def check_full_run(run: Mapping[str, Any], source: str) -> None:
    """Refuse a run that is not the whole default suite, with what to do instead."""
    if run.get("schema") != RUN_SCHEMA:
        raise FiguresError(f"{source}: not a figures file of schema {RUN_SCHEMA}")
    if not run.get("full_default_suite"):
        reasons = "; ".join(run.get("partial_because") or ["unknown"])
        raise FiguresError(
            f"{source} is from a partial run ({run.get('date')}, "
            f"`{' '.join(run.get('command') or [])}`): "
            f"{reasons}.\nREADME's figures come from the whole default suite: run "
            "`make test` (or `.venv/bin/pytest` with no arguments), then `make figures`."
        )


def outcomes_text(run: Mapping[str, Any]) -> str:
    tests = run["tests"]
    counts = ", ".join(f"{num(n)} {outcome}" for outcome, n in tests["outcomes"].items())
    not_passed = tests.get("not_passed") or {}
    if not_passed:
        counts += "; not passed: " + ", ".join(f"`{nodeid}`" for nodeid in not_passed)
    return counts


def run_stamp(run: Mapping[str, Any]) -> str:
    machine = run.get("machine") or {}
    where = (
        f" on a {machine['cpus']}-CPU {machine['system']} machine"
        if machine.get("cpus") and machine.get("system") else ""
    )
    extra = [tier for tier in run.get("tiers", ["default"]) if tier != "default"]
    tiers = "".join(f" with --{tier}" for tier in extra)
    suite = (
        f"the full default test suite{tiers}" if run.get("full_default_suite")
        else f"a partial run of the test suite{tiers} ("
        + "; ".join(run.get("partial_because") or []) + ")"
    )
    return (
        f"Measured {run['date'][:10]} at `{short_commit(run['commit'])}` by {suite}{where} "
        f"({outcomes_text(run)})."
    )


def _need(figures: Mapping[str, Any], name: str) -> Any:
    if name not in figures:
        raise Missing(name)
    return figures[name]


def _5xx(statuses: Mapping[str, int]) -> int:
    return sum(n for status, n in statuses.items() if int(status) >= 500)


def _statuses(statuses: Mapping[str, int]) -> str:
    return ", ".join(f"{num(n)} {TIMES} {status}" for status, n in statuses.items())


def _fuzz(server: Mapping[str, Any], operator: Mapping[str, Any]) -> str:
    schema, speech = _need(server, "fuzz"), _need(server, "fuzz_speech")
    errors = _5xx(schema["statuses"]) + _5xx(speech["statuses"])
    return (
        f"{num(schema['cases'] + speech['cases'])} ({num(schema['cases'])} from the schema, "
        f"{num(speech['cases'])} speech requests); {num(errors)} answered 5xx"
    )


def _overload(server: Mapping[str, Any], operator: Mapping[str, Any]) -> str:
    if "overload" not in server:  # the soak is in the slow tier; the quick check is not
        quick = _need(server, "overload_quick")
        return (
            f"{num(quick['requests'])} requests at once against a queue of "
            f"{num(quick['max_queue'])}: {_statuses(quick['statuses'])} (the soak at "
            f"10{TIMES} the sustainable rate runs with `make test-slow`)"
        )
    o = server["overload"]
    rss = " → ".join(num(mib) for mib in o["rss_mib_after_each_burst"])
    sustainable, offered = num(o["sustainable_rps"]), num(o["offered_rps"])
    return (
        f"{num(o['overload_ratio'])}{TIMES} the measured sustainable rate ({sustainable}"
        f" → {offered} req/s, {num(o['bursts'])} bursts): "
        f"{_statuses(o['statuses'])}; p95 of admitted requests {num(o['admitted_p95_s'])} s; "
        f"resident memory {rss} MiB"
    )


def _faults(server: Mapping[str, Any], operator: Mapping[str, Any]) -> str:
    # `faults_survived` is only added when a fault test's checks all pass: absent means 0.
    injected = _need(server, "faults_injected")
    return f"{num(server.get('faults_survived', 0))} of {num(injected)} injected"


def _chaos(server: Mapping[str, Any], operator: Mapping[str, Any]) -> str:
    run = _need(operator, "chaos scenarios run")
    return (
        f"{num(operator.get('chaos scenarios survived', 0))} of {num(run)} survived; "
        f"{num(_need(operator, 'API errors retried to success'))} of "
        f"{num(_need(operator, 'API errors injected'))} injected API errors retried to success; "
        f"{num(_need(operator, 'duplicate children found'))} duplicate children; "
        f"{num(_need(operator, 'orphans left after VoiceService deletion'))} orphans"
    )


GUARD_VIOLATIONS = ("guard promise violations (during termination, in cool-down, unreadable "
                    "or unsustained)")
GUARD_UNREADABLE = "guard unreadable metrics reads (refused, 503, timeout, flapping)"


def _guard(server: Mapping[str, Any], operator: Mapping[str, Any]) -> str:
    return (
        f"{num(_need(operator, GUARD_VIOLATIONS))} promise violations over "
        f"{num(_need(operator, 'guard timeline rounds checked (pure decision)'))} random rounds "
        f"({num(_need(operator, 'guard restarts in those timelines'))} restarts); "
        f"{num(_need(operator, 'guard evictions while metrics were unreachable'))} evictions "
        f"over {num(_need(operator, GUARD_UNREADABLE))} unreadable metrics reads"
    )


Row = Callable[[Mapping[str, Any], Mapping[str, Any]], str]
RELIABILITY_ROWS: tuple[tuple[str, Row], ...] = (
    ("fuzz cases (schemathesis on the OpenAPI schema + arbitrary speech requests)", _fuzz),
    (
        "bad inputs handled as specified (control characters, invalid UTF-8, 10 MB bodies with "
        "and without Content-Length, slow bodies, SSE hang-ups, wrong API keys)",
        lambda server, _: num(_need(server, "bad_inputs_tried")),
    ),
    ("overload (only 200, and 429/503 with `Retry-After`)", _overload),
    ("faults survived (raise, CUDA OOM, NaN, hang)", _faults),
    ("operator chaos scenarios", _chaos),
    ("memory guard", _guard),
    (
        "requests that got no answer (fault tests; the overload soak when it runs)",
        lambda server, _: num(_need(server, "requests_lost")),
    ),
)


def render_reliability(run: Mapping[str, Any]) -> str:
    """README's Reliability table: chosen figures, each counted by the run, and its stamp."""
    server = run["figures"].get("server", {})
    operator = run["figures"].get("operator", {})
    rows = []
    for label, row in RELIABILITY_ROWS:
        try:
            rows.append((label, row(server, operator)))
        except Missing:
            rows.append((label, NOT_COUNTED))
    return run_stamp(run) + "\n\n" + table(("figure", "value"), rows)


def render_group(run: Mapping[str, Any], group: str) -> str:
    """Every figure one part of the suite counted (the docs' detailed tables)."""
    figures = run["figures"].get(group, {})
    rows = [(name, value_text(value)) for name, value in sorted(figures.items())]
    return run_stamp(run) + "\n\n" + table(("figure", "value"), rows or [("—", NOT_COUNTED)])


# ---- benchmark figures ---------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """In a JSON path: the list item whose "name" starts with `prefix`."""

    prefix: str


PathStep = str | int | Named


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.3g} min"


def ratio(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class BenchFigure:
    """One benchmark figure README quotes: where it lives and how it reads."""

    key: str
    label: str
    source: str  # relative to the repository root
    path: tuple[PathStep, ...]
    fmt: Callable[[float], str]


def _spike(slug: str, signal: str, prefix: str) -> tuple[BenchFigure, BenchFigure]:
    where = ("tables", "spike", Named(prefix))
    source = "bench/results/autoscale/results.json"
    spike = f"10{TIMES} traffic spike, HPA on {signal}"
    return (
        BenchFigure(f"spike_slo_{slug}", f"{spike}: requests within the time-to-first-audio "
                    "SLO (`bench/autoscale_sim.py`)", source, (*where, "slo_share"), percent),
        BenchFigure(f"spike_recovery_{slug}", f"{spike}: recovery", source,
                    (*where, "recovery_s"), minutes),
    )


def seconds(value: float) -> str:
    return f"{value:.3g} s"


BENCH_FIGURES: tuple[BenchFigure, ...] = (
    BenchFigure("fairness_mms", "fairness: p95 of one-liners while a long text renders / p95 "
                "idle (mms-size model, defaults; `bench/fairness.py`; target <= 1.5)",
                "bench/results/fairness_mms.json", ("value",), ratio),
    BenchFigure("fairness_joe", "fairness, the same on the bundled real voice (target <= 1.5)",
                "bench/results/fairness_joe.json", ("value",), ratio),
    BenchFigure("streaming_ttfa", "streamed time to first audio / first sentence alone (mms, "
                "defaults; `bench/streaming_ttfa.py`; target <= 1.2)",
                "bench/results/streaming_ttfa.json", ("value",), ratio),
    BenchFigure("streaming_ttfa_batch8", "the same with `--max-batch-size 8 --no-autotune`",
                "bench/results/streaming_ttfa_batch8.json", ("value",), ratio),
    BenchFigure("idle_overhead", "one request alone: server latency / its own model call (mms, "
                "float32; `bench/idle_overhead.py`; target <= 1.1)",
                "bench/results/idle_overhead.json", ("value",), ratio),
    BenchFigure("cpu_bf16", "bf16-autocast decoder / float32 throughput, raw mms model "
                "(`bench/cpu_dtype.py`; start-up tuning decides per machine)",
                "bench/results/cpu_dtype.json", ("value",), ratio),
    BenchFigure("cold_start", "cold start of the default voice to `/readyz` 200, median of its "
                "starts (`bench/cold_start.py`; target <= 5 s)",
                "bench/results/cold_start.json", ("value",), seconds),
    BenchFigure("piper_fairness", "vs Piper's own server on the same voice: voicefleet's fairness "
                "(`bench/vs_piper.py`; target <= half of Piper's)",
                "bench/results/vs_piper.json", ("summary", "voicefleet", "fairness"), ratio),
    BenchFigure("piper_fairness_peer", "vs Piper: Piper's fairness",
                "bench/results/vs_piper.json", ("summary", "piper", "fairness"), ratio),
    BenchFigure("piper_throughput_8", "vs Piper: throughput at 8 streams, voicefleet / Piper "
                "(target >= 1)",
                "bench/results/vs_piper.json",
                ("verdicts", "throughput_at_8_vs_peer", "value"), ratio),
    *_spike("queued_audio", "queued audio-seconds per pod", "queued audio-seconds"),
    *_spike("cpu", "CPU utilisation", "CPU utilisation"),
    *_spike("gpu", "GPU utilisation", "GPU utilisation"),
)


def extract(data: Any, path: Sequence[PathStep]) -> Any:
    """Follow `path` into parsed JSON; KeyError names the step that is not there."""
    for step in path:
        if isinstance(step, Named):
            found = [item for item in data if str(item.get("name", "")).startswith(step.prefix)]
            if len(found) != 1:
                raise KeyError(f"{len(found)} items named {step.prefix!r}...")
            data = found[0]
        else:
            data = data[step]
    return data


def bench_values(
    figures: Sequence[BenchFigure], read: Callable[[str], Any]
) -> dict[str, float]:
    """Each figure's value from its source JSON (`read` parses a source path)."""
    values = {}
    for figure in figures:
        try:
            values[figure.key] = extract(read(figure.source), figure.path)
        except (KeyError, IndexError, TypeError) as exc:
            raise FiguresError(f"{figure.source}: no {figure.key} at {figure.path}: {exc}") \
                from exc
    return values


def render_bench(snapshot: Mapping[str, Any], figures: Sequence[BenchFigure]) -> str:
    """README's benchmark table from docs/figures/bench.json."""
    rows = []
    for figure in figures:
        entry = snapshot["figures"][figure.key]
        measured = f"{entry['date']} at `{entry['commit']}`"
        rows.append((figure.label, figure.fmt(entry["value"]), measured))
    note = (
        "Date: the result's own `created_utc` where it records one, else the day its JSON was "
        "committed; commit: the one that committed the JSON."
    )
    return table(("figure", "value", "measured"), rows) + "\n\n" + note


# ---- the documents -------------------------------------------------------------------


def sections(run: Mapping[str, Any], bench: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Every generated section: document -> marker name -> its Markdown."""
    return {
        "README.md": {
            "reliability": render_reliability(run),
            "bench": render_bench(bench, BENCH_FIGURES),
        },
        "docs/reliability.md": {"server": render_group(run, "server")},
        "docs/reliability-operator.md": {"operator": render_group(run, "operator")},
    }


def _markers(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- figures:{re.escape(name)} -->\n)(.*?)(<!-- /figures:{re.escape(name)} -->)",
        re.DOTALL,
    )


def section(text: str, name: str) -> str:
    """The body between a section's markers (ValueError when they are missing)."""
    found = _markers(name).findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one <!-- figures:{name} --> ... <!-- /figures:{name} -->")
    return str(found[0][1]).removesuffix("\n")


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section's body replaced (ValueError when the markers are missing)."""
    section(text, name)
    return _markers(name).sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


# ---- main: files and git -------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def bench_snapshot(figures: Sequence[BenchFigure]) -> dict[str, Any]:
    """Values from bench/results with the date and commit of each source (refuses sources
    with uncommitted changes: their commit would not be the one that made them)."""
    def read(source: str) -> Any:
        return json.loads((ROOT / source).read_text(encoding="utf-8"))

    values = bench_values(figures, read)
    entries = {}
    for figure in figures:
        if _git("status", "--porcelain", "--", figure.source):
            raise FiguresError(f"{figure.source} has uncommitted changes: commit the results "
                               "first, then run `make figures`, so the table names their commit")
        commit, day = _git("log", "-1", "--format=%h %cs", "--", figure.source).split()
        created = read(figure.source).get("created_utc")
        entries[figure.key] = {
            "source": figure.source,
            "value": values[figure.key],
            "date": str(created)[:10] if created else day,
            "commit": commit,
        }
    return {"schema": BENCH_SCHEMA, "figures": entries}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--last-run", type=Path,
        default=Path(os.environ.get("VOICEFLEET_FIGURES") or ROOT / LAST_RUN),
        help="the figures plugin's JSON (default: $VOICEFLEET_FIGURES or .cache/figures/)",
    )
    parser.add_argument(
        "--keep-reliability", action="store_true",
        help="keep the committed docs/figures/reliability.json (no test run needed): "
             "refresh the benchmark figures and re-render",
    )
    args = parser.parse_args(argv)
    try:
        if args.keep_reliability:
            run = json.loads((ROOT / RELIABILITY_JSON).read_text(encoding="utf-8"))
        else:
            if not args.last_run.exists():
                raise FiguresError(f"{args.last_run}: no test run recorded yet; run `make test`")
            run = json.loads(args.last_run.read_text(encoding="utf-8"))
            check_full_run(run, str(args.last_run))
        bench = bench_snapshot(BENCH_FIGURES)
        documents = {
            name: (ROOT / name).read_text(encoding="utf-8")
            for name in sections(run, bench)
        }
        for name, bodies in sections(run, bench).items():
            for marker, body in bodies.items():
                try:
                    documents[name] = replace_section(documents[name], marker, body)
                except ValueError as exc:
                    raise FiguresError(f"{name}: {exc}") from exc
    except FiguresError as exc:
        print(f"make figures: {exc}", file=sys.stderr)
        return 1
    if not args.keep_reliability:
        write_json(ROOT / RELIABILITY_JSON, run)
    write_json(ROOT / BENCH_JSON, bench)
    for name, text in documents.items():
        (ROOT / name).write_text(text, encoding="utf-8")
    print(f"figures: {run_stamp(run)}")
    print(f"wrote {RELIABILITY_JSON}, {BENCH_JSON} and the tables in {', '.join(documents)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
