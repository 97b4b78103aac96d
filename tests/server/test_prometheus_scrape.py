"""A real Prometheus (Debian's binary, 127.0.0.1, 1 s scrapes) scraping a real
`voicefleet serve` and the operator's metrics endpoint, under load and after it.

The queries are the ones deployed: the chart's, rendered by helm (the prometheus-adapter rule,
the dashboard's panels, the alert rules, loaded into this Prometheus), and the KEDA trigger
the operator builds for autoscaling.mode keda. Queued audio-seconds must rise under load and
fall back to zero after it.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring_support import ROOT, dashboard_targets, expand
from server_process import ServerProcess, start_server
from voicefleet_bench.dashboard import legend
from voicefleet_bench.prometheus import Prometheus, Target, free_port, start_prometheus, wait_for
from voicefleet_operator.autoscalers import server_scaled_object
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.spec import parse_spec

# ~70 s on a 2-core machine (server start, load, a minute of averaging): run with --slow.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NAMESPACE, SERVICE, POD = "tts", "demo", "demo-0"
SELECTOR = f'namespace="{NAMESPACE}",voicefleet_dev_service="{SERVICE}"'
PARAGRAPH = " ".join(
    [
        "the quick brown fox jumps over the lazy dog while morning light falls across quiet "
        "streets and people walk to work past small shops that open their doors one by one."
    ]
    * 3
)


def helm() -> str:
    found = shutil.which("helm") or str(ROOT / ".cache" / "tools" / "bin" / "helm")
    if not os.access(found, os.X_OK):
        pytest.fail("helm not found: run scripts/fetch-helm.sh (make setup does)")
    return found


def render_chart(tmp_path: Path) -> list[dict[str, Any]]:
    values = {
        "monitoring": {"prometheusRule": {"enabled": True}},
        "autoscaling": {"prometheusAdapter": {"enabled": True}},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    home = tmp_path / "helm-home"
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "none")}
    out = subprocess.run(
        [helm(), "template", "vf", str(ROOT / "charts" / "voicefleet"), "-f", "values.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def adapter_query(docs: list[dict[str, Any]]) -> str:
    """The adapter's metricsQuery as prometheus-adapter expands it for our pod."""
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", rule["name"]["as"])
        .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{POD}"')
        .replace("<<.GroupBy>>", "pod")
    )


def keda_query() -> str:
    """The query of the ScaledObject the operator builds for a VoiceService in mode keda."""
    spec = parse_spec(
        {
            "model": {"variant": "m"},
            "autoscaling": {"mode": "keda", "prometheusUrl": "http://prometheus:9090"},
        },
        default_image="img",
    )
    (trigger,) = server_scaled_object(spec, SERVICE, NAMESPACE)["spec"]["triggers"]
    query: str = trigger["metadata"]["query"]
    return query


@pytest.fixture(scope="module")
def stack(
    tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Prometheus, list[dict[str, Any]]]]:
    work = tmp_path_factory.mktemp("prometheus")
    docs = render_chart(work)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    rules_path = work / "rules.yaml"
    rules_path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    server = start_server(
        tiny_model_dir,
        work,
        "--no-autotune",
        "--max-batch-size",
        "2",
        "--batch-window-ms",
        "5",
        "--max-queue",
        "4096",
    )
    operator = OperatorMetrics()
    operator.observe_service(
        NAMESPACE,
        SERVICE,
        {"autoscaling": {"maxReplicas": 3}},
        {"status": {"replicas": 1, "readyReplicas": 1}},
    )
    operator_port = free_port()
    operator.serve(operator_port, "127.0.0.1")
    prometheus = start_prometheus(
        [
            Target(
                server.url.removeprefix("http://"),
                {"namespace": NAMESPACE, "voicefleet_dev_service": SERVICE, "pod": POD},
            ),
            Target(f"127.0.0.1:{operator_port}", honor_labels=True),
        ],
        work,
        rule_files=[rules_path],
    )
    try:
        yield server, prometheus, docs
    finally:
        prometheus.stop()
        server.stop()


def load(server: ServerProcess, requests: int, workers: int) -> list[int]:
    def one(_: int) -> int:
        body = {"model": "tts-1", "input": PARAGRAPH, "voice": "alloy", "response_format": "pcm"}
        return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(requests)))


