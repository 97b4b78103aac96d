"""bench/gpu_check.py without a GPU: its verdicts from recorded measurements, its table and
JSON, and its clean skip when no CUDA device is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from voicefleet_bench import gpucheck

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


def healthy_model() -> dict[str, Any]:
    return {
        "quality": {
            "recognizer": True,
            "accuracy_fp16": [0.9, 0.85, 1.0, 0.8],
            "accuracy_fp32": [0.9, 0.9, 1.0, 0.8],
            "correlation": [0.99, 0.98, 0.995, 0.97],
            "raw_nonfinite_fp16": 1,
            "final_nonfinite_fp16": 0,
            "fp32_reruns_fp16": 1,
        },
        "throughput": {"1": [20.0, 22.0, 21.0], "16": [180.0, 190.0, 170.0]},
        "memory_readings": {
            "used_bytes": int(1.6 * GIB),
            "source": "device",
            "torch_reserved_bytes": int(1.1 * GIB),
            "device_used_bytes": int(1.6 * GIB),
        },
        "allocator_cap": {"budget_bytes": 8 * GIB, "within_ok": True, "beyond_refused": True},
    }


def healthy_server() -> dict[str, Any]:
    return {
        "ttfa": {
            "64": {"ttfa_s": {"p50": 0.4, "p95": 0.9, "count": 900}, "errors": 0},
            "1": {"ttfa_s": {"p50": 0.05, "p95": 0.07, "count": 300}, "errors": 0},
        },
        "peak_used_bytes": 3.5 * GIB,
        "budget_bytes": 8 * GIB,
        "memory_source": "device",
    }


def by_name(checks: list[gpucheck.Check]) -> dict[str, gpucheck.Check]:
    return {c.name.split(" (")[0]: c for c in checks}


def test_a_healthy_gpu_passes_every_judged_check() -> None:
    out = gpucheck.report(
        healthy_model(),
        healthy_server(),
        device={"name": "H200"},
        elapsed_s=300.0,
        command=["gpu_check.py"],
    )
    assert out["passed"] is True
    marks = {c["name"]: c["mark"] for c in out["checks"]}
    assert "FAIL" not in marks.values()
    assert list(marks).index("time to first audio at 1 stream(s), p50 / p95") < list(marks).index(
        "time to first audio at 64 stream(s), p50 / p95"
    )
    json.dumps(out)  # serializable as is


def test_fp16_that_is_not_speech_fails() -> None:
    model = healthy_model()
    model["quality"]["accuracy_fp16"] = [0.1, 0.0, 0.2, 0.1]
    checks = by_name(gpucheck.all_checks(model, healthy_server()))
    assert checks["fp16 speech"].passed is False


def test_fp16_clearly_worse_than_fp32_fails_even_above_the_speech_floor() -> None:
    model = healthy_model()
    model["quality"]["accuracy_fp16"] = [0.6, 0.6, 0.7, 0.6]
    assert by_name(gpucheck.all_checks(model, healthy_server()))["fp16 speech"].passed is False


def test_nan_left_after_the_guard_fails_and_nan_before_it_does_not() -> None:
    model = healthy_model()
    assert by_name(gpucheck.all_checks(model, {}))["fp16 NaN/inf items"].passed is True
    model["quality"]["final_nonfinite_fp16"] = 2
    assert by_name(gpucheck.all_checks(model, {}))["fp16 NaN/inf items"].passed is False


def test_memory_over_budget_and_a_leaky_cap_fail() -> None:
    model, server = healthy_model(), healthy_server()
    server["peak_used_bytes"] = 9 * GIB
    model["allocator_cap"]["beyond_refused"] = False
    checks = by_name(gpucheck.all_checks(model, server))
    assert checks["peak GPU memory of the server under 64 streams vs budget"].passed is False
    assert checks["allocator cap holds"].passed is False
    assert gpucheck.report(model, server, device={}, elapsed_s=1, command=[])["passed"] is False


def test_nvml_below_torch_fails_and_missing_readings_are_not_judged() -> None:
    model = healthy_model()
    model["memory_readings"]["used_bytes"] = int(0.5 * GIB)
    assert by_name(gpucheck.all_checks(model, {}))["NVML vs torch readings"].passed is False
    empty = gpucheck.all_checks({}, {})
    assert all(c.passed is None for c in empty)
    assert gpucheck.report({}, {}, device={}, elapsed_s=1, command=[])["passed"] is None


def test_batching_that_does_not_pay_fails() -> None:
    model = healthy_model()
    model["throughput"]["16"] = [15.0, 16.0, 14.0]
    check = by_name(gpucheck.all_checks(model, {}))["throughput batch 1 vs 16"]
    assert check.passed is False and "0.71x" in check.value


def test_a_random_model_speech_is_reported_not_judged() -> None:
    model = healthy_model()
    model["quality"]["recognizer"] = False
    model["quality"]["accuracy_fp16"] = [0.0] * 4
    assert by_name(gpucheck.all_checks(model, {}))["fp16 speech"].passed is None


def test_the_table_shows_each_check_with_its_mark() -> None:
    text = gpucheck.table(gpucheck.all_checks(healthy_model(), healthy_server()))
    assert text.count("PASS") == 6 and "FAIL" not in text
    assert "3.50 GiB of 8.00 GiB (device)" in text


def test_without_cuda_the_script_skips_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ":".join(sys.path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stdout
    report = json.loads(out.read_text())
    assert report["skipped"] and report["passed"] is None


@pytest.mark.slow
def test_a_cpu_rehearsal_runs_every_step_of_the_script(tmp_path: Path, tiny_model_dir: str) -> None:
    """The GPU is rarely lent: rehearse the whole script on the CPU (tiny model, bfloat16
    for float16) so that it has run end to end before it meets one."""
    out = tmp_path / "rehearsal.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu_check.py"),
            "--rehearse-on-cpu",
            "--model",
            tiny_model_dir,
            "--sentences",
            "2",
            "--rounds",
            "1",
            "--streams",
            "1,2",
            "--stream-seconds",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"]["name"] == "CPU (rehearsal)"
    assert set(report["model"]["throughput"]) == {"1", "16"}
    assert set(report["server"]["ttfa"]) == {"1", "2"}
    assert all(stage["ttfa_s"]["count"] > 0 for stage in report["server"]["ttfa"].values())
