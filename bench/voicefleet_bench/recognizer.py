"""An offline speech recognizer as a listener: word accuracy of synthesized speech.

pocketsphinx (BSD, bundles an en-US model) decodes 16 kHz mono int16 audio. Measured on
simple sentences: real voices score 0.8-0.95 word accuracy, random-weight models ~0.01,
white noise 0.0, so a mean above 0.5 over a few sentences tells speech from noise. The
recognition tests (tests/server/test_recognizer.py, tests/unit/test_piper.py) and
bench/quality.py share this module.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Sequence
from math import gcd
from typing import Any

import numpy as np

RATE = 16_000

# Everyday sentences in pocketsphinx's vocabulary, each a different sound mix. Chosen
# because the reference runtime (onnxruntime running en_US-joe-medium) scored 1.0 on
# each (mean of two noisy renders): a failure here is our fault, not the listener's.
SIMPLE_SENTENCES = (
    "Open the door and let the cat out.",
    "I would like a cup of coffee.",
    "My brother lives in a small town.",
    "The children are playing in the park.",
    "The train leaves at seven in the morning.",
    "He reads the newspaper every day.",
    "Can you help me find my keys?",
    "Thank you very much for your help.",
)
# Harder: Harvard sentences and rarer words (onnxruntime's mean ~0.7), behind --slow.
LONGER_SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "The soft cushion broke the man's fall.",
    "We will meet at the station at noon.",
    "She bought three red apples at the market.",
)

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - WER, floored at 0 (insertions can push WER above 1)."""
    ref = words(reference)
    if not ref:
        raise ValueError("the reference text has no words")
    return max(0.0, 1.0 - edit_distance(ref, words(hypothesis)) / len(ref))


def to_16k_int16(waveform: np.ndarray, sampling_rate: int) -> bytes:
    """Mono float [-1, 1] at any rate -> 16 kHz int16 bytes (polyphase resampling)."""
    from scipy.signal import resample_poly

    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if sampling_rate != RATE:
        common = gcd(int(sampling_rate), RATE)
        audio = resample_poly(audio, RATE // common, int(sampling_rate) // common)
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes (as the server answers) -> (mono float32, sampling rate)."""
    import soundfile

    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


class Recognizer:
    """pocketsphinx with its bundled en-US model; one decode at a time (thread-safe)."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder: Any = Decoder(loglevel="FATAL")
        self._lock = threading.Lock()

    def transcribe(self, waveform: np.ndarray, sampling_rate: int) -> str:
        pcm = to_16k_int16(waveform, sampling_rate)
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        return "" if hypothesis is None else str(hypothesis.hypstr)

    def word_segments(
        self, waveform: np.ndarray, sampling_rate: int
    ) -> list[tuple[str, float, float]]:
        """(word, start s, end s) of each word the recognizer heard, in order; fillers
        (<s>, </s>, <sil>, [NOISE]) left out, alternate pronunciations ("the(2)") named
        by their word."""
        pcm = to_16k_int16(waveform, sampling_rate)
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            segments = list(self._decoder.seg())
        frame_s = 0.01  # pocketsphinx's default frame rate: 100 frames a second
        return [
            (seg.word.split("(")[0], seg.start_frame * frame_s, (seg.end_frame + 1) * frame_s)
            for seg in segments
            if not seg.word.startswith(("<", "["))
        ]

    def accuracy(self, reference: str, waveform: np.ndarray, sampling_rate: int) -> float:
        return word_accuracy(reference, self.transcribe(waveform, sampling_rate))

    def wav_accuracy(self, reference: str, wav: bytes) -> float:
        audio, rate = read_wav(wav)
        return self.accuracy(reference, audio, rate)
