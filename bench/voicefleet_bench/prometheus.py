"""A real Prometheus for tests and dashboard pictures: Debian's `prometheus` binary on
127.0.0.1 scraping given targets every second, and its HTTP query API.

Every wait raises on timeout (with what it last saw); nothing here retries silently.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout:g}s (last: {last!r})")
        time.sleep(every)


@dataclass(frozen=True)
class Target:
    """A /metrics endpoint and the labels the cluster's scrape config would give it."""

    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)
    honor_labels: bool = False  # the operator's series name their own namespace/service


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self._api("query", params)

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        return self._api("query_range", {"query": expr, "start": start, "end": end, "step": step})

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        """The single value of an instant query, None when it returns nothing."""
        result = self.query(expr, at)
        if not result:
            return None
        if len(result) != 1:
            raise ValueError(f"{expr} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def rules(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/rules", timeout=10)
        response.raise_for_status()
        return [rule for g in response.json()["data"]["groups"] for rule in g["rules"]]

    def _api(self, endpoint: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/{endpoint}", params=dict(params), timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise ValueError(f"{endpoint} {params.get('query')!r}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise FileNotFoundError(
            "prometheus not found: scripts/bootstrap.sh installs Debian's prometheus package"
        )
    return found


def start_prometheus(
    targets: Sequence[Target],
    workdir: Path,
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    ready_timeout: float = 60,
) -> Prometheus:
    """Start Prometheus scraping `targets` every `interval` (and evaluating `rule_files`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index, target in enumerate(targets):
        jobs.append(
            {
                "job_name": f"target-{index}",
                "honor_labels": target.honor_labels,
                "static_configs": [{"targets": [target.address], "labels": dict(target.labels)}],
            }
        )
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": jobs,
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited {process.returncode}:\n{log_path.read_text()}")
        return httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200

    try:
        wait_for(ready, ready_timeout, "prometheus ready")
    except BaseException:
        prometheus.stop()
        raise
    return prometheus
