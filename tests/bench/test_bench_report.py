"""Presenting results: the stdout table, strict JSON, the PNG, and CLI argument handling."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
from voicefleet_bench import cli, report


def _stage(rate: float | None, thr: float) -> dict[str, object]:
    return {
        "offered_rate_rps": rate, "concurrency": None if rate else 4,
        "requests": {"sent": 10, "ok": 9, "errors": {"429": 1}},
        "throughput_audio_s_per_s": thr, "offered_audio_s_per_s": 2 * (rate or 1), "rtf": 1 / thr,
        "latency_s": {"p50": 0.4, "p95": 0.9, "p99": 1.2},
        "ttfa_s": {"p50": 0.2, "p95": 0.5, "p99": float("nan")},
        "server": {
            "batch_size": {
                "mean": 2.5, "buckets": [{"le": 2.0, "count": 3}, {"le": 4.0, "count": 1}],
            },
            "padding_waste": {"mean": 0.12},
            "peak": {"rss_bytes": 512 * 2**20, "gpu_memory_used_bytes": None},
        },
    }


def test_table_has_one_row_per_stage_and_the_numbers() -> None:
    table = report.format_table([_stage(1.0, 2.0), _stage(None, 3.0)])
    lines = table.splitlines()
    assert len(lines) == 4
    assert "1 rps" in lines[2] and "2.00" in lines[2] and "429: 1" in lines[2]
    assert "c=4" in lines[3]
    assert " 12 " in lines[2]  # padding waste in percent
    assert " 512 " in lines[2]  # RSS in MB
    assert report.format_batch_histogram(_stage(1.0, 1.0)) == "<=2.0: 3, <=4.0: 1"


def test_json_is_strict(tmp_path: Path) -> None:
    text = cli.to_json({"a": float("nan"), "b": [float("inf"), 1.0], "c": {"d": 2}})
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": {"d": 2}}


def test_plot_writes_a_small_png(tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    stages = [_stage(1.0, 2.0), _stage(2.0, 3.5)]
    report.plot({"target": {"model": "m"}, "stages": stages}, str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 200_000


def test_rates_and_arrivals() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["--url", "http://x", "--sweep", "0.5,2"])
    assert cli.parse_rates(args) == [0.5, 2.0]
    assert cli.parse_rates(parser.parse_args(["--url", "http://x"])) == [1.0]
    with pytest.raises(ValueError):
        cli.parse_rates(argparse.Namespace(sweep="1,-2", rate=None))
    a = cli.make_arrivals(4.0, 10.0, {"short": 0.5, "paragraph": 0.5}, seed=1, stage=0)
    b = cli.make_arrivals(4.0, 10.0, {"short": 0.5, "paragraph": 0.5}, seed=1, stage=0)
    assert [(x.at, x.text) for x in a] == [(x.at, x.text) for x in b]
    assert {x.kind for x in a} == {"short", "paragraph"}
    assert all(0 < x.at < 10.0 for x in a)
    assert not math.isclose(a[0].at, cli.make_arrivals(4.0, 10.0, {"short": 1}, 1, 1)[0].at)


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit):
        cli.bench_main(["--url", "http://x", "--mix", "poem=1"])
    with pytest.raises(SystemExit):
        cli.bench_main(["--url", "http://x", "--rate", "1", "--sweep", "1,2"])
