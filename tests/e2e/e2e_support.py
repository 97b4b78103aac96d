"""kubectl/helm wrappers and settings of the real-cluster suite (see conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voicefleet"
OPERATOR_IMAGE = os.environ.get("VOICEFLEET_E2E_OPERATOR_IMAGE", "voicefleet-operator:e2e")
SERVER_IMAGE = os.environ.get("VOICEFLEET_E2E_SERVER_IMAGE", "voicefleet-server:cpu-tiny-e2e")
KEEP = os.environ.get("VOICEFLEET_E2E_KEEP") == "1"
WITH_REDIS = os.environ.get("VOICEFLEET_E2E_REDIS") == "1"


def tool(name: str) -> str:
    found = shutil.which(name) or str(ROOT / ".cache" / "tools" / "bin" / name)
    if not os.access(found, os.X_OK):
        pytest.fail(f"{name} not found: run scripts/fetch-helm.sh (`make setup`)", pytrace=False)
    return found


def split_image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    if not repository or "/" in tag:
        return ref, "latest"
    return repository, tag


@dataclass
class Cluster:
    kubectl: str
    helm: str

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl, *args], input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def helm_run(self, *args: str, timeout: float = 600) -> str:
        proc = subprocess.run([self.helm, *args], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", input=json.dumps(manifest))

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float,
                 interval: float = 3.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def describe(self, namespace: str) -> str:
        """Everything worth reading when a wait times out."""
        parts = []
        for args in (("get", "voiceservices,deploy,svc,hpa,pdb,pods", "-o", "wide"),
                     ("get", "events", "--sort-by=.lastTimestamp"),
                     ("logs", "-l", "app.kubernetes.io/component=operator", "--tail=100")):
            proc = self.run(*args, "-n", namespace, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)

    @contextmanager
    def port_forward(self, target: str, namespace: str, port: int) -> Iterator[int]:
        """kubectl port-forward to a random local port; yields that port."""
        proc = subprocess.Popen(
            [self.kubectl, "port-forward", "-n", namespace, target, f":{port}",
             "--address", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not match:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"port-forward failed: {line}{err}")
            yield int(match[1])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
