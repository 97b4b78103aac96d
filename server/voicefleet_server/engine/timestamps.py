"""Word timestamps: which input word each model token sounds, and when it is heard.

A duration model (VITS predicts frames per input token) says how long each token
lasts. Three maps lead from those tokens back to the words the user wrote:

1. input words -> normalized words. Normalization rewrites text ("$3.50" -> "three
   dollars and fifty cents", "U.S." -> "U S"). Words it leaves alone anchor a diff of the
   two word lists; each run of rewritten words between anchors is shared among the
   input words of that run in proportion to how many words each becomes on its own.
2. normalized words -> segment words. Long sentences are cut into segments; a word cut
   in two (a URL longer than a segment) belongs to the input word in both pieces.
3. segment words -> tokens. A family that knows its own alignment (a phonemizer that
   marks word ends) provides it; otherwise the token count of each word prefix of the
   segment tells where each word's tokens end (exact for character tokenizers, a close
   estimate for phonemizers whose output for a prefix is a prefix of the whole).

A word is heard from the start of its first sounding token to the end of its last one
(blanks, spaces and punctuation are silent: a pause after a comma is not part of the
word before it). Input words that get no sounding token (dropped characters, stray
symbols) have no timestamp. Pure functions throughout.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class WordTime:
    word: str
    start_time: float
    end_time: float

    def as_dict(self) -> dict[str, object]:
        return {
            "word": self.word,
            "start_time": round(self.start_time, 3),
            "end_time": round(self.end_time, 3),
        }


def _key(word: str) -> str:
    """What two spellings of one word share: letters and digits, case-folded."""
    return "".join(c for c in word.casefold() if c.isalnum())


def display_word(word: str) -> str:
    """The word as captions show it: surrounding punctuation removed ("Hello," -> "Hello"),
    currency and other symbols kept ("$3.50"), an abbreviation's last period kept ("U.S.")."""
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    core = word[start:end]
    if end < len(word) and word[end] == "." and "." in core:
        core += "."
    return core


def input_words(text: str) -> list[str]:
    """Whitespace-separated words of `text` as written."""
    return _WORD.findall(text)


def align_normalized(
    written: Sequence[str], normalized: Sequence[str], weigh: Callable[[str], int]
) -> list[int]:
    """For each normalized word, the index of the written word it comes from.

    `weigh(word)` says how many words one written word becomes when normalized alone;
    it shares a rewritten run among several written words. Words inserted by
    normalization with no written counterpart go to the written word before them."""
    owners = [-1] * len(normalized)
    matcher = difflib.SequenceMatcher(
        None, [_key(w) for w in written], [_key(w) for w in normalized], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(i2 - i1):
                owners[j1 + offset] = i1 + offset
        elif tag == "replace":
            weights = [max(1, weigh(w)) for w in written[i1:i2]]
            total, span, cumulative = sum(weights), j2 - j1, 0
            for index, weight in enumerate(weights):
                first = j1 + round(span * cumulative / total)
                cumulative += weight
                last = j1 + round(span * cumulative / total)
                for j in range(first, last):
                    owners[j] = i1 + index
        elif tag == "insert":
            for j in range(j1, j2):
                owners[j] = max(i1 - 1, 0) if written else -1
        # "delete": written words with nothing said for them keep no normalized word.
    return owners


def split_owners(sentence: str, owners: Sequence[int], pieces: Sequence[str]) -> list[list[int]]:
    """For each segment cut from `sentence`, the owner (from `align_normalized`) of each of
    its whitespace-separated words. Pieces are found in the sentence in order; a word of
    a piece takes the owner of the sentence word it lies in."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(sentence)]
    result: list[list[int]] = []
    cursor = 0
    for piece in pieces:
        found = sentence.find(piece, cursor)
        base = found if found >= 0 else cursor
        piece_owners = []
        for match in _WORD.finditer(piece):
            position = base + match.start()
            owner = -1
            for index, (start, end) in enumerate(spans):
                if start <= position < end:
                    owner = owners[index] if index < len(owners) else -1
                    break
            piece_owners.append(owner)
        result.append(piece_owners)
        if found >= 0:
            cursor = found + len(piece)
    return result


def prefix_token_words(tokenize: Callable[[str], Sequence[int]], words: Sequence[str]) -> list[int]:
    """For each token of " ".join(words), the index of the word it belongs to: word k
    ends where the tokens of its prefix end. Tokens past the last prefix (an end marker)
    go to the last word; counts are kept monotonic whatever the tokenizer does."""
    total = len(tokenize(" ".join(words)))
    ends: list[int] = []
    previous = 0
    for k in range(1, len(words) + 1):
        count = len(tokenize(" ".join(words[:k]))) if k < len(words) else total
        previous = min(max(previous, count), total)
        ends.append(previous)
    owners: list[int] = []
    start = 0
    for index, end in enumerate(ends):
        owners.extend([index] * (end - start))
        start = end
    owners.extend([len(words) - 1] * (total - len(owners)))
    return owners


def word_times(
    words: Sequence[str],
    token_owner: Sequence[int],
    token_samples: Sequence[int],
    silent: Collection[int] | Callable[[int], bool],
    token_ids: Sequence[int],
    rate: int,
    offset_samples: int = 0,
) -> dict[int, tuple[float, float]]:
    """(start, end) in seconds of each word index that has a sounding token.

    `token_owner[i]` is the word index of token i (-1: none), `token_samples[i]` its
    duration in samples; `offset_samples` is where the segment starts in the response."""
    is_silent = silent if callable(silent) else (lambda token: token in silent)
    times: dict[int, tuple[float, float]] = {}
    position = offset_samples
    for owner, samples, token in zip(token_owner, token_samples, token_ids, strict=False):
        begin, position = position, position + int(samples)
        if owner < 0 or owner >= len(words) or samples <= 0 or is_silent(token):
            continue
        start, end = begin / rate, position / rate
        if owner in times:
            start = min(start, times[owner][0])
            end = max(end, times[owner][1])
        times[owner] = (start, end)
    return times


@dataclass(frozen=True, slots=True)
class WordPlan:
    """The input's words (as captions show them) and, for each segment, the input word
    of each of its whitespace-separated words (-1: none)."""

    words: list[str]
    segments: list[list[int]]


def plan_words(
    sentences: Sequence[tuple[str, str, Sequence[str]]], weigh: Callable[[str], int]
) -> WordPlan:
    """The word plan of a text given, per sentence, (as written, as normalized, the
    segments cut from the normalized form)."""
    words: list[str] = []
    segments: list[list[int]] = []
    for written, normalized, pieces in sentences:
        written_words = input_words(written)
        base = len(words)
        owners = align_normalized(written_words, input_words(normalized), weigh)
        for piece_owners in split_owners(normalized, owners, pieces):
            segments.append([base + o if o >= 0 else -1 for o in piece_owners])
        words.extend(display_word(w) for w in written_words)
    return WordPlan(words, segments)
