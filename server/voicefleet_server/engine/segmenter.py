"""Splits input text into sentence-sized segments, the engine's unit of scheduling.

Segments are small enough that a long text never holds the model for long (others'
segments interleave between them) and large enough to keep prosody within a sentence.
Pure functions: text in, list of strings out.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (with any closing quotes/brackets, captured so they stay
# with their sentence) followed by whitespace, or at a line break.
_SENTENCE_END = re.compile(r"([.!?…]+[\"'”’)\]]*)\s+|\n+")  # noqa: RUF001 (typographic quotes)
# Inside an over-long sentence, prefer clause boundaries.
_CLAUSE_END = re.compile(r"(?<=[,;:—–])\s+")  # noqa: RUF001 (dashes)
_SPACES = re.compile(r"[ \t\r\f\v]+")

DEFAULT_MAX_SEGMENT_CHARS = 250


def split_segments(text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS) -> list[str]:
    """Split `text` into segments of at most `max_chars` characters (roughly sentences).

    Never drops non-whitespace characters and never returns an empty segment.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    segments: list[str] = []
    for sentence in _sentences(text):
        sentence = _SPACES.sub(" ", sentence).strip()
        if sentence:
            segments.extend(_split_long(sentence, max_chars))
    return segments


def _sentences(text: str) -> list[str]:
    parts = _SENTENCE_END.split(text)
    # re.split interleaves the captured sentence endings (None after a line break).
    texts, endings = parts[0::2], [*parts[1::2], None]
    return [t + (e or "") for t, e in zip(texts, endings, strict=True)]


def _split_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces = _pack(_CLAUSE_END.split(sentence), max_chars)
    out: list[str] = []
    for piece in pieces:
        if len(piece) <= max_chars:
            out.append(piece)
        else:
            out.extend(_pack_words(piece, max_chars))
    return out


def _pack(parts: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive parts with spaces while they fit in max_chars."""
    packed: list[str] = []
    current = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        candidate = f"{current} {part}" if current else part
        if len(candidate) <= max_chars or not current:
            current = candidate
        else:
            packed.append(current)
            current = part
    if current:
        packed.append(current)
    return packed


def _pack_words(text: str, max_chars: int) -> list[str]:
    words: list[str] = []
    for word in text.split(" "):
        # A single "word" longer than the limit (a URL, a run of digits) is cut hard.
        words.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
    return _pack(words, max_chars)
