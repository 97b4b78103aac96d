"""Command-line front ends of the server: `voicefleet serve`, `voicefleet make-tiny-model` and
`voicefleet convert-piper`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicefleet_server.config import ServerSettings


def make_tiny_model_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voicefleet make-tiny-model",
        description="Write a random-weight VITS checkpoint (save_pretrained + tokenizer). "
        "Its audio is not speech: it exists so tests and smoke runs need no model hub.",
    )
    parser.add_argument("directory", help="output directory")
    parser.add_argument(
        "--size",
        choices=("tiny", "mms"),
        default="tiny",
        help="tiny: 34k parameters, loads in ~0.2 s (default); mms: the 36M-parameter "
        "shape of facebook/mms-tts-*, for representative benchmarks",
    )
    parser.add_argument("--speakers", type=int, default=1, help="number of speakers (voices)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--family",
        choices=("vits", "speecht5"),
        default="vits",
        help="vits (default), or speecht5: writes DIR/model, DIR/vocoder and "
        "DIR/speaker-encoder; serve with --model DIR/model --vocoder DIR/vocoder "
        "--speaker-encoder DIR/speaker-encoder",
    )
    args = parser.parse_args(argv)
    from voicefleet_server.tiny_model import make_tiny_model, make_tiny_speecht5

    if args.family == "speecht5":
        print(make_tiny_speecht5(args.directory, seed=args.seed))
        return 0
    out = make_tiny_model(
        args.directory, num_speakers=args.speakers, size=args.size, seed=args.seed
    )
    print(out)
    return 0


def convert_piper_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voicefleet convert-piper",
        description="Convert a Piper voice (VOICE.onnx with VOICE.onnx.json beside it) into a "
        "transformers checkpoint directory (save_pretrained + piper.json) that "
        "`voicefleet serve --model OUT_DIR` loads without converting again.",
    )
    parser.add_argument("voice", help="the voice's .onnx file (or a directory holding one)")
    parser.add_argument("directory", help="output directory")
    args = parser.parse_args(argv)
    from voicefleet_server.engine.piper_convert import PiperVoiceError, convert_piper

    try:
        print(convert_piper(args.voice, args.directory))
    except PiperVoiceError as exc:
        print(f"voicefleet convert-piper: {exc}", file=sys.stderr)
        return 1
    return 0


ENV_PREFIX = "VOICEFLEET_"


def serve_parser() -> argparse.ArgumentParser:
    """Flags mirror `ServerSettings`; each defaults to VOICEFLEET_<FLAG> from the environment."""
    from voicefleet_server.config import ServerSettings

    parser = argparse.ArgumentParser(
        prog="voicefleet serve",
        description="Run the TTS server. Every flag can also be set as VOICEFLEET_<FLAG> "
        "(e.g. --batch-window-ms as VOICEFLEET_BATCH_WINDOW_MS); flags win.",
    )
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description} [env {env}; default {field.default}]"
        if field.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)
    return parser


def settings_from(argv: Sequence[str], environ: Mapping[str, str]) -> ServerSettings:
    """Flags over environment over defaults, validated by the settings model."""
    from voicefleet_server.config import ServerSettings

    args = vars(serve_parser().parse_args(argv))
    values: dict[str, object] = {}
    for name in ServerSettings.model_fields:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if args[name] is not None:
            values[name] = args[name]
        elif env_value not in (None, ""):
            values[name] = env_value
    return ServerSettings.model_validate(values)


def serve_main(argv: Sequence[str]) -> int:
    from voicefleet_server.coldstart import pause_collector

    pause_collector()  # resumed by the runtime once the model has loaded
    from pydantic import ValidationError

    try:
        settings = settings_from(argv, os.environ)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        print(f"voicefleet serve: invalid settings: {problems}", file=sys.stderr)
        return 2
    from voicefleet_server.app import run

    return run(settings)
