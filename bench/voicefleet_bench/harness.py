"""Starting and stopping real `voicefleet serve` processes for benchmark scripts and tests.

Owns: locating (or building) the benchmark models, picking a free loopback port, launching
the server as a subprocess with its log in a file, waiting for /readyz, and stopping it
(SIGTERM, then SIGKILL). Also the small shared pieces of the ratio scripts' output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "bench" / "out"


def ensure_model(size: str = "mms", directory: str | os.PathLike[str] | None = None) -> Path:
    """A random-weight VITS checkpoint of `size` ("tiny" or "mms"), written once under bench/out."""
    path = Path(directory) if directory else OUT_DIR / "models" / size
    if not (path / "config.json").exists():
        subprocess.run(
            [sys.executable, "-m", "voicefleet", "make-tiny-model", "--size", size, str(path)],
            check=True, env=_env(), stdout=subprocess.DEVNULL,
        )
    return path


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser every bench/ script starts from: its docstring as help, and the
    model choice (--size / --model) they all share."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("tiny", "mms"), default="mms", help="model size")
    parser.add_argument("--model", help="checkpoint directory (overrides --size)")
    return parser


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return env


class ServerProcess:
    """`voicefleet serve` on 127.0.0.1:<free port> for the duration of a `with` block.

    `extra_args` go to the serve command (e.g. ["--max-batch-size", "1"]). The log goes to
    `log_path` (bench/out/<name>.log by default) and its tail is raised with a failure to start.
    A pod is ready before its CPU tuning has finished (tuning runs in idle gaps); with
    `wait_tuned` (the default) start() also waits for it, so that tuning probes never run in
    the gaps of a measurement. `startup_s`: process start to /readyz 200; `tuned_s`: to tuning
    done; `tuning`: what /readyz reported about it.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None,
        extra_args: Sequence[str] = (),
        *,
        name: str = "server",
        ready_timeout: float = 300.0,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        wait_tuned: bool = True,
    ) -> None:
        self.model = None if model is None else str(model)  # None: the server's default
        self.extra_args = list(extra_args)
        self.name = name
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or OUT_DIR / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.tuned_s: float | None = None
        self.tuning: dict[str, Any] | None = None
        self.wait_tuned = wait_tuned
        self.env = {**_env(), **(env or {})}

    @property
    def command(self) -> list[str]:
        model = [] if self.model is None else ["--model", self.model]
        return [
            sys.executable, "-m", "voicefleet", "serve", *model,
            "--port", str(self.port), *self.extra_args,
        ]

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
        )
        log.close()
        deadline = started + self.ready_timeout
        server_errors = 0  # 503 means "not ready yet"; repeated 500s mean a broken server
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode} before ready:\n"
                        + self.log_tail()
                    )
                try:
                    status = client.get(f"{self.url}/readyz").status_code
                except httpx.HTTPError:
                    status = 0
                if status == 200:
                    if self.startup_s is None:
                        self.startup_s = time.perf_counter() - started
                    if not self.wait_tuned or self._tuned(client):
                        break
                server_errors = server_errors + 1 if status >= 500 and status != 503 else 0
                if server_errors >= 10:
                    self.stop()
                    raise RuntimeError(
                        f"{self.name}: /readyz answers {status} repeatedly:\n{self.log_tail()}"
                    )
                if time.perf_counter() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"{self.name} not ready in {self.ready_timeout} s:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        self.tuned_s = time.perf_counter() - started
        return self

    def _tuned(self, client: httpx.Client) -> bool:
        """Whether /readyz says start-up tuning is over (or that there is none)."""
        try:
            detail = client.get(f"{self.url}/readyz").json()
        except (httpx.HTTPError, ValueError):
            return False
        self.tuning = detail.get("tuning") if isinstance(detail, dict) else None
        return not isinstance(self.tuning, dict) or self.tuning.get("state") not in (
            "pending", "running"
        )

    def rss_mb(self) -> float | None:
        """The server process's resident memory now (None once it has exited)."""
        if self.proc is None:
            return None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        kilobytes = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            None,
        )
        return None if kilobytes is None else kilobytes / 1024

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def report_ratio(name: str, value: float | None, *, target: str | None = None,
                 detail: dict[str, Any] | None = None, json_path: str | None = None) -> None:
    """Print the one ratio a script measures (last line of its output) and optionally save JSON."""
    shown = "n/a" if value is None else f"{value:.3f}"
    suffix = f"  (target {target})" if target else ""
    print(f"RATIO {name} = {shown}{suffix}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        payload = {"ratio": name, "value": value, "target": target, "detail": detail or {}}
        Path(json_path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds used so far by the processes `pids` and their children (espeak-ng)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(entry.name) in pids or int(fields[1]) in pids:
            total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
    return total / tick


def wait_until_quiet(
    pids: Sequence[int], *, idle_share: float = 0.1, window_s: float = 0.5, timeout_s: float = 60
) -> float:
    """Wait until `pids` use under `idle_share` of one core over a `window_s` window: work a
    server goes on with after its client hung up (Piper finishes an abandoned text) must not
    land in the next phase, on either server. Returns the seconds waited; raises on timeout."""
    started = time.monotonic()
    before = cpu_seconds(pids)
    while True:
        time.sleep(window_s)
        now = cpu_seconds(pids)
        if now - before < idle_share * window_s:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"processes {list(pids)} still busy after {timeout_s:g}s")
        before = now


def line_buffered_stdout() -> None:
    """Print each line as it comes, also into a file or pipe: a long run stopped half-way
    still leaves its finished rounds in the log."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)


def threads_env(threads: int) -> dict[str, str]:
    """Environment pinning a server's torch intra-op threads (empty for the default)."""
    return {"OMP_NUM_THREADS": str(threads)} if threads > 0 else {}


def machine() -> dict[str, Any]:
    """Where a figure was measured, and how busy the machine was (1-minute load average)."""
    import platform

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load_1m: float | None = os.getloadavg()[0]
    except OSError:
        load_1m = None
    return {
        "load_avg_1m": load_1m,
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
