"""Fixtures for the real-cluster suite: kubectl/helm wrappers, a throwaway namespace with the
chart installed in it, and a port-forward helper.

Runs only with `--e2e` (`make e2e`) against the current kubeconfig context (kind, k3d or any
cluster). Images are not built here; build and load them first (docs/helm.md):

    docker build -f Dockerfile.operator -t voicefleet-operator:e2e .
    docker build -f Dockerfile.server --target server-cpu -t voicefleet-server:cpu-tiny-e2e .
    kind load docker-image voicefleet-operator:e2e voicefleet-server:cpu-tiny-e2e

Environment: VOICEFLEET_E2E_OPERATOR_IMAGE, VOICEFLEET_E2E_SERVER_IMAGE (repository:tag),
VOICEFLEET_E2E_KEEP=1 keeps the namespace and release for debugging, VOICEFLEET_E2E_REDIS=1
lets the operator run Redis for the service (pulls the redis image),
VOICEFLEET_E2E_STORAGE_CLASS names the storage class of the model-cache test's claim
(default: the cluster's default class; the claim is ReadWriteOnce).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from e2e_support import CHART, KEEP, OPERATOR_IMAGE, SERVER_IMAGE, Cluster, split_image, tool


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    c = Cluster(tool("kubectl"), tool("helm"))
    proc = c.run("version", "-o", "json", check=False, timeout=30)
    if proc.returncode != 0:
        pytest.fail(f"no reachable cluster in the current kubeconfig: {proc.stderr.strip()}",
                    pytrace=False)
    return c


@pytest.fixture(scope="session")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"vf-e2e-{uuid.uuid4().hex[:8]}"
    cluster.run("create", "namespace", name)
    yield name
    if not KEEP:
        cluster.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def release(cluster: Cluster, namespace: str) -> Iterator[str]:
    """The chart, installed namespace-scoped (Role, not ClusterRole) so parallel runs and other
    installs on the same cluster do not interfere. The CRD itself is cluster-wide."""
    name = "vf-e2e"
    op_repo, op_tag = split_image(OPERATOR_IMAGE)
    srv_repo, srv_tag = split_image(SERVER_IMAGE)
    cluster.helm_run(
        "upgrade", "--install", name, str(CHART), "--namespace", namespace, "--wait",
        "--timeout", "5m",
        "--set", "operator.watch.scope=namespace",
        "--set", f"operator.image.repository={op_repo}",
        "--set", f"operator.image.tag={op_tag}",
        "--set", "operator.logLevel=verbose",
        "--set", "operator.settings.reconcileIntervalSeconds=5",
        "--set", f"server.image.repository={srv_repo}",
        "--set", f"server.image.tag={srv_tag}",
    )
    yield name
    if not KEEP:
        subprocess.run([cluster.helm, "uninstall", name, "--namespace", namespace, "--wait"],
                       capture_output=True, timeout=300)
