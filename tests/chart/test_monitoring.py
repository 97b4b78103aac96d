"""The chart's monitoring: alert rules through promtool (`check rules`, and `test rules` with
input series for every alert), and the Grafana dashboard: each panel expression parses
(promtool) and reads only metrics the server or the operator exports."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, by_kind, one
from monitoring_support import dashboard_targets, expand, exported_names, metric_names

PROMTOOL_TESTS = Path(__file__).parent / "prometheus" / "alerts-test.yaml"
ALERTS = {
    "VoicefleetPodNotReady", "VoicefleetReplicasUnavailable", "VoicefleetRedisDown",
    "VoicefleetHighErrorRate", "VoicefleetSheddingLoad", "VoicefleetSlowFirstAudio",
    "VoicefleetQueueGrowingAtMaxReplicas", "VoicefleetGpuMemoryHigh",
    "VoicefleetAudioAnomalies", "VoicefleetMemoryGuardRestarts",
}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: scripts/bootstrap.sh installs Debian's prometheus")
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    proc = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def rule_groups(render: Any) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = one(render("monitoring"), "PrometheusRule")["spec"]["groups"]
    return groups


def test_rules_pass_promtool_check(render: Any, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(render)}))
    out = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_every_alert_has_promtool_unit_tests(render: Any, tmp_path: Path) -> None:
    groups = rule_groups(render)
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert alerts == ALERTS
    tested = {
        case["alertname"]
        for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == ALERTS, f"alerts never seen firing in a test: {ALERTS - tested}"
    # The team label from alertLabels is on every alert; the unit tests use the defaults.
    for group in groups:
        for rule in group["rules"]:
            assert rule["labels"]["team"] == "speech"
            rule["labels"].pop("team")
            rule.pop("annotations")  # checked by `check rules`; tests compare labels
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "alerts-test.yaml")
    run_promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)


def test_alerts_read_only_exported_metrics(render: Any) -> None:
    known = exported_names()
    for group in rule_groups(render):
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, f"{rule['alert']} reads {unknown}, which nothing exports"


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    targets = dashboard_targets()
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expand(expr)}
        for i, (_, _, expr) in enumerate(targets)
    ]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    out = run_promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(targets)} rules found" in out


def test_dashboard_reads_only_exported_metrics() -> None:
    known = exported_names()
    assert "voicefleet_gpu_utilization_ratio" in known  # the GPU series are counted too
    read: set[str] = set()
    for title, legend, expr in dashboard_targets():
        names = metric_names(expr)
        assert names, f"{title} / {legend}: no metric read"
        assert not names - known, f"{title} / {legend} reads {names - known}: not exported"
        read |= names
    # The panels the issue asks for, by what they read.
    for needed in (
        "voicefleet_audio_seconds_total", "voicefleet_real_time_factor_bucket",
        "voicefleet_time_to_first_audio_seconds_bucket", "voicefleet_queued_audio_seconds",
        "voicefleet_queue_depth", "voicefleet_batch_size_sum",
        "voicefleet_batch_padding_waste_ratio_sum", "voicefleet_gpu_memory_used_bytes",
        "voicefleet_gpu_memory_budget_bytes", "voicefleet_gpu_utilization_ratio",
        "voicefleet_output_snr_db_bucket", "voicefleet_output_anomalies_total",
        "voicefleet_requests_total", "voicefleet_ready", "voicefleet_operator_service_replicas",
    ):  # fmt: skip
        assert needed in read, f"no panel shows {needed}"


def test_name_extraction_sees_what_it_must() -> None:
    expr = (
        'sum by (le, pod) (rate(voicefleet_x_bucket{route=~"/v1/.*", a="b"}[5m] offset 1m))'
        " / on (pod) group_left (kind) voicefleet_y > 1e10 and bool voicefleet_z"
    )
    assert metric_names(expr) == {"voicefleet_x_bucket", "voicefleet_y", "voicefleet_z"}


def test_dashboard_configmap_for_grafanas_sidecar(render: Any) -> None:
    docs = render("monitoring")
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "TTS"}
    board = json.loads(cm["data"]["voicefleet.json"])
    assert board == json.loads((CHART / "files" / "grafana" / "voicefleet.json").read_text())
    assert {v["name"] for v in board["templating"]["list"]} == {
        "datasource", "namespace", "service",
    }  # fmt: skip


def test_operator_metrics_port_and_pod_monitor(render: Any) -> None:
    docs = render("monitoring")
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VOICEFLEET_METRICS_PORT"] == str(port)
    monitor = one(docs, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kps"
    # Off by default: a plain install renders none of it.
    assert not by_kind(render("default"), "PrometheusRule")
    assert not by_kind(render("default"), "PodMonitor")
