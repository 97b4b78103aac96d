"""helm lint and helm template over several values sets; every rendered object is checked.

Built-in kinds go through kubernetes-validate in strict mode (real Kubernetes schemas: types
and unknown fields). Custom resources are checked against the CRDs the chart ships where we
own them (VoiceService, kopf peering) and field by field where we do not (ServiceMonitor,
ScaledObject).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_support import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    by_kind,
    one,
)
from k8s_lists import duplicate_list_map_keys

CUSTOM_GROUPS = ("voicefleet.dev/", "kopf.dev/", "monitoring.coreos.com/")


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema for every CRD in the chart's crds/ folder."""
    schemas = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def as_jsonschema(schema: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema: drop the Kubernetes extension keys that
    jsonschema does not know and that would otherwise be ignored silently anyway."""
    if isinstance(schema, dict):
        return {k: as_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if isinstance(schema, list):
        return [as_jsonschema(v) for v in schema]
    return schema


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_strict(helm, values_file, values: str) -> None:
    proc = helm.run(
        "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, "-f", str(values_file(values)),
    )
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_builtin_object_passes_strict_kubernetes_validation(render, values: str) -> None:
    docs = render(values)
    builtin = [d for d in docs if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert builtin, "nothing rendered"
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_custom_resources_match_the_chart_crds(render, values: str) -> None:
    schemas = crd_schemas()
    for doc in render(values):
        key = (doc["apiVersion"], doc["kind"])
        if key in schemas:
            jsonschema.validate(doc, as_jsonschema(schemas[key]))
        else:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" or not (
                doc["apiVersion"].startswith(CUSTOM_GROUPS)
            ), f"no schema to check {key} against"


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_names_labels_and_namespaces(render, values: str) -> None:
    for doc in render(values):
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63 and not meta["name"].endswith("-"), meta["name"]
        if doc["kind"] == "CustomResourceDefinition":
            continue
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "voicefleet"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "voicefleet-0.1.0"
        cluster_scoped = doc["kind"] in {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
        assert ("namespace" in meta) is not cluster_scoped, doc["kind"]


def test_default_render_is_the_minimal_install(render) -> None:
    kinds = sorted(d["kind"] for d in render("default"))
    assert kinds == sorted([
        "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition",
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
    ])


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_operator_deployment_is_hardened_and_single(render) -> None:
    deploy = one(render("default"), "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "a rolling update would run two operators"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["serviceAccountName"] == one(render("default"), "ServiceAccount")["metadata"]["name"]
    container = operator_container(render("default"))
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["command"] == ["voicefleet", "operator"]
    # the selector must match the pod template, and must not carry the version label
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/version" not in selector


def test_liveness_probe_hits_the_kopf_liveness_endpoint(render) -> None:
    container = operator_container(render("default"))
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    port = next(p for p in container["ports"] if p["name"] == probe["port"])
    assert port["containerPort"] == 8080


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), f"env names repeat: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_no_list_map_key_repeats_in_anything_rendered(render, values: str) -> None:
    """env by name, containers, volumes, ports, volumeMounts...: a repeat is an error under
    server-side apply (Helm 4), so `helm install` could fail on a real cluster."""
    repeats = {
        f"{doc['kind']}/{doc['metadata']['name']}": found
        for doc in render(values)
        if (found := duplicate_list_map_keys(doc))
    }
    assert repeats == {}


def test_the_repeat_check_sees_repeats() -> None:
    pod = {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"},
                                             {"name": "X", "value": "2"}],
                        "ports": [{"name": "http", "containerPort": 80},
                                  {"name": "metrics", "containerPort": 80, "protocol": "TCP"}],
                        "volumeMounts": [{"name": "v", "mountPath": "/m"},
                                         {"name": "w", "mountPath": "/m"}]},
                       {"name": "a"}],
        "volumes": [{"name": "v"}, {"name": "v", "emptyDir": {}}],
    }}}}
    assert sorted(duplicate_list_map_keys(pod)) == sorted([
        ".spec.template.spec.containers: name=a repeated",
        ".spec.template.spec.containers[0].env: name=X repeated",
        ".spec.template.spec.containers[0].ports: containerPort=80, protocol=TCP repeated",
        ".spec.template.spec.containers[0].volumeMounts: mountPath=/m repeated",
        ".spec.template.spec.volumes: name=v repeated",
    ])
    clean = {"spec": {"containers": [{"name": "a", "env": [{"name": "X"}, {"name": "Y"}]}]}}
    assert duplicate_list_map_keys(clean) == []


def test_operator_args_follow_the_watch_scope_and_peering(render) -> None:
    default = operator_container(render("default"))["args"]
    assert "--all-namespaces" in default and "--standalone" in default
    assert not [a for a in default if a.startswith(("--namespace", "--peering"))]

    namespaced = operator_container(render("namespaced"))["args"]
    assert "--namespace=tts" in namespaced and "--all-namespaces" not in namespaced

    full = operator_container(render("full"))["args"]
    assert "--peering=voicefleet" in full and "--priority=100" in full
    assert "--standalone" not in full and "--verbose" in full
    peering = one(render("full"), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "voicefleet"

    ns_peering = one(render("namespaced-full"), "KopfPeering")
    assert ns_peering["metadata"]["namespace"] == NAMESPACE  # watch.namespace empty: release ns
    assert f"--namespace={NAMESPACE}" in operator_container(render("namespaced-full"))["args"]


def test_images_and_overrides(render) -> None:
    container = operator_container(render("default"))
    assert container["image"] == "ghcr.io/voicefleet/voicefleet-operator:0.1.0"
    env = env_of(container)
    assert env["VOICEFLEET_SERVER_IMAGE"] == "ghcr.io/voicefleet/voicefleet-server:0.1.0"
    assert env["VOICEFLEET_RECONCILE_INTERVAL_SECONDS"] == "15"
    assert "VOICEFLEET_REDIS_IMAGE" not in env  # empty: the operator's own default

    docs = render("overrides")
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/voicefleet/voicefleet-operator@sha256:" + "a" * 64
    assert env_of(container)["VOICEFLEET_SERVER_IMAGE"] == "registry.example.com/tts/server:1.2.3"
    assert env_of(container)["EXTRA"] == "1"
    assert env_of(container)["VOICEFLEET_REDIS_IMAGE"] == "redis:7.4.2-alpine"
    assert env_of(container)["VOICEFLEET_GUARD_INTERVAL_SECONDS"] == "2.5"
    assert container["args"][-1] == "--verbose" and "--log-format=json" in container["args"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert not by_kind(docs, "ServiceAccount"), "serviceAccount.create=false must not create one"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "existing-sa", "namespace": NAMESPACE}
    ]
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            assert doc["metadata"]["labels"]["team"] == "speech"
            assert doc["metadata"]["name"].startswith("a-very-long-platform-team-release")


def test_service_monitor_selects_the_operator_children(render) -> None:
    sm = one(render("full"), "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"] == {"matchLabels": {
        "app.kubernetes.io/managed-by": "voicefleet", "app.kubernetes.io/component": "server",
    }}
    assert sm["spec"]["namespaceSelector"] == {"any": True}
    assert sm["spec"]["podTargetLabels"] == ["voicefleet.dev/service"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout",
                             "relabelings", "metricRelabelings"}

    ns_sm = one(render("namespaced-full"), "ServiceMonitor")
    assert ns_sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_prometheus_adapter_rule_serves_the_hpa_metric(render) -> None:
    cm = one(render("full"), "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    config = yaml.safe_load(cm["data"]["config.yaml"])
    (rule,) = config["rules"]
    assert rule["seriesQuery"].startswith("voicefleet_queued_audio_seconds{")
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"}, "pod": {"resource": "pod"},
    }
    assert rule["name"]["as"] == "voicefleet_queued_audio_seconds"
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_the_chart_makes_no_autoscaler_of_its_own(render, values: str) -> None:
    """The operator owns each VoiceService's one autoscaler (HPA or, with mode keda, a KEDA
    ScaledObject): a second one from the chart would fight it."""
    kinds = {d["kind"] for d in render(values)}
    assert not kinds & {"ScaledObject", "HorizontalPodAutoscaler"}


def test_notes_render_for_every_values_set(helm, values_file) -> None:
    # NOTES.txt is only rendered by install/upgrade; a dry-run install needs no cluster.
    for values in VALUE_SETS:
        proc = helm.run(
            "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
            "-f", str(values_file(values)),
        )
        notes = proc.stdout.split("NOTES:", 1)[1]
        assert "kubectl" in notes and "VoiceService" in notes
