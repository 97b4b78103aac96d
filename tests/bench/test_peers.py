"""bench/vs_piper.py's measuring parts: each peer's request, the fairness and throughput
verdicts, the table, and the phases run against a real voicefleet server (tiny model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from voicefleet_bench import peers
from voicefleet_bench.harness import ServerProcess


def test_each_peer_is_asked_in_its_own_api() -> None:
    path, body = peers.Peer("p", "http://x", "piper").request("Hello.")
    assert (path, body) == ("/synthesize", {"text": "Hello."})
    path, body = peers.Peer("v", "http://x", "voicefleet").request("Hello.")
    assert path == "/v1/audio/speech" and body["input"] == "Hello."
    assert body["response_format"] == "wav"


def phase(*latencies: float) -> peers.Phase:
    return peers.Phase([peers.Timed(x, 1.0, True) for x in latencies], wall_s=sum(latencies))


def test_fairness_is_loaded_p95_over_idle_p95_of_successful_requests() -> None:
    idle = phase(1.0, 1.0, 1.0, 2.0)
    loaded = phase(2.0, 2.0, 2.0, 4.0)
    loaded.results.append(peers.Timed(99.0, 0.0, False, 503))  # failures do not count
    assert abs((peers.fairness(idle, loaded) or 0) - 2.0) < 1e-9
    assert peers.fairness(peers.Phase(), loaded) is None


def summary(fairness: float, throughput_8: float) -> dict[str, object]:
    return {
        "fairness": fairness,
        "throughput": {"1": 1.0, "8": throughput_8},
        "idle_p50_s": 0.5,
        "idle_p95_s": 0.7,
        "loaded_p95_s": 0.7 * fairness,
    }


def test_verdicts_follow_the_issue_targets() -> None:
    good = peers.verdicts(
        {"ours": summary(1.5, 25.0), "piper": summary(3.7, 22.0)}, "ours", "piper"
    )
    assert good["fairness_vs_half_of_peer"]["passed"] is True
    assert good["throughput_at_8_vs_peer"]["passed"] is True
    bad = peers.verdicts({"ours": summary(2.0, 10.0), "piper": summary(3.7, 22.0)}, "ours", "piper")
    assert bad["fairness_vs_half_of_peer"]["passed"] is False
    assert bad["throughput_at_8_vs_peer"] == {"value": 0.455, "target": ">= 1", "passed": False}


def test_the_table_has_a_row_per_server_and_a_column_per_stream_count() -> None:
    text = peers.table({"ours": summary(1.5, 25.0), "piper": summary(3.7, 22.0)})
    lines = text.splitlines()
    assert len(lines) == 3 and "8 str a/s" in lines[0]
    assert lines[2].split()[0] == "piper" and lines[2].split()[4] == "3.70"


def test_the_phases_against_a_real_server(tiny_model_dir: str, tmp_path: Path) -> None:
    with ServerProcess(
        tiny_model_dir, ["--no-autotune"], name="peers", log_path=tmp_path / "server.log"
    ) as srv:
        peer = peers.Peer("voicefleet", srv.url, "voicefleet")

        async def go() -> tuple[peers.Phase, peers.Phase, int, peers.Phase]:
            async with httpx.AsyncClient() as client:
                idle = await peers.sequential(client, peer, ["one two three.", "four five."])
                loaded, runs = await peers.while_busy(
                    client, peer, ["six seven."], "a long text. " * 20
                )
                loop = await peers.closed_loop(client, peer, ["eight nine."], 2, 1.0)
            return idle, loaded, runs, loop

        idle, loaded, runs, loop = asyncio.run(go())
    assert len(idle.latencies) == 2 and idle.audio_s > 0
    assert len(loaded.latencies) == 1 and runs >= 1
    assert loop.errors == 0 and len(loop.results) >= 2
    assert loop.summary()["throughput_audio_s_per_s"] > 0


def test_rounds_pool_into_one_phase() -> None:
    first, second = phase(0.1, 0.2), phase(0.3)
    second.results.append(peers.Timed(9.0, 0.0, False, 503))
    pooled = peers.Phase.pooled([first, second])
    assert pooled.latencies == [0.1, 0.2, 0.3]
    assert pooled.errors == 1
    assert abs(pooled.wall_s - 0.6) < 1e-9
    assert pooled.summary()["throughput_audio_s_per_s"] == round(3.0 / 0.6, 3)
