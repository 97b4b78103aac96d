#!/usr/bin/env python3
"""Traffic-peak autoscaling simulator: which signal should voicefleet's HPA scale on?

    autoscale_sim.py measure-startup --model /tmp/m --runs 3 --out startup.json
    autoscale_sim.py compare --bench bench.json --startup startup.json --out bench/results/autoscale

`compare` calibrates every signal's target to the same baseline fleet, runs each over the
steady, 10x-spike and diurnal traces, then behaviour variants for the default signal, and writes
results.md (tables + provenance), results.json and PNG plots. Bounded: < 2 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from voicefleet_bench.autoscale import capacity as cap_mod
from voicefleet_bench.autoscale import report, startup, traces
from voicefleet_bench.autoscale.defaults import RECOMMENDED, VARIANTS
from voicefleet_bench.autoscale.signals import SIGNALS, Signal
from voicefleet_bench.autoscale.sim import SimConfig, SimResult, simulate

HERE = Path(__file__).resolve().parent


def make_traces(args: argparse.Namespace) -> dict[str, traces.Trace]:
    return {
        "steady": traces.steady(args.base_load, args.duration_min * 60),
        "spike": traces.spike(args.base_load, args.spike_factor, start_s=600.0,
                              minutes=args.spike_min, duration_s=args.duration_min * 60),
        "diurnal": traces.diurnal(args.base_load, 0.8, period_s=args.diurnal_h * 3600),
    }


def cmd_measure_startup(args: argparse.Namespace) -> int:
    extra = ["--no-autotune"] if args.no_autotune else []
    result = startup.measure(args.model, args.runs, extra)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ready_s", "machine", "load_average_after")}))
    return 0


def _shown(path: str) -> str:
    """A path as the results show it: relative to the repository when inside it."""
    full = Path(path).resolve()
    root = HERE.parent
    return str(full.relative_to(root)) if full.is_relative_to(root) else path


def _nice(value: float) -> float:
    """Two significant digits: targets people can type."""
    if value <= 0:
        return 0.1
    digits = 1 - math.floor(math.log10(value))
    return round(value, digits)


def cmd_compare(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    capacity = cap_mod.load_capacity(args.bench, _shown(args.bench))
    start = cap_mod.load_startup(args.startup, image_pull_s=args.image_pull,
                                 label=_shown(args.startup))
    sentence_s = capacity.audio_s_per_sentence
    per_segment_s = sentence_s / capacity.throughput(1)
    slo_s = args.slo if args.slo else round(max(1.0, args.slo_segments * per_segment_s), 1)
    trace_set = make_traces(args)
    requests = {
        name: traces.generate(tr, sentence_s, capacity.peak_throughput, args.seed)
        for name, tr in trace_set.items()
    }
    base = SimConfig(
        signal=SIGNALS["queued_audio"], capacity=capacity, startup=start,
        behavior=RECOMMENDED, min_replicas=args.min_replicas,
        max_replicas=args.max_replicas, seed=args.seed,
    )

    # 0. Calibration: the fewest fixed pods that keep the baseline within the SLO for
    # 95 % of requests, and what each signal reads there. A signal's target is that
    # reading, so every signal holds the same steady-state fleet and the runs below
    # compare how they react, not how much they over-provision.
    calib_trace = traces.steady(args.base_load, 1200.0)
    calib_reqs = traces.generate(calib_trace, sentence_s, capacity.peak_throughput, args.seed)
    calibration: list[tuple[int, float]] = []
    pods = max(args.min_replicas, math.ceil(args.base_load))
    while True:
        fixed = replace(base, min_replicas=pods, max_replicas=pods, initial_replicas=pods)
        result = simulate(calib_reqs, calib_trace.duration_s, fixed)
        share = report.score("calibration", result, slo_s, None).slo_share
        calibration.append((pods, share))
        if share >= 0.95 or pods >= 20 * args.base_load:
            break
        pods += 1
    readings: dict[str, float] = {}
    for name, signal in SIGNALS.items():
        result = simulate(calib_reqs, calib_trace.duration_s, replace(
            fixed, signal=signal))
        values = [v for t, v in zip(result.series["t"], result.series["metric"], strict=True)
                  if t >= 120.0 and not math.isnan(v)]
        readings[name] = sum(values) / len(values)
    calibrated = {name: SIGNALS[name].with_target(_nice(readings[name])) for name in SIGNALS}
    base = replace(base, initial_replicas=pods)

    def run(trace: str, signal: Signal, **changes: Any) -> SimResult:
        cfg = replace(base, signal=signal, **changes)
        return simulate(requests[trace], trace_set[trace].duration_s, cfg)

    def scored(trace: str, label: str, result: SimResult) -> report.Score:
        return report.score(label, result, slo_s, trace_set[trace].spike)

    # 1. Each signal around its calibrated target (half, calibrated, double) on the spike.
    sweep: dict[str, list[tuple[float, report.Score]]] = {}
    for name, signal in calibrated.items():
        rows = []
        for factor in (0.5, 1.0, 2.0):
            target = _nice(signal.target * factor)
            result = run("spike", signal.with_target(target))
            rows.append((target, scored("spike", f"{name}@{target:g}", result)))
        sweep[name] = rows
    best = calibrated

    report.plot_pareto(
        {SIGNALS[n].label: rows for n, rows in sweep.items()}, out / "pareto_spike.png",
        "spike trace: SLO share vs cost, every signal over its targets (labels)",
    )

    # 2. Every signal at its calibrated target on every trace.
    tables: dict[str, list[tuple[str, report.Score]]] = {}
    for trace_name in trace_set:
        labelled: list[tuple[str, report.Score]] = []
        plotted = []
        for name, signal in best.items():
            result = run(trace_name, signal)
            label = f"{signal.label} (target {signal.target:g} {signal.unit})"
            labelled.append((label, scored(trace_name, label, result)))
            plotted.append((f"{name} @{signal.target:g}", result))
        tables[trace_name] = labelled
        report.plot_runs(
            plotted, slo_s, out / f"signals_{trace_name}.png",
            f"{trace_set[trace_name].description}; each signal at its calibrated target",
            trace_set[trace_name].spike,
        )

    # 3. Behaviour variants for the default signal on the spike and diurnal traces.
    default = best["queued_audio"]
    behavior_rows: dict[str, list[tuple[str, report.Score]]] = {"spike": [], "diurnal": []}
    behavior_plots = []
    for label, behavior in VARIANTS.items():
        for trace_name, brows in behavior_rows.items():
            result = run(trace_name, default, behavior=behavior)
            brows.append((label, scored(trace_name, label, result)))
            if trace_name == "spike" and not label.startswith("down"):
                behavior_plots.append((label, result))
    report.plot_runs(behavior_plots, slo_s, out / "behavior_spike.png",
                     f"queued audio-s @{default.target:g}: HPA behaviour variants",
                     trace_set["spike"].spike)

    # 4. Sensitivity of the default: start-up time, metric pipeline, headroom, admission.
    headroom = calibration[-1][0] * 3 // 2
    sens_rows = []
    for label, changes in (
        ("as above", {}),
        ("image cached on node (pull 0 s)", {"startup": replace(start, image_pull_s=0.0)}),
        ("slow pull (180 s)", {"startup": replace(start, image_pull_s=180.0)}),
        ("adapter window 30 s", {"adapter_window_s": 30.0}),
        ("adapter window 2 min", {"adapter_window_s": 120.0}),
        ("scrape 30 s", {"scrape_s": 30.0}),
        (f"minReplicas {headroom} (1.5 x the baseline fleet)", {"min_replicas": headroom}),
        ("maxQueue 64 segments (CRD default 512)", {"max_queue": 64}),
        ("maxQueue 32 segments", {"max_queue": 32}),
        ("no client retries", {"retries": 0}),
    ):
        result = run("spike", default, **changes)
        sens_rows.append((label, scored("spike", label, result)))

    # 5. Imbalance at scale: random routing over N pods at the calibrated utilisation.
    utilisation = args.base_load / calibration[-1][0]
    imbalance = []
    for load in (args.base_load, 30.0, 100.0):
        pods = math.ceil(load / utilisation)
        tr = traces.steady(load, 600.0)
        reqs = traces.generate(tr, sentence_s, capacity.peak_throughput, args.seed)
        result = simulate(reqs, tr.duration_s, replace(
            base, min_replicas=pods, max_replicas=pods, initial_replicas=pods))
        sc = report.score(f"{pods} pods", result, slo_s, None)
        cv = result.series["queue_cv"][12:]
        qmax = result.series["queue_max"][12:]
        qsum = result.series["queued_audio_s"][12:]
        imbalance.append({
            "load_pods": load, "pods": pods, "slo_share": sc.slo_share,
            "p95_ttfa_s": sc.p95_ttfa_s,
            "queue_cv_mean": sum(cv) / max(1, len(cv)),
            "max_over_mean_queue": sum(m / (q / pods) for m, q in zip(qmax, qsum, strict=True)
                                       if q > 0) / max(1, sum(1 for q in qsum if q > 0)),
        })

    elapsed = time.monotonic() - t_start
    write_outputs(out, args, capacity, start, slo_s, per_segment_s, trace_set, sweep, tables,
                  behavior_rows, sens_rows, imbalance, elapsed, calibration, readings)
    print((out / "results.md").read_text())
    print(f"compare finished in {elapsed:.1f} s", file=sys.stderr)
    return 0


def _table_with_targets(rows: list[tuple[float, report.Score]], unit: str) -> str:
    return report.markdown_table([(f"{t:g} {unit}", s) for t, s in rows], first="target")


def write_outputs(out: Path, args: argparse.Namespace, capacity: cap_mod.PodCapacity,
                  start: cap_mod.StartupModel, slo_s: float, per_segment_s: float,
                  trace_set: dict[str, traces.Trace],
                  sweep: dict[str, list[tuple[float, report.Score]]],
                  tables: dict[str, list[tuple[str, report.Score]]],
                  behavior_rows: dict[str, list[tuple[str, report.Score]]],
                  sens_rows: list[tuple[str, report.Score]],
                  imbalance: list[dict[str, float]], elapsed: float,
                  calibration: list[tuple[int, float]], readings: dict[str, float]) -> None:
    pods, share = calibration[-1]
    backlog_s = readings["queued_audio"] / capacity.peak_throughput
    lines = [
        "# Autoscaling simulation: which signal, which settings",
        "",
        "Generated by `bench/autoscale_sim.py compare` (seed"
        f" {args.seed}, {elapsed:.0f} s). Do not edit by hand; see docs/autoscaling.md.",
        "",
        "## Inputs and their provenance",
        "",
        f"- Pod capacity: {capacity.provenance}.",
        f"- Start-up: {start.provenance}; scheduling {start.scheduling_s:g} s, readiness"
        f" probe period {start.readiness_period_s:g} s (operator manifest).",
        f"- One sentence = one segment takes {per_segment_s:.2f} s alone on this pod; SLO:"
        f" time to first audio <= {slo_s:g} s ({args.slo_segments:g} segment times, at least"
        " 1 s).",
        f"- HPA: sync 15 s, tolerance 10 %, minReplicas {args.min_replicas}, maxReplicas"
        f" {args.max_replicas}; Prometheus scrape 15 s, adapter `avg_over_time[1m]`"
        " (chart default); metrics-server 15 s for CPU; admission 512 queued segments per"
        " pod (CRD default batching.maxQueue);"
        " clients retry a 429/503 twice (1 s, 2 s later), as the OpenAI SDK does; the"
        " Service routes uniformly at random over Ready pods.",
        "- Load unit: one pod's worth = the measured peak throughput of one pod"
        f" ({capacity.peak_throughput:.2f} audio-s/s).",
        "",
        "## Calibration: equal fleets at the baseline",
        "",
        f"The fewest fixed pods that answer {100 * share:.1f} % (>= 95 %) of the baseline"
        f" ({args.base_load:g} pods' worth) within the SLO: **{pods} pods**"
        f" ({100 * args.base_load / pods:.0f} % busy). Tried: "
        + ", ".join(f"{n} pods {100 * v:.1f} %" for n, v in calibration) + ".",
        "Each signal's target is what it reads on those pods, so all signals hold the same"
        " fleet at the baseline and the traces compare how they react:",
        "",
        "| signal | reading at the calibrated fleet = target |",
        "|---|---:|",
        *[f"| {SIGNALS[n].label} | {v:.3g} {SIGNALS[n].unit} (target {_nice(v):g}) |"
          for n, v in readings.items()],
        "",
        f"In seconds of work: queued audio-s / throughput = {readings['queued_audio']:.3g} /"
        f" {capacity.peak_throughput:.3g} = {backlog_s:.2f} s of backlog per pod.",
        "",
    ]
    for name, tr in trace_set.items():
        lines += [f"## Trace `{name}`: {tr.description}", "",
                  report.markdown_table(tables[name]), f"![{name}](signals_{name}.png)", ""]
    lines += ["## Targets around the calibrated one (spike trace)", "",
              "Half, calibrated and double target per signal: SLO share against cost.", "",
              "![pareto](pareto_spike.png)", ""]
    for name, rows in sweep.items():
        lines += [f"### {SIGNALS[name].label}", "",
                  _table_with_targets(rows, SIGNALS[name].unit), ""]
    lines += ["## HPA behaviour variants (default signal)", "",
              "Spike trace:", "", report.markdown_table(behavior_rows["spike"], first="behavior"),
              "Diurnal trace:", "",
              report.markdown_table(behavior_rows["diurnal"], first="behavior"),
              "![behaviour](behavior_spike.png)", "",
              "## Sensitivity of the default (spike trace)", "",
              report.markdown_table(sens_rows, first="change"), "",
              "## Per-pod queue imbalance under random routing (steady, fixed pods at the"
              f" calibrated {100 * args.base_load / pods:.0f} % busy)", "",
              "| load (pods' worth) | pods | within SLO | p95 TTFA (s) | CV of per-pod"
              " queued audio | busiest pod / mean |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['load_pods']:g} | {r['pods']:g} | {100 * r['slo_share']:.1f} % |"
              f" {r['p95_ttfa_s']:.2f} | {r['queue_cv_mean']:.2f} |"
              f" {r['max_over_mean_queue']:.1f} |" for r in imbalance]
    lines += [""]
    (out / "results.md").write_text("\n".join(lines))
    payload = {
        "seed": args.seed,
        "slo_s": slo_s,
        "capacity": asdict(capacity),
        "startup": asdict(start),
        "tables": {k: [asdict(s) for _, s in v] for k, v in tables.items()},
        "sweep": {k: [{"target": t, **asdict(s)} for t, s in v] for k, v in sweep.items()},
        "calibration": {"tried": calibration, "readings": readings},
        "behaviors": {k: [asdict(s) for _, s in v] for k, v in behavior_rows.items()},
        "recommended_behavior": RECOMMENDED.to_manifest(),
        "sensitivity": [asdict(s) for _, s in sens_rows],
        "imbalance": imbalance,
    }
    text = json.dumps(payload, indent=1, default=lambda o: None if o != o else str(o))
    (out / "results.json").write_text(text.replace("Infinity", "null") + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure-startup", help="time `voicefleet serve` until /readyz is 200")
    m.add_argument("--model", required=True)
    m.add_argument("--runs", type=int, default=3)
    m.add_argument("--no-autotune", action="store_true")
    m.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="compare scaling signals and HPA settings")
    c.add_argument("--bench", default=str(HERE / "results/autoscale/bench_tiny_cpu.json"))
    c.add_argument("--startup", default=str(HERE / "results/autoscale/startup_joe_cpu.json"))
    c.add_argument("--out", default=str(HERE / "results/autoscale"))
    c.add_argument("--image-pull", type=float, default=60.0,
                   help="image pull seconds (parameter, not measured; default %(default)s)")
    c.add_argument("--slo", type=float, default=0.0,
                   help="TTFA SLO in s (default: --slo-segments one-sentence service times)")
    c.add_argument("--slo-segments", type=float, default=10.0)
    c.add_argument("--base-load", type=float, default=3.0, help="pods' worth at baseline")
    c.add_argument("--spike-factor", type=float, default=10.0)
    c.add_argument("--spike-min", type=float, default=10.0)
    c.add_argument("--duration-min", type=float, default=45.0)
    c.add_argument("--diurnal-h", type=float, default=2.0)
    c.add_argument("--min-replicas", type=int, default=2)
    c.add_argument("--max-replicas", type=int, default=200)
    c.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd == "measure-startup":
        return cmd_measure_startup(args)
    return cmd_compare(args)


if __name__ == "__main__":
    raise SystemExit(main())

_ = math  # keep the import for readers computing by hand in a REPL
