"""Splits input text into segments, the engine's unit of scheduling.

Sentences come from pysbd (rule-based, per language, no downloads), which knows that
"Dr.", "U.S.", "e.g." and "3.5" do not end a sentence. A sentence whose expected audio
exceeds a cap is split at clause boundaries (commas, semicolons, colons, dashes), then at
words, into as few and as even pieces as fit: a long text then never holds the model for
long, so a newcomer waits little, while sentences under the cap stay whole for prosody.
Pure functions: text in, list of strings out.
"""

from __future__ import annotations

import math
import re

import pysbd
from pysbd.languages import LANGUAGE_CODES

# Speaking rate used to turn a cap in audio seconds into characters. MMS and Piper
# English voices read about 14-16 characters (spaces included) per second at speed 1.
DEFAULT_CHARS_PER_SECOND = 15.0
# The cap on one segment's expected audio (settings: --segment-max-seconds).
DEFAULT_MAX_SEGMENT_SECONDS = 8.0

# pysbd's cost grows with the square of a call's length (its abbreviation pass rescans
# the text per abbreviation): 0.4 ms for 70 characters, 1.3 s for 29k. Long paragraphs
# go through it in windows of this many characters, each window restarting at the last
# sentence the previous one saw complete.
_WINDOW_CHARS = 1000
_SPACES = re.compile(r"\s+")
# A line break inside a sentence (text wrapped at a fixed width): no sentence-ending
# punctuation before it and a lower-case letter after it.
_SOFT_BREAK = re.compile(r"(?<![.!?:;…\n])[ \t]*\n(?=[ \t]*[^\W\d_A-Z])")
# Clause boundaries: after , ; : and dashes, or before a spaced hyphen used as a dash.
# (A comma needs a space after it: "1,234" is one number.)
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|(?<=[—–])\s*(?=\S)|(?<=\s-)\s+")  # noqa: RUF001


def segment_chars(
    max_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
    chars_per_second: float = DEFAULT_CHARS_PER_SECOND,
) -> int:
    """Longest segment, in characters, whose expected audio fits in `max_seconds`."""
    if max_seconds <= 0 or chars_per_second <= 0:
        raise ValueError("max_seconds and chars_per_second must be positive")
    return max(1, math.floor(max_seconds * chars_per_second))


DEFAULT_MAX_SEGMENT_CHARS = segment_chars()


def split_segments(
    text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS, language: str | None = None
) -> list[str]:
    """Sentences of `text`, long ones cut into pieces of at most `max_chars` characters.

    `language` is a num2words-style code ('en', 'de', 'pt_BR'); languages pysbd lacks use
    its English rules. Never drops non-whitespace characters and never returns an empty
    segment.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    segments: list[str] = []
    for sentence in split_sentences(text, language):
        segments.extend(split_long(sentence, max_chars))
    return segments


def split_sentences(text: str, language: str | None = None) -> list[str]:
    """Sentences of `text` with white space collapsed; line breaks end sentences, except
    a break inside a wrapped sentence."""
    code = _pysbd_language(language)
    sentences: list[str] = []
    for line in _SOFT_BREAK.sub(" ", text).split("\n"):
        for sentence in _line_sentences(line, code):
            sentence = _SPACES.sub(" ", sentence).strip()
            if sentence:
                sentences.append(sentence)
    return sentences


def _pysbd_language(language: str | None) -> str:
    base = (language or "en").split("_")[0].split("-")[0].lower()
    return base if base in LANGUAGE_CODES else "en"


# Characters pysbd uses as its own placeholders: in a user's text they made it drop or
# swallow words ("a ♨ b" came back as no sentence at all). pysbd reads a copy where each
# is a neutral symbol (same length, so its offsets cut the original text).
_PYSBD_PLACEHOLDERS = str.maketrans(dict.fromkeys("♨☝∯ȸȹ☉♬ƪᓰᓱᓳᓴᓷᓸ⌬⎋✂\r", "#"))


def _pysbd(text: str, code: str) -> list[tuple[str, int]]:
    """(sentence, offset just past it) for each sentence pysbd finds in `text`."""
    # A fresh Segmenter per call: it keeps the text being segmented on itself, so one
    # instance shared between threads would mix texts up. Construction costs ~1 µs.
    segmenter = pysbd.Segmenter(language=code, clean=False, char_span=True)
    spans = segmenter.segment(text.translate(_PYSBD_PLACEHOLDERS))
    return [(text[span.start : span.end], span.end) for span in spans]


def _line_sentences(line: str, code: str) -> list[str]:
    if not line.strip():
        return []
    sentences: list[str] = []
    while len(line) > _WINDOW_CHARS:
        window = line[:_WINDOW_CHARS]
        parts = _pysbd(window, code)
        if len(parts) > 1:
            # The window's last sentence may continue past it: it is segmented again at
            # the head of the next window.
            consumed = parts[-2][1]
            if consumed > 0:
                sentences.extend(sentence for sentence, _ in parts[:-1])
                line = line[consumed:]
                continue
        # One sentence longer than the window: cut at its last space (split_long cuts
        # the piece further at clauses and words).
        cut = window.rfind(" ")
        cut = cut if cut > 0 else _WINDOW_CHARS
        sentences.append(line[:cut])
        line = line[cut:]
    sentences.extend(sentence for sentence, _ in _pysbd(line, code))
    return sentences


def split_long(sentence: str, max_chars: int) -> list[str]:
    """`sentence` itself when it fits in `max_chars`; otherwise the fewest pieces that fit,
    cut at clause boundaries where possible, then between words, and as even as possible
    (the shortest piece as long as it can be)."""
    if len(sentence) <= max_chars:
        return [sentence]
    units: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        clause = clause.strip()
        if not clause:
            continue
        if len(clause) <= max_chars:
            units.append(clause)
            continue
        words = [piece for word in clause.split(" ") for piece in _hard_cut(word, max_chars)]
        units.extend(_partition(words, max_chars))
    return _partition(units, max_chars)


def _hard_cut(word: str, max_chars: int) -> list[str]:
    # A single "word" longer than the limit (a URL, a run of digits) is cut anywhere.
    return [word[i : i + max_chars] for i in range(0, len(word), max_chars)] if word else []


def _partition(units: list[str], max_chars: int) -> list[str]:
    """Join consecutive `units` (each at most max_chars) with spaces into the fewest groups
    of at most max_chars, maximizing the shortest group (dynamic programming)."""
    count = len(units)
    # best[i]: (groups, -shortest group) for units[:i], and where its last group starts.
    best: list[tuple[int, int]] = [(0, -(1 << 30))] + [(1 << 30, 0)] * count
    start = [0] * (count + 1)
    for end in range(1, count + 1):
        length = -1
        for begin in range(end - 1, -1, -1):
            length += len(units[begin]) + 1
            if length > max_chars and begin < end - 1:
                break
            groups, negative_shortest = best[begin]
            candidate = (groups + 1, max(negative_shortest, -length))
            if candidate < best[end]:
                best[end], start[end] = candidate, begin
    pieces: list[str] = []
    end = count
    while end > 0:
        pieces.append(" ".join(units[start[end] : end]))
        end = start[end]
    return pieces[::-1]
