"""Word timestamps: which input word each model token sounds, and when it is heard.

A duration model (VITS predicts frames per input token) says how long each token
lasts. Three maps lead from those tokens back to the words the user wrote:

1. input words -> normalized words. Normalization rewrites text ("$3.50" -> "three
   dollars and fifty cents", "U.S." -> "U S"). Words it leaves alone anchor a diff of the
   two word lists; each run of rewritten words between anchors is shared among the
   input words of that run in proportion to how many words each becomes on its own.
2. normalized words -> segment words. Long sentences are cut into segments; a word cut
   in two (a URL longer than a segment) belongs to the input word in both pieces.
3. segment words -> tokens. Each word is tokenized alone and its sounding tokens are
   aligned with the segment's (a diff): exact for character tokenizers (MMS), and close
   for phonemizers, whose in-context output differs a little from word-by-word output.

A word is heard from the start of its first sounding token up to the next word break
(a space, a begin/end marker) or the next word's sound: the blank after its last sound and
the punctuation written with it ("coffee." and the pause of its period) belong to it.
Input words that get no sounding token (dropped characters, stray symbols) have no
timestamp. Pure functions throughout.
"""

from __future__ import annotations

import difflib
import itertools
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
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


def token_owners(
    tokenize: Callable[[str], Sequence[int]],
    words: Sequence[str],
    tokens: Sequence[int],
    silent: Collection[int],
) -> list[int]:
    """For each of a segment's `tokens`, the index of the word among `words` (the
    segment's text split on whitespace) whose sound it is; -1 for silent tokens.

    Each word is tokenized alone; the sounding tokens of those, in order, are aligned
    with the segment's sounding tokens (a diff). Exact for a character tokenizer; for a
    phonemizer the in-context output differs a little from word-by-word output (stress
    of function words, "on the" said as one word "ɔnðə"), which the diff absorbs: an
    unmatched run between two words is shared between them."""
    alone: list[int] = []
    alone_owner: list[int] = []
    cache: dict[str, Sequence[int]] = {}
    for index, word in enumerate(words):
        if word not in cache:
            cache[word] = tokenize(word)
        for token in cache[word]:
            if token not in silent:
                alone.append(token)
                alone_owner.append(index)
    sounding = [i for i, token in enumerate(tokens) if token not in silent]
    heard = [tokens[i] for i in sounding]
    aligned = [-1] * len(heard)
    matcher = difflib.SequenceMatcher(None, alone, heard, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for offset in range(size):
            aligned[b + offset] = alone_owner[a + offset]
    _fill_gaps(aligned, default=len(words) - 1)
    owners = [-1] * len(tokens)
    for position, index in enumerate(sounding):
        owners[index] = aligned[position]
    return owners


def _fill_gaps(aligned: list[int], default: int) -> None:
    """Give unmatched (-1) runs an owner, keeping owners monotonic. A run goes to the words
    between its neighbours that matched nothing (espeak says "a" alone as the letter's
    name but in context as a schwa), shared evenly in order; with no such word, to the
    word on both sides, or its first half to the left word and the rest to the right.
    `default` is the last word's index (-1: no words)."""
    known = [i for i, owner in enumerate(aligned) if owner >= 0]
    if not known:
        _share(aligned, 0, len(aligned), list(range(default + 1)))
        return
    first, last = aligned[known[0]], aligned[known[-1]]
    _share(aligned, 0, known[0], list(range(first)) or [first])
    _share(aligned, known[-1] + 1, len(aligned), list(range(last + 1, default + 1)) or [last])
    for left, right in itertools.pairwise(known):
        low, high = aligned[left], aligned[right]
        between = list(range(low + 1, high))
        if between:
            _share(aligned, left + 1, right, between)
            continue
        gap = right - left - 1
        for offset in range(gap):
            near_left = offset < (gap + 1) // 2 or low == high
            aligned[left + 1 + offset] = low if near_left else high


def _share(aligned: list[int], start: int, stop: int, owners: list[int]) -> None:
    """Positions start..stop-1 go to `owners` in order, in runs as even as possible."""
    span = stop - start
    if span <= 0:
        return
    if not owners:
        owners = [-1]
    for offset in range(span):
        aligned[start + offset] = owners[offset * len(owners) // span]


def silent_ids(
    symbols: Mapping[str, int | Sequence[int]], specials: Collection[str] = ()
) -> frozenset[int]:
    """Token ids that make no sound: special tokens, and symbols without a letter, mark or
    digit (blanks, spaces, punctuation, begin/end markers). IPA symbols, stress and
    length marks are letters or modifier letters, so phonemes all sound."""
    silent: set[int] = set()
    for symbol, ids in symbols.items():
        sounding = symbol not in specials and any(
            unicodedata.category(c)[0] in "LMN" for c in symbol
        )
        if not sounding:
            silent.update([ids] if isinstance(ids, int) else ids)
    return frozenset(silent)


def break_ids(
    symbols: Mapping[str, int | Sequence[int]],
    specials: Collection[str] = (),
    pads: Collection[int] = (),
) -> frozenset[int]:
    """Token ids that separate words: whitespace, and special tokens (begin/end markers)
    other than the blank/pad a tokenizer puts between every two symbols."""
    breaks: set[int] = set()
    for symbol, ids in symbols.items():
        if symbol.isspace() or symbol in specials:
            breaks.update(i for i in ([ids] if isinstance(ids, int) else ids) if i not in pads)
    return frozenset(breaks)


def word_times(
    words: Sequence[str],
    token_owner: Sequence[int],
    token_samples: Sequence[int],
    silent: Collection[int],
    breaks: Collection[int],
    token_ids: Sequence[int],
    rate: int,
    offset_samples: int = 0,
) -> dict[int, tuple[float, float]]:
    """(start, end) in seconds of each word index that has a sounding token.

    A word starts with its first sounding token; it ends with the last token before the
    next word break (space, begin/end marker) or the next word's sound: the blank after
    its last sound, and punctuation written with it and its pause ("coffee." includes
    the period), are part of it; the space after it is not. `token_owner[i]` is the word
    index of token i (-1: silent), `token_samples[i]` its duration in samples;
    `offset_samples` is where the segment starts in the response."""
    times: dict[int, tuple[float, float]] = {}
    position = offset_samples
    current: int | None = None
    for owner, samples, token in zip(token_owner, token_samples, token_ids, strict=False):
        begin, position = position, position + int(samples)
        if token in breaks:
            current = None
        elif token in silent or owner < 0 or owner >= len(words):
            if current is not None and samples > 0:
                times[current] = (times[current][0], position / rate)
        elif samples > 0:
            start, end = begin / rate, position / rate
            if owner in times:
                start, end = min(start, times[owner][0]), max(end, times[owner][1])
            times[owner] = (start, end)
            current = owner
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
