from __future__ import annotations

import pytest
from pydantic import ValidationError
from voicefleet_server.cli import settings_from

from voicefleet.quantity import parse_bytes


def test_environment_configures_and_flags_win() -> None:
    env = {
        "VOICEFLEET_BATCH_WINDOW_MS": "25",
        "VOICEFLEET_MODEL": "/models/x",
        "VOICEFLEET_PORT": "9000",
    }
    settings = settings_from(["--port", "8100", "--no-autotune"], env)
    assert settings.batch_window_ms == 25.0
    assert settings.model == "/models/x"
    assert settings.port == 8100
    assert settings.autotune is False


def test_empty_environment_values_mean_unset() -> None:
    assert settings_from([], {"VOICEFLEET_REDIS_URL": ""}).redis_url is None


@pytest.mark.parametrize(
    "argv",
    [["--max-batch-size", "0"], ["--vram-budget", "lots"], ["--dtype", "int4"], ["--port", "x"]],
)
def test_bad_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValidationError):
        settings_from(argv, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8Gi", 8 * 2**30),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("1000", 1000),
        ("1.5Gi", 3 * 2**29),
    ],
)
def test_quantities(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected
