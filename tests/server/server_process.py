"""Starts real `voicefleet serve` processes (uvicorn on 127.0.0.1) for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        self.terminate(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    model_dir: str | None,
    log_dir: Path,
    *args: str,
    ready_timeout: float = 90,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """`voicefleet serve` on a free port, returned once /readyz answers 200. `model_dir`
    None: no --model flag (the server's default voice); `env` adds environment variables."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "VOICEFLEET_LOG_LEVEL": "warning"} | (env or {})
    model_args = [] if model_dir is None else ["--model", model_dir]
    command = [
        sys.executable,
        "-m",
        "voicefleet",
        "serve",
        *model_args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready in {ready_timeout}s:\n{server.log()}")
