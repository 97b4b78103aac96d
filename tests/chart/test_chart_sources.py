"""The chart's copies stay equal to their single sources, and its sample is a valid VoiceService.

crds/ and operator/rbac/ are owned by the operator; the chart embeds copies because a chart
cannot read files outside itself. These tests fail on drift (re-copy the file to fix it).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import CHART, NAMESPACE, ROOT, one

CRD = "voiceservices.voicefleet.dev.yaml"
RULES = ROOT / "operator" / "rbac" / "clusterrole-rules.yaml"
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}


def test_chart_crd_is_byte_identical_to_crds_folder() -> None:
    source = (ROOT / "crds" / CRD).read_bytes()
    copy = (CHART / "crds" / CRD).read_bytes()
    assert copy == source, f"cp crds/{CRD} charts/voicefleet/crds/{CRD}"


def test_chart_rbac_rules_file_is_byte_identical_to_the_operators() -> None:
    copy = (CHART / "files" / "clusterrole-rules.yaml").read_bytes()
    assert copy == RULES.read_bytes(), (
        "cp operator/rbac/clusterrole-rules.yaml charts/voicefleet/files/clusterrole-rules.yaml"
    )


def test_rendered_crds_are_the_chart_crds(render) -> None:
    rendered = {d["metadata"]["name"]: d for d in render("default")
                if d["kind"] == "CustomResourceDefinition"}
    source = yaml.safe_load((ROOT / "crds" / CRD).read_text())
    assert rendered["voiceservices.voicefleet.dev"] == source
    assert set(rendered) == {
        "voiceservices.voicefleet.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev",
    }


def test_cluster_role_rules_equal_the_operators_rules(render) -> None:
    role = one(render("default"), "ClusterRole")
    assert role["rules"] == yaml.safe_load(RULES.read_text())
    binding = one(render("default"), "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    sa = one(render("default"), "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def namespaced_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        resources = [r for r in rule["resources"] if r not in CLUSTER_SCOPED]
        if resources:
            out.append({**rule, "resources": resources})
    return out


def test_namespace_scope_grants_only_a_role_in_the_watched_namespace(render) -> None:
    docs = render("namespaced")
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "tts"
    assert role["rules"] == namespaced_rules(yaml.safe_load(RULES.read_text()))
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "tts"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # the ServiceAccount lives with the operator, in the release namespace
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    # what the operator needs most is still there
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    assert {("voicefleet.dev", "voiceservices"), ("apps", "deployments"),
            ("", "pods/eviction")} <= granted


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / CRD).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return strip_k8s_extensions(version["schema"]["openAPIV3Schema"])


def strip_k8s_extensions(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: strip_k8s_extensions(v) for k, v in schema.items()
                if not k.startswith("x-kubernetes")}
    if isinstance(schema, list):
        return [strip_k8s_extensions(v) for v in schema]
    return schema


def test_sample_voice_service_validates_against_the_crd_schema(render) -> None:
    sample = one(render("full"), "VoiceService")
    assert sample["apiVersion"] == "voicefleet.dev/v1alpha1"
    jsonschema.validate(sample, crd_schema())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert sample["spec"] == values["sampleVoiceService"]["spec"]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("vram", "watermarkPercent"), 10),
        (("batching", "windowMs"), 0),
        (("model", "dtype"), "int3"),
        (("vram", "budget"), "eight gigs"),
    ],
)
def test_crd_schema_check_is_not_vacuous(render, path: tuple[str, str], bad: Any) -> None:
    sample = yaml.safe_load(yaml.safe_dump(one(render("full"), "VoiceService")))
    sample["spec"][path[0]][path[1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sample, crd_schema())
