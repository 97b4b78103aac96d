"""The verdicts and the report of `bench/gpu_check.py` (GPU readiness), without a GPU.

The script gathers raw measurements (in a child process for the model checks, then
against a real `voicefleet serve` on CUDA); this module turns them into named checks with
a target and a pass/fail, prints the table, and builds the JSON. Pure functions, so the
verdict logic is unit-tested on any machine (tests/bench/test_gpucheck.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SCHEMA = "voicefleet-gpu-check/1"
# A mean word accuracy above this over simple sentences tells speech from noise
# (MODEL-NOTES: real voices 0.8-0.95, random weights ~0.01, white noise 0).
SPEECH_ACCURACY = 0.5
# fp16 may cost a little recognizability against fp32, not more than this.
FP16_ACCURACY_LOSS = 0.1


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: str
    target: str
    passed: bool | None  # None: reported, no target

    @property
    def mark(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.passed]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def precision_checks(model: Mapping[str, Any]) -> list[Check]:
    """fp16 vs fp32: speech (recognizer word accuracy), NaN/inf and fp32 re-runs."""
    quality = model.get("quality") or {}
    acc16 = _median(quality.get("accuracy_fp16") or [])
    acc32 = _median(quality.get("accuracy_fp32") or [])
    mean16 = statistics.fmean(quality["accuracy_fp16"]) if quality.get("accuracy_fp16") else None
    mean32 = statistics.fmean(quality["accuracy_fp32"]) if quality.get("accuracy_fp32") else None
    speech = (
        None
        if mean16 is None or mean32 is None
        else mean16 >= SPEECH_ACCURACY and mean16 >= mean32 - FP16_ACCURACY_LOSS
    )
    if not quality.get("recognizer", True):
        speech = None  # no recognizer (or no real voice): reported, not judged
    raw_nan = quality.get("raw_nonfinite_fp16")
    final_nan = quality.get("final_nonfinite_fp16")
    reruns = quality.get("fp32_reruns_fp16")
    corr = _median(quality.get("correlation") or [])
    return [
        Check(
            "fp16 speech (recognizer word accuracy, mean)",
            f"fp16 {_fmt(mean16)} / fp32 {_fmt(mean32)} (median {_fmt(acc16)} / {_fmt(acc32)})",
            f"fp16 >= {SPEECH_ACCURACY} and >= fp32 - {FP16_ACCURACY_LOSS}",
            speech,
        ),
        Check(
            "fp16 NaN/inf items (before / after the float32 guard)",
            f"{raw_nan} / {final_nan} ({reruns} re-run in float32)",
            "0 after the guard",
            None if final_nan is None else final_nan == 0,
        ),
        Check("fp16 vs fp32 waveform correlation (median)", _fmt(corr, digits=4), "-", None),
    ]


def throughput_checks(model: Mapping[str, Any]) -> list[Check]:
    rates = model.get("throughput") or {}
    one = _median(rates.get("1") or [])
    many_key = max((k for k in rates if k != "1"), key=int, default=None)
    many = _median(rates.get(many_key) or []) if many_key else None
    ratio = None if not one or many is None else many / one
    return [
        Check(
            f"throughput batch 1 vs {many_key or 16} (fp16, audio s per s, median)",
            f"{_fmt(one)} vs {_fmt(many)} ({_fmt(ratio)}x)",
            "> 1x (batching pays on a GPU)",
            None if ratio is None else ratio > 1.0,
        )
    ]


def memory_checks(model: Mapping[str, Any], server: Mapping[str, Any]) -> list[Check]:
    cap = model.get("allocator_cap") or {}
    budget = server.get("budget_bytes") or cap.get("budget_bytes")
    peak = server.get("peak_used_bytes")
    holds = cap.get("within_ok") is True and cap.get("beyond_refused") is True if cap else None
    nvml = model.get("memory_readings") or {}
    used, reserved = nvml.get("used_bytes"), nvml.get("torch_reserved_bytes")
    return [
        Check(
            "peak GPU memory of the server under 64 streams vs budget",
            f"{_gib(peak)} of {_gib(budget)} ({server.get('memory_source') or '?'})",
            "<= budget",
            None if peak is None or not budget else peak <= budget,
        ),
        Check(
            "allocator cap holds (alloc within fits, beyond raises OOM)",
            f"within: {cap.get('within_ok')}, beyond refused: {cap.get('beyond_refused')}",
            "both true",
            holds,
        ),
        Check(
            "NVML vs torch readings",
            f"{nvml.get('source')} {_gib(used)} vs torch reserved {_gib(reserved)}"
            f" (NVML device used {_gib(nvml.get('device_used_bytes'))})",
            "NVML >= torch reserved (it includes the CUDA context)",
            None if used is None or reserved is None else used >= reserved,
        ),
    ]


def ttfa_checks(server: Mapping[str, Any]) -> list[Check]:
    out = []
    for streams, stage in sorted((server.get("ttfa") or {}).items(), key=lambda kv: int(kv[0])):
        ttfa = stage.get("ttfa_s") or {}
        out.append(
            Check(
                f"time to first audio at {streams} stream(s), p50 / p95",
                f"{_fmt(ttfa.get('p50'), ' s')} / {_fmt(ttfa.get('p95'), ' s')} "
                f"({ttfa.get('count', 0)} requests, {stage.get('errors', 0)} errors)",
                "-",
                None,
            )
        )
    return out


def all_checks(model: Mapping[str, Any], server: Mapping[str, Any]) -> list[Check]:
    return [
        *precision_checks(model),
        *throughput_checks(model),
        *ttfa_checks(server),
        *memory_checks(model, server),
    ]


def table(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=10)
    lines = [f"{'check':<{width}}  result  value  [target]"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.mark:<6}  {c.value}  [{c.target}]")
    return "\n".join(lines)


def report(
    model: Mapping[str, Any],
    server: Mapping[str, Any],
    *,
    device: Mapping[str, Any],
    elapsed_s: float,
    command: Sequence[str],
) -> dict[str, Any]:
    checks = all_checks(model, server)
    judged = [c.passed for c in checks if c.passed is not None]
    return {
        "schema": SCHEMA,
        "command": list(command),
        "device": dict(device),
        "elapsed_s": round(elapsed_s, 1),
        "passed": all(judged) if judged else None,
        "checks": [asdict(c) | {"mark": c.mark} for c in checks],
        "model": dict(model),
        "server": dict(server),
    }


def skipped(reason: str, command: Sequence[str]) -> dict[str, Any]:
    """The report when there is nothing to check (no CUDA device)."""
    return {"schema": SCHEMA, "command": list(command), "skipped": reason, "passed": None}
