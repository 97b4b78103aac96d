#!/usr/bin/env python
"""Text preparation cost: what sentence splitting, normalization and the whole pipeline
(`engine.textprep.prepare_text`) cost per request, since they run on every one.

Texts: a one-liner, a 10-sentence paragraph, and a long-form job (~100k characters, the
default job limit). Medians of repeated calls after one warm-up call; the old regex
segmenter's design is not kept, so the comparison point is pysbd called on the whole
text at once (what the windowing avoids).

    .venv/bin/python bench/text_cost.py --json bench/results/text_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import string
import time
from collections.abc import Callable

import pysbd
from voicefleet_server.engine.model import TextProfile
from voicefleet_server.engine.segmenter import split_segments
from voicefleet_server.engine.text import normalize
from voicefleet_server.engine.textprep import prepare_text

ONE_LINER = "I met Dr. Smith in the U.S. yesterday; it cost $3.50, e.g. a lot."
SENTENCES = [
    "The meeting is on 2024-03-01 at 3:30 pm in room 12.",
    "Mr. Brown said the budget grew 12.5% to $1.2 million.",
    "It was the 3rd time this year, i.e. since January.",
    "Prices rose from 3.5 to 4.25 dollars per unit.",
    "Nobody expected that.",
    "We met Prof. Green and Mrs. White at St. Paul's.",
    "The results, which were late, arrived on Monday; everyone was relieved.",
    "Call 555 0100 before 9 a.m.",
    "She paid £40 for 2 tickets.",
    "Then, finally, the 1990s ended.",
]
PARAGRAPH = " ".join(SENTENCES)
ENGLISH = TextProfile("en", False, frozenset(string.ascii_lowercase + " '-"), True)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    job = (PARAGRAPH + "\n") * (100_000 // (len(PARAGRAPH) + 1))
    texts = {"one_liner": ONE_LINER, "paragraph": PARAGRAPH, "job_100k": job}
    figures: dict[str, dict[str, float]] = {}
    for name, text in texts.items():
        repeats = max(3, args.repeats // (50 if name == "job_100k" else 1))
        figures[name] = {
            "chars": len(text),
            "segments": len(prepare_text(text, ENGLISH).segments),
            "split_segments_ms": median_ms(lambda t=text: split_segments(t), repeats),
            "normalize_ms": median_ms(lambda t=text: normalize(t, "en"), repeats),
            "prepare_text_ms": median_ms(lambda t=text: prepare_text(t, ENGLISH), repeats),
        }
    # What windowing avoids: pysbd on a 29k-character paragraph in one call.
    long_paragraph = PARAGRAPH * (29_000 // len(PARAGRAPH))
    figures["pysbd_one_call_29k"] = {
        "chars": len(long_paragraph),
        "ms": median_ms(lambda: pysbd.Segmenter(language="en").segment(long_paragraph), 3),
        "split_segments_ms": median_ms(lambda: split_segments(long_paragraph), 3),
    }
    # The build machine is shared: record how busy it was.
    figures["machine"] = {"cpus": float(os.cpu_count() or 0), "load_1min": os.getloadavg()[0]}
    for name, row in figures.items():
        print(name, json.dumps({k: round(v, 2) for k, v in row.items()}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
