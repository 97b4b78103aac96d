"""Command-line front ends of the server: `voicefleet serve` and `voicefleet make-tiny-model`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def make_tiny_model_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voicefleet make-tiny-model",
        description="Write a random-weight VITS checkpoint (save_pretrained + tokenizer). "
        "Its audio is not speech: it exists so tests and smoke runs need no model hub.",
    )
    parser.add_argument("directory", help="output directory")
    parser.add_argument(
        "--size", choices=("tiny", "mms"), default="tiny",
        help="tiny: 34k parameters, loads in ~0.2 s (default); mms: the 36M-parameter "
        "shape of facebook/mms-tts-*, for representative benchmarks",
    )
    parser.add_argument("--speakers", type=int, default=1, help="number of speakers (voices)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    from voicefleet_server.tiny_model import make_tiny_model

    out = make_tiny_model(args.directory, num_speakers=args.speakers, size=args.size, seed=args.seed)
    print(out)
    return 0


def serve_main(argv: Sequence[str]) -> int:
    raise NotImplementedError