def test_autoscaling_queries_rise_under_load_and_fall_after(
    stack: tuple[ServerProcess, Prometheus, list[dict[str, Any]]],
) -> None:
    server, prometheus, docs = stack
    adapter, keda = adapter_query(docs), keda_query()
    assert keda == f"sum(voicefleet_queued_audio_seconds{{{SELECTOR}}})"
    wait_for(lambda: prometheus.scalar(keda) == 0.0, 30, "an idle server scraped")

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(1) as driver:
        statuses = driver.submit(load, server, 24, 12)
        peak = wait_for(
            lambda: (value := prometheus.scalar(keda)) and value > 5 and value,
            60,
            "queued audio-seconds rising under load",
        )
        assert all(code == 200 for code in statuses.result())
    finished = time.time()
    # After the load: the queue drains and the next scrapes say so.
    wait_for(lambda: prometheus.scalar(keda) == 0.0, 30, "queued audio-seconds back to 0")
    # The adapter's per-pod value (averaged over 1 m: one late scrape must not make the
    # HPA jump) rose during the load and falls once the queue is empty.
    during = prometheus.query_range(adapter, started, finished, 1)
    adapter_peak = max(float(v) for _, v in during[0]["values"])
    assert adapter_peak > 1
    wait_for(
        lambda: (value := prometheus.scalar(adapter)) is not None and value < adapter_peak / 2,
        60,
        "adapter query falling after the load",
    )
    print(f"queued audio-seconds peaked at >= {peak:.1f} s under load")


def test_dashboard_panels_show_the_load(
    stack: tuple[ServerProcess, Prometheus, list[dict[str, Any]]],
) -> None:
    server, prometheus, _ = stack
    started = time.time()
    assert set(load(server, 8, 4)) == {200}
    # Rates need two scrapes after the last request.
    time.sleep(3)
    end = time.time()
    results: dict[tuple[str, str], list[float]] = {}
    for title, template, expr in dashboard_targets():
        results.setdefault((title, template), [])
        for series in prometheus.query_range(expand(expr), started - 60, end, 1):
            values = [float(v) for _, v in series["values"] if v not in ("NaN", "+Inf")]
            results[(title, template)] += values
            # Series of a templated legend ("{{kind}}") are also keyed by their own legend.
            results.setdefault((title, legend(template, series["metric"])), []).extend(values)
    got = {key: max(values) if values else None for key, values in results.items()}
    # Every panel that reads the server or operator has data; GPU panels are absent on CPU.
    for (title, name), value in got.items():
        if title.startswith("GPU") and title != "GPU memory vs budget":
            assert value is None, f"{title}/{name} should be absent on CPU, got {value}"
    assert got[("Throughput", "audio s / s")] > 0
    assert got[("Throughput", "API requests / s")] > 0
    assert 0 < got[("Time to first audio", "p95")] < 120
    assert got[("Real-time factor", "p50")] > 0
    assert got[("Queue", "queued audio s")] is not None
    assert got[("Batch size and padding", "mean batch size")] >= 1
    assert 0 <= got[("Batch size and padding", "padding share")] <= 1
    assert got[("Replicas", "scraped")] == 1 and got[("Replicas", "ready")] == 1
    assert got[("Replicas", "maxReplicas")] == 3
    assert got[("Errors and shedding", "5xx")] in (None, 0.0)
    # Every returned segment was checked: the tiny model's random weights make noise, so
    # the SNR sits at the estimator's floor and anomalies show (low_snr at least).
    assert got[("Audio quality: SNR", "p50")] is not None
    assert got[("Audio quality: SNR", "p50")] < 25
    assert got[("Audio quality: anomalies", "low_snr")] > 0


def test_alert_rules_evaluate_against_real_series(
    stack: tuple[ServerProcess, Prometheus, list[dict[str, Any]]],
) -> None:
    _, prometheus, _ = stack
    rules = wait_for(
        lambda: (
            (found := prometheus.rules())
            and all(r.get("lastEvaluation", "") > "2000" for r in found)
            and found
        ),
        30,
        "every rule evaluated once",
    )
    assert len(rules) == 10
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad, f"rules failing on real series: {bad}"
    # A healthy idle server fires nothing.
    assert not [r["name"] for r in rules if r["state"] == "firing"]
