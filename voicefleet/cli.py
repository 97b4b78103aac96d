"""The `voicefleet` console script: one entry point that dispatches to each component.

Subcommands import their component lazily, so `voicefleet operator` never imports torch
and `voicefleet serve` never imports kopf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _serve(argv: Sequence[str]) -> int:
    from voicefleet_server.cli import serve_main

    return serve_main(argv)


def _make_tiny_model(argv: Sequence[str]) -> int:
    from voicefleet_server.cli import make_tiny_model_main

    return make_tiny_model_main(argv)


def _fetch_model(argv: Sequence[str]) -> int:
    from voicefleet_server.fetch_model import fetch_model_main

    return fetch_model_main(argv)


def _convert_piper(argv: Sequence[str]) -> int:
    from voicefleet_server.cli import convert_piper_main

    return convert_piper_main(argv)


def _operator(argv: Sequence[str]) -> int:
    from voicefleet_operator.cli import operator_main

    return operator_main(argv)


def _bench(argv: Sequence[str]) -> int:
    from voicefleet_bench.cli import bench_main

    return bench_main(argv)


_COMMANDS = {
    "serve": (_serve, "run the TTS server (OpenAI-compatible API)"),
    "make-tiny-model": (_make_tiny_model, "write a tiny random-weight VITS checkpoint"),
    "fetch-model": (
        _fetch_model,
        "download or copy a model into a cache directory that pods load offline",
    ),
    "convert-piper": (
        _convert_piper,
        "convert a Piper voice (VOICE.onnx + .onnx.json) into a checkpoint directory",
    ),
    "operator": (_operator, "run the kopf operator for VoiceService resources"),
    "bench": (_bench, "drive a running server with open-loop load and report"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in _COMMANDS:
        parser = argparse.ArgumentParser(
            prog="voicefleet", description="Batched text-to-speech served on Kubernetes."
        )
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in _COMMANDS.items():
            sub.add_parser(name, help=help_text, add_help=False)
        if not args or args[0] in {"-h", "--help"}:
            parser.print_help()
            return 0 if args else 2
        parser.error(f"unknown command {args[0]!r}")
    handler, _ = _COMMANDS[args[0]]
    return handler(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
