"""The CRD: structure, descriptions, printer columns, and examples valid under its schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from voicefleet_operator import naming
from voicefleet_operator.spec import parse_spec

from voicefleet import defaults

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "voiceservices.voicefleet.dev.yaml"
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))
# The example the rejection tests break one field of (it has no model cache).
BASE = ROOT / "crds" / "examples" / "external-redis-cpu-scaling.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def cel_rules(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                             dict[str, Any]]]:
    """Every x-kubernetes-validations rule in the schema, with the object path it applies to."""
    found = [(path, rule) for rule in node.get("x-kubernetes-validations") or []]
    for key, child in (node.get("properties") or {}).items():
        found += cel_rules(child, (*path, key))
    return found


def validate(schema: dict[str, Any], doc: dict[str, Any]) -> None:
    """What the API server checks: the structural schema, then every CEL rule whose object
    is present (the rules' own has() guards cover absent fields)."""
    jsonschema.Draft7Validator(schema).validate(doc)
    environment = celpy.Environment()
    for path, rule in cel_rules(schema):
        target: Any = doc
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if target is None:
            continue
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(target)}):
            raise jsonschema.ValidationError(f"{'.'.join(path) or '<root>'}: {rule['message']}")


def test_identity(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == f"{naming.PLURAL}.{naming.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == naming.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == naming.KIND
    assert spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert version["name"] == naming.VERSION
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }}
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    assert properties["spec"]["properties"]["replicas"]["type"] == "integer"
    assert properties["status"]["properties"]["replicas"]["type"] == "integer"
    assert properties["status"]["properties"]["selector"]["type"] == "string"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Model"] == ".spec.model.variant"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Window"] == ".spec.batching.windowMs"
    assert columns["VRAM"] == ".spec.vram.budget"
    assert columns["Age"] == ".metadata.creationTimestamp"


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        found += walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    return found


def test_every_spec_and_status_field_is_described_and_typed(schema: dict[str, Any]) -> None:
    for section in ("spec", "status"):
        for path, node in walk(schema["properties"][section], section):
            assert node.get("description") or path.endswith("[]"), f"{path} has no description"
            assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path} untyped"


def test_defaults_are_the_shared_serving_defaults(schema: dict[str, Any]) -> None:
    """The CRD, the operator's parser and the server's flags default to the same numbers."""
    spec = schema["properties"]["spec"]["properties"]
    batching = spec["batching"]["properties"]
    assert batching["windowMs"]["default"] == defaults.BATCH_WINDOW_MS
    assert batching["maxBatchSize"]["default"] == defaults.MAX_BATCH_SIZE
    assert batching["maxQueue"]["default"] == defaults.MAX_QUEUE
    assert spec["vram"]["properties"]["watermarkPercent"]["default"] == (
        defaults.VRAM_WATERMARK_PERCENT)
    assert spec["drainSeconds"]["default"] == defaults.DRAIN_SECONDS
    parsed = parse_spec({"model": {"variant": "m"}}, default_image="img")
    assert (parsed.batching.window_ms, parsed.batching.max_batch_size,
            parsed.batching.max_queue, parsed.vram.watermark_percent,
            parsed.drain_seconds) == (
        batching["windowMs"]["default"], batching["maxBatchSize"]["default"],
        batching["maxQueue"]["default"], spec["vram"]["properties"]["watermarkPercent"]["default"],
        spec["drainSeconds"]["default"])


