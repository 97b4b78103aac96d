"""values.yaml is documented and values.schema.json rejects what would break an install."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import CHART, NAMESPACE, RELEASE

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()


def test_schema_is_valid_draft7_and_accepts_the_defaults() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(yaml.safe_load(VALUES_TEXT), SCHEMA)


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("two operators", {"operator": {"replicaCount": 2}}, "/operator/replicaCount"),
    ("unknown scope", {"operator": {"watch": {"scope": "everywhere"}}}, "/operator/watch/scope"),
    ("typo at top level", {"operatr": {}}, "operatr"),
    ("typo nested", {"operator": {"imag": {}}}, "imag"),
    ("bad digest", {"operator": {"image": {"digest": "latest"}}}, "/operator/image/digest"),
    ("empty repository", {"server": {"image": {"repository": ""}}}, "/server/image/repository"),
    ("bad pull policy", {"operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy"),
    ("privileged port", {"operator": {"healthPort": 80}}, "/operator/healthPort"),
    ("log format", {"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ("resources as string", {"operator": {"resources": "lots"}}, "/operator/resources"),
    ("guard interval zero", {"operator": {"settings": {"guardIntervalSeconds": 0}}},
     "guardIntervalSeconds"),
    ("extra arg not a flag", {"operator": {"extraArgs": ["standalone"]}}, "/operator/extraArgs"),
    ("sa without name", {"serviceAccount": {"create": False}}, "allOf"),
    ("bad sample name", {"sampleVoiceService": {"name": "Bad_Name"}}, "/sampleVoiceService/name"),
    ("sample without model", {"sampleVoiceService": {"spec": {"model": None}}}, "model"),
    ("scrape interval", {"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
    ("metric name", {"autoscaling": {"metricName": "queued audio"}}, "/autoscaling/metricName"),
    ("adapter query without series",
     {"autoscaling": {"prometheusAdapter": {"metricsQuery": "sum(up)"}}}, "metricsQuery"),
    # The operator makes the KEDA ScaledObject (spec.autoscaling.mode keda); the chart no more.
    ("keda values are gone", {"autoscaling": {"keda": {"enabled": True}}}, "keda"),
]


@pytest.mark.parametrize(("bad", "where"), [(b[1], b[2]) for b in BAD_VALUES],
                         ids=[b[0] for b in BAD_VALUES])
def test_helm_rejects_bad_values(helm, tmp_path: Path, bad: dict[str, Any], where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(path),
                    check=False)
    assert proc.returncode != 0, f"helm accepted {bad}"
    assert "schema" in proc.stderr and where in proc.stderr, proc.stderr


@pytest.mark.parametrize(("extra_env", "message"), [
    ([{"name": "HOME", "value": "/home"}], "HOME is set by the chart"),
    ([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}], "A is given twice"),
])
def test_extra_env_cannot_repeat_a_name(
    helm, tmp_path: Path, extra_env: list[dict[str, str]], message: str
) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump({"operator": {"extraEnv": extra_env}}))
    proc = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(path),
                    check=False)
    assert proc.returncode != 0, "helm rendered a repeated env name"
    assert message in proc.stderr, proc.stderr


def test_good_non_default_values_pass(helm, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump({
        "operator": {"replicaCount": 0, "image": {"tag": "0.2.0-rc.1"}, "logLevel": "debug"},
        "autoscaling": {"prometheusAdapter": {"enabled": True}},
        "serviceMonitor": {"interval": "1m30s"},
    }))
    helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(path))


DOCUMENTED_AS_BLOCK = {"resources", "spec"}
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):")


def schema_leaves(
    schema: dict[str, Any], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    """Paths of the values the schema declares, mapped to their sub-schema."""
    out = {}
    for name, sub in schema.get("properties", {}).items():
        path = (*prefix, name)
        out[path] = sub
        if sub.get("type") == "object" and "properties" in sub:
            out.update(schema_leaves(sub, path))
    return out


def test_every_value_is_commented() -> None:
    """Each value the schema declares has a comment right above it in values.yaml. A mapping
    without a comment of its own (a group such as `operator.image`) needs one on each of its
    keys instead. Kubernetes-shaped blocks (`resources`, the sample `spec`) are documented at
    their own key and their content is not checked line by line."""
    declared = schema_leaves(SCHEMA)
    stack: list[tuple[int, str]] = []
    seen: set[tuple[str, ...]] = set()
    commented: set[tuple[str, ...]] = set()
    previous = ""
    for line in VALUES_TEXT.splitlines():
        match = KEY.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            path = tuple(k for _, k in stack)
            documented_above = any(path[:i] in commented for i in range(1, len(path))
                                   if path[i - 1] in DOCUMENTED_AS_BLOCK)
            if path in declared and not documented_above:
                seen.add(path)
                if previous.lstrip().startswith("#"):
                    commented.add(path)
                else:
                    sub = declared[path]
                    is_group = sub.get("type") == "object" and "properties" in sub
                    assert is_group, f"{'.'.join(path)} has no comment"
        if line.strip():
            previous = line
    missing = {
        p for p in declared
        if p not in seen and p != ("global",)
        and not any(p[:i] in commented for i in range(1, len(p)) if p[i - 1] in DOCUMENTED_AS_BLOCK)
    }
    assert not missing, f"declared in the schema but absent from values.yaml: {sorted(missing)}"


def test_every_schema_property_is_described() -> None:
    undocumented = [".".join(p) for p, s in schema_leaves(SCHEMA).items()
                    if not s.get("description")]
    assert not undocumented
