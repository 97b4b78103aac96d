"""The hardened test server's settings: API keys (inline and from a file, as a mounted
Secret), test-only fault injection, short batch and body deadlines."""

from __future__ import annotations

from pathlib import Path

from server_process import ServerProcess, start_server

INLINE_KEYS = ("vf-test-inline-key-0123456789", "vf-test-second-key-abcdef")
FILE_KEY = "vf-test-file-key-secret-9876"
BATCH_TIMEOUT_S = 2.5
BODY_TIMEOUT_S = 2.0


def auth(key: str = INLINE_KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def start_hardened(model_dir: str, log_dir: Path) -> tuple[ServerProcess, Path]:
    key_file = log_dir / "api-keys"
    key_file.write_text(f"# mounted Secret\n{FILE_KEY}\n")
    server = start_server(
        model_dir,
        log_dir,
        "--api-key",
        ",".join(INLINE_KEYS),
        "--api-key-file",
        str(key_file),
        "--fault-injection",
        "--dtype",
        "bfloat16",  # reduced precision, so a NaN item gets its float32 re-run
        "--no-autotune",
        "--max-batch-size",
        "8",
        "--batch-window-ms",
        "250",  # wide, so concurrent requests share a batch
        "--batch-timeout-s",
        str(BATCH_TIMEOUT_S),
        "--body-timeout-s",
        str(BODY_TIMEOUT_S),
        "--cache",
        "off",
        "--log-level",
        "info",  # so the test can check that no key reaches the log
    )
    return server, key_file