def test_defaults_and_validation_rules(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["batching"]["properties"]["windowMs"]["minimum"] == 1
    assert spec["redis"]["properties"]["enabled"]["default"] is True
    rules = [r["rule"] for r in spec["autoscaling"]["x-kubernetes-validations"]]
    assert any("self.minReplicas <= self.maxReplicas" in r for r in rules)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_and_parse(schema: dict[str, Any], path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == naming.API_VERSION and doc["kind"] == naming.KIND
    validate(schema, doc)
    parse_spec(doc["spec"], default_image="img")  # and the operator accepts it too


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (("batching", "windowMs"), 0),
        (("vram", "watermarkPercent"), 40),
        (("vram", "watermarkPercent"), 100),
        (("vram", "budget"), "8 GB"),
        (("model", "dtype"), "int8"),
        (("autoscaling", "metric"), "requests"),
        (("redis", "url"), "http://redis"),
        (("resources", "gpus"), -1),
        (("auth", "apiKeySecretRef"), {"key": "k"}),
        (("auth", "apiKeySecretRef"), {"name": "Bad_Name"}),
        (("resources", "gpus"), 2),
        (("resources", "gpuResource"), "gpu"),
        (("rollout", "strategy"), "yolo"),
        (("autoscaling", "mode"), "auto"),
        (("autoscaling", "prometheusUrl"), "prometheus:9090"),
        (("model", "cache"), {"size": "lots"}),
        (("model", "cache"), {"accessModes": ["ReadWriteSometimes"]}),
        (("model", "cache"), {"accessModes": []}),
        (("model", "cache"), {"existingClaim": "My_Claim"}),
        (("pod", "env"), [{"value": "no name"}]),
        (("pod", "volumeMounts"), [{"name": "v"}]),
        (("pod", "imagePullSecrets"), ["regcred"]),
        (("pod", "labels"), {"team": 7}),
        (("storage", "s3"), {"prefix": "p"}),
        (("storage", "s3"), {"bucket": "vf"}),
        (("storage", "s3"), {"bucket": "voicefleet-jobs", "endpointUrl": "minio:9000"}),
        (("storage", "s3"), {"bucket": "voicefleet-jobs", "credentialsSecretRef": {}}),
    ],
)
def test_schema_rejects(schema: dict[str, Any], field: tuple[str, str], value: Any) -> None:
    doc = copy.deepcopy(yaml.safe_load(BASE.read_text()))
    validate(schema, doc)  # the example itself is fine
    doc["spec"].setdefault(field[0], {})[field[1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(schema, doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "must not exceed"),
        ({"autoscaling": {"mode": "keda"}}, "prometheusUrl is required"),
        ({"replicas": -1}, "minimum"),
        ({"metadata": {"name": "a" * 52}, "model": {"variant": "m", "cache": {}}},
         "at most 51 characters"),
    ],
)
def test_cross_field_rules_reject(
    schema: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    """The CEL rules fire (evaluated with cel-python, as the API server would)."""
    doc = copy.deepcopy(yaml.safe_load(BASE.read_text()))
    metadata = change.pop("metadata", {})
    doc["metadata"].update(metadata)
    doc["spec"].update(change)
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate(schema, doc)


def test_cross_field_rules_accept_what_they_should(schema: dict[str, Any]) -> None:
    doc = copy.deepcopy(yaml.safe_load(BASE.read_text()))
    doc["metadata"]["name"] = "a" * 52  # long names are fine without a cache
    doc["spec"]["autoscaling"] = {"mode": "keda", "metric": "cpu", "target": 60}
    validate(schema, doc)
    doc["spec"]["autoscaling"] = {"mode": "keda", "prometheusUrl": "http://prom:9090"}
    doc["spec"]["model"]["cache"] = {}
    doc["metadata"]["name"] = "a" * 51
    validate(schema, doc)


def test_schema_requires_a_model(schema: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(schema, {"apiVersion": naming.API_VERSION, "kind": naming.KIND, "spec": {}})


def test_rbac_rules_cover_what_the_operator_calls() -> None:
    rules = yaml.safe_load((ROOT / "operator" / "rbac" / "clusterrole-rules.yaml").read_text())
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("voicefleet.dev", "voiceservices", "watch"),
        ("voicefleet.dev", "voiceservices/status", "patch"),
        ("apps", "deployments", "patch"),
        ("", "pods/eviction", "create"),
        ("", "pods", "list"),
        ("", "events", "create"),
        ("", "secrets", "create"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
        ("kopf.dev", "kopfpeerings", "watch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("zalando.org", "kopfpeerings", "patch"),
        ("networking.k8s.io", "networkpolicies", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("keda.sh", "scaledobjects", "create"),
        ("keda.sh", "scaledobjects", "delete"),
        ("", "persistentvolumeclaims", "create"),
        ("", "persistentvolumeclaims", "get"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "delete"),
    }
    assert needed <= granted
    # Least privilege: nothing is ever replaced wholesale, and secrets are never read.
    assert not any(verb in {"update", "*"} for _, _, verb in granted)
    assert not {("", "secrets", v) for v in ("get", "list", "watch")} & granted
    # Only what a mode switch or a re-fetch removes may be deleted: never a Deployment,
    # a Service, a claim (it holds the cached model) or a Secret.
    deletable = {(group, resource) for group, resource, verb in granted if verb == "delete"}
    assert deletable == {("autoscaling", "horizontalpodautoscalers"), ("keda.sh", "scaledobjects"),
                         ("batch", "jobs"), ("", "pods")}
