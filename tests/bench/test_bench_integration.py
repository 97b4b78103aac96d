"""`voicefleet bench` end to end: a few seconds of load against a real `voicefleet serve`
(tiny model, 127.0.0.1, a subprocess started by the bench harness). The bench command runs
in-process (its entry point, `bench_main`) to save an interpreter start. Checks the JSON's
fields, never speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from voicefleet_bench.cli import bench_main
from voicefleet_bench.harness import ServerProcess


def test_bench_against_a_real_server(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    with ServerProcess(tiny_model_dir, ["--max-batch-size", "4", "--no-autotune"],
                       name="bench-it", ready_timeout=90, log_path=tmp_path / "server.log") as srv:
        rc = bench_main(
            ["--url", srv.url, "--rate", "3", "--duration", "2",
             "--mix", "short=0.8,paragraph=0.2", "--stream", "--drain-timeout", "60",
             "--json", str(out), "--plot", str(png), "--no-progress"]
        )
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    assert "audio/s" in stdout
    report = json.loads(out.read_text())
    assert report["schema"] == "voicefleet-bench/1"
    assert report["target"]["sample_rate"] == 16000
    (stage,) = report["stages"]
    assert stage["requests"]["ok"] > 0
    assert stage["throughput_audio_s_per_s"] > 0
    assert stage["latency_s"]["p50"] > 0
    assert 0 < stage["ttfa_s"]["p50"] <= stage["latency_s"]["max"]
    assert stage["server"]["batch_size"]["count"] > 0
    assert stage["server"]["peak"]["rss_bytes"] > 0
    assert report["summary"]["capacity_audio_s_per_s"] > 0
    assert report["summary"]["batching_curve"][0]["mean_batch_size"] >= 1
    assert png.stat().st_size > 0
