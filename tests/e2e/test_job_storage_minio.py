"""Long-form job audio in MinIO on a real cluster: a VoiceService with `storage.s3`.

MinIO runs in the test namespace (image VOICEFLEET_E2E_MINIO_IMAGE); the bucket is created
through a port-forward. The VoiceService reaches MinIO by its Service name, so the presigned
URLs it hands out name that host: they are fetched from inside the cluster (`kubectl exec`
into a server pod, plain urllib). Unlike moto in the fast suite, MinIO checks signatures
and expiry, so this is where a tampered URL must be refused.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from e2e_support import SERVER_IMAGE, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MINIO_IMAGE = os.environ.get("VOICEFLEET_E2E_MINIO_IMAGE", "quay.io/minio/minio:latest")
NAME = "tiny-s3"
BUCKET = "voicefleet-jobs"
KEY_ID, SECRET = "voicefleet", "voicefleet-e2e-secret"


def minio(namespace: str) -> list[dict[str, Any]]:
    labels = {"app": "minio"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "minio", "namespace": namespace, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{
                        "name": "minio",
                        "image": MINIO_IMAGE,
                        "args": ["server", "/data"],
                        "env": [{"name": "MINIO_ROOT_USER", "value": KEY_ID},
                                {"name": "MINIO_ROOT_PASSWORD", "value": SECRET}],
                        "ports": [{"containerPort": 9000}],
                        "readinessProbe": {"httpGet": {"path": "/minio/health/ready",
                                                       "port": 9000}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }], "volumes": [{"name": "data", "emptyDir": {}}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "minio", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 9000, "targetPort": 9000}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "minio-keys", "namespace": namespace},
            "stringData": {"user": KEY_ID, "password": SECRET},
        },
    ]


def voice_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"variant": "/opt/models/tiny-vits", "dtype": "float32"},
            "autoscaling": {"mode": "none"},
            "replicas": 1,
            "redis": {"enabled": False},  # records in the pod; audio in MinIO
            "storage": {"s3": {
                "bucket": BUCKET, "prefix": "e2e",
                "endpointUrl": f"http://minio.{namespace}.svc:9000", "region": "us-east-1",
                "credentialsSecretRef": {"name": "minio-keys", "accessKeyIdKey": "user",
                                         "secretAccessKeyKey": "password"},
            }},
            "image": SERVER_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "drainSeconds": 5,
            "resources": {"gpus": 0, "requests": {"cpu": "250m", "memory": "512Mi"},
                          "limits": {"memory": "2Gi"}},
        },
    }


@pytest.fixture(scope="module")
def s3(cluster: Cluster, namespace: str) -> Iterator[Any]:
    """boto3 against MinIO through a port-forward, with the bucket created."""
    for manifest in minio(namespace):
        cluster.apply(manifest)
    cluster.run("rollout", "status", "deployment/minio", "-n", namespace, "--timeout=300s",
                timeout=320)
    with cluster.port_forward("service/minio", namespace, 9000) as port:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                              aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                              region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="module")
def service_url(cluster: Cluster, namespace: str, release: str, s3: Any) -> Iterator[str]:
    cluster.apply(voice_service(namespace))

    def ready() -> bool:
        obj = cluster.get("voiceservice", NAME, namespace) or {}
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    try:
        cluster.wait_for("VoiceService with S3 storage Ready", ready, timeout=600)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.describe(namespace)}") from None
    with cluster.port_forward(f"service/{NAME}", namespace, 8000) as port:
        yield f"http://127.0.0.1:{port}"
    cluster.run("delete", "voiceservice", NAME, "-n", namespace, "--wait=true", timeout=180)


def fetch_in_cluster(cluster: Cluster, namespace: str, url: str) -> tuple[int, int]:
    """(HTTP status, body bytes) of a GET from inside a server pod, with plain urllib."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        "    body = urllib.request.urlopen(sys.argv[1], timeout=20).read()\n"
        "    print(200, len(body))\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, 0)\n"
    )
    out = cluster.run("exec", "-n", namespace, f"deployment/{NAME}", "--", "python", "-c",
                      script, url).stdout.split()
    return int(out[0]), int(out[1])


def test_presigned_urls_work_from_the_cluster_and_delete_removes_the_objects(
    cluster: Cluster, namespace: str, service_url: str, s3: Any
) -> None:
    with httpx.Client(base_url=service_url, timeout=60) as client:
        text = " ".join(f"Sentence number {i} of the storage test." for i in range(24))
        created = client.post("/v1/audio/jobs", json={"input": text, "response_format": "wav"})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 300
        while (job := client.get(f"/v1/audio/jobs/{job_id}").json())["status"] not in (
            "succeeded", "failed", "cancelled"
        ):
            assert time.monotonic() < deadline, f"job still {job['status']}"
            time.sleep(1)
        assert job["status"] == "succeeded", json.dumps(job)
        chunk = job["chunks"][0]
        assert chunk["url"].startswith(f"http://minio.{namespace}.svc:9000/{BUCKET}/e2e/")
        status, size = fetch_in_cluster(cluster, namespace, chunk["url"])
        assert status == 200 and size > 0
        # MinIO checks the signature: the same URL for another key is refused.
        forged = chunk["url"].replace("chunk-00000", "chunk-00001")
        assert fetch_in_cluster(cluster, namespace, forged)[0] == 403
        redirect = client.get(f"/v1/audio/jobs/{job_id}/audio", follow_redirects=False)
        assert redirect.status_code == 307
        status, size = fetch_in_cluster(cluster, namespace, redirect.headers["location"])
        assert status == 200 and size > 44
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"e2e/{job_id}/").get("Contents", [])
        assert len(listed) == job["chunks_total"] + 1
        assert client.delete(f"/v1/audio/jobs/{job_id}").json()["deleted"] is True
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"e2e/{job_id}/").get("KeyCount") == 0
