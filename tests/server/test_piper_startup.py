"""A broken Piper voice or a missing espeak-ng fails start-up: /healthz says why (naming the
file), then `voicefleet serve` exits non-zero. Never a half-loaded pod."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_process import free_port


def _serve(model: str, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[dict, int, str]:
    """Start `voicefleet serve --model model`; return (/healthz body once it fails, exit
    code, log). Raises if it never reports the failure or never exits."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    environ = os.environ | {"HF_HUB_OFFLINE": "1", "VOICEFLEET_CACHE_DIR": str(tmp_path / "c")}
    command = [sys.executable, "-m", "voicefleet", "serve", "--model", model, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ | (env or {}),
        )
    health: dict = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not health:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                if response.status_code == 500:
                    health = response.json()
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return health, code, log_path.read_text(errors="replace")


def _voice(tmp_path: Path, piper_voice_onnx: str, onnx: bytes | None, config: bool) -> Path:
    voice = tmp_path / "voice"
    voice.mkdir()
    if onnx is None:
        (voice / "v.onnx").symlink_to(piper_voice_onnx)
    else:
        (voice / "v.onnx").write_bytes(onnx)
    if config:
        shutil.copy(piper_voice_onnx + ".json", voice / "v.onnx.json")
    return voice / "v.onnx"


def test_corrupt_onnx_fails_start_up_naming_the_file(tmp_path: Path, piper_voice_onnx: str) -> None:
    path = _voice(tmp_path, piper_voice_onnx, b"\x00 not onnx" * 64, config=True)
    health, code, log = _serve(str(path), tmp_path)
    assert health["state"] == "failed" and f"{path}: not a readable ONNX model" in health["error"]
    assert code == 1
    assert f"{path}: not a readable ONNX model" in log
    assert not any((tmp_path / "c").rglob("*.safetensors"))  # nothing half-converted


@pytest.mark.slow  # the mechanism is the corrupt-.onnx test's; the message is unit-tested
def test_missing_onnx_json_fails_start_up_naming_it(tmp_path: Path, piper_voice_onnx: str) -> None:
    path = _voice(tmp_path, piper_voice_onnx, None, config=False)
    health, code, _ = _serve(str(path), tmp_path)
    assert f"{path}.json: missing" in health["error"] and code == 1


@pytest.mark.slow  # the mechanism is the corrupt-.onnx test's; the message is unit-tested
def test_missing_espeak_ng_fails_start_up_naming_it(
    tmp_path: Path, piper_checkpoint_dir: str
) -> None:
    # A PATH with python but without espeak-ng.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    health, code, _ = _serve(piper_checkpoint_dir, tmp_path, env={"PATH": str(bin_dir)})
    assert "'espeak-ng' program is not on PATH" in health["error"] and code == 1
