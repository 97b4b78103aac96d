#!/usr/bin/env python
"""Script 7 - cold start: process start to /readyz 200, and to CPU tuning done.

Starts `voicefleet serve` --runs times (default: the bundled real voice, no --model, as a
pod starts), timing process start -> /readyz 200 (ready: loaded and warmed up; it serves
from then on) and -> tuning done (/readyz detail `tuning.state`; CPU tuning runs after
ready in idle gaps), and the server's resident memory once tuned (its kernels are built by
then: engine/shapes.py). The server's imports alone (app, torch, transformers' VITS modeling
code) are timed in a fresh interpreter before each start: ready minus that is what start-up
itself costs (loading, warm-up, serving). Medians over runs. Target (issue 15): ready <= 5 s.

    .venv/bin/python bench/cold_start.py --json bench/results/cold_start.json
    .venv/bin/python bench/cold_start.py --model bench/out/models/mms --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from voicefleet_bench import harness

# What `voicefleet serve` imports before it can load the default voice: the app (torch with
# it) and the Piper voice's model class (transformers' modeling code, which `import
# transformers.models.vits` alone leaves lazy). The collector rests as in the server
# (voicefleet_server/coldstart.py).
# The child says so and leaves without tearing the modules down (that costs ~1 s and is
# no part of a start).
IMPORTS = (
    "import gc, os; gc.disable(); "
    "import voicefleet_server.app, voicefleet_server.engine.piper_model; "
    "print('imported', flush=True); os._exit(0)"
)


def import_seconds() -> float:
    """Process start to the server's imports done, in a fresh interpreter."""
    started = time.perf_counter()
    with subprocess.Popen([sys.executable, "-c", IMPORTS], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        said = child.stdout.readline()
        elapsed = time.perf_counter() - started
    if said.strip() != b"imported" or child.returncode != 0:
        raise RuntimeError(f"the import check failed (exit {child.returncode})")
    return elapsed


# Imported at start-up only because transformers' modeling code imports them (masking
# utilities, tensor-parallel sharding, object-detection losses); serving never runs them.
# Siblings in the import tree: their cumulative times do not overlap.
UNUSED_BY_SERVING = ("torch._dynamo", "torch.distributed.tensor", "scipy.optimize")


def import_profile(modules: tuple[str, ...]) -> dict[str, float]:
    """Cumulative import seconds of `modules` (wherever first imported), by `-X importtime`
    over the server's imports in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS],
                          capture_output=True, text=True, check=True)
    cumulative: dict[str, float] = {}
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[2].strip() in modules:
            cumulative[fields[2].strip()] = int(fields[1]) / 1e6
    return cumulative


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="what to serve (default: the server's default voice)")
    parser.add_argument("--runs", type=int, default=3, help="cold starts")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `voicefleet serve` argument (repeatable)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    harness.line_buffered_stdout()
    ready: list[float] = []
    tuned: list[float] = []
    imports: list[float] = []
    tunings = []
    rss: list[float | None] = []
    for run in range(args.runs):
        imports.append(import_seconds())
        with harness.ServerProcess(args.model, args.serve_arg, name="cold-start") as srv:
            ready.append(srv.startup_s or 0.0)
            tuned.append(srv.tuned_s or 0.0)
            tunings.append(srv.tuning)
            rss.append(srv.rss_mb())  # tuning built every shape bucket's kernels by now
        print(f"run {run + 1}: ready {ready[-1]:.2f} s, tuned {tuned[-1]:.2f} s "
              f"(the server's imports alone {imports[-1]:.2f} s); tuning {tunings[-1]}")
    profile = import_profile(("torch", "transformers", *UNUSED_BY_SERVING))
    value = statistics.median(ready)
    harness.report_ratio(
        "cold_start_to_ready_s", value, target="<= 5 s", json_path=args.json,
        detail={"model": args.model or "(default voice)", "machine": harness.machine(),
                "ready_s": ready, "tuned_s": tuned, "import_s": imports,
                "tuned_median_s": statistics.median(tuned),
                "import_median_s": statistics.median(imports),
                "beyond_imports_s": [r - i for r, i in zip(ready, imports, strict=True)],
                "import_profile_s": profile,
                "unused_by_serving_s": sum(profile.get(m, 0.0) for m in UNUSED_BY_SERVING),
                "rss_tuned_mb": rss, "tuning": tunings},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
