"""Which characters of a text a model's tokenizer would drop, and whether that leaves
anything worth saying.

transformers' `VitsTokenizer` silently filters out every character outside the
checkpoint's vocabulary (after lower-casing). Punctuation and spaces going is by design
(MMS was trained on text without them); letters, digits and symbols going means the
speech says less than the text. This module counts those, so the server can refuse a
request that is mostly unpronounceable (naming the characters) and count the rest.
Pure functions.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

# More than this share of a text's letters, digits and symbols outside the vocabulary
# means the model cannot read it (another script, another language's alphabet).
MAX_DROPPED_SHARE = 0.5
# How many distinct characters an error message names.
_NAMED = 12


def counts(char: str) -> bool:
    """Whether dropping `char` loses something said: letters, marks, digits, symbols.
    Punctuation, spaces and control characters do not count."""
    return unicodedata.category(char)[0] in "LMNS"


@dataclass(frozen=True, slots=True)
class VocabularyCheck:
    # Characters the tokenizer would drop, by count (letters, digits, symbols only).
    dropped: Counter[str] = field(default_factory=Counter)
    # Letters, digits and symbols in the text, dropped or not.
    total: int = 0

    @property
    def dropped_count(self) -> int:
        return sum(self.dropped.values())

    @property
    def kept(self) -> int:
        return self.total - self.dropped_count

    @property
    def mostly_unknown(self) -> bool:
        return self.total > 0 and self.dropped_count / self.total > MAX_DROPPED_SHARE

    def named(self) -> str:
        """The dropped characters, most frequent first: "'ж' (U+0436), 'ш' (U+0448)"."""
        shown = [f"'{c}' (U+{ord(c):04X})" for c, _ in self.dropped.most_common(_NAMED)]
        more = len(self.dropped) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def check_vocabulary(text: str, vocabulary: Collection[str], *, lowercase: bool) -> VocabularyCheck:
    """Count what a tokenizer keeping only `vocabulary` (after lower-casing, when
    `lowercase`) would drop from `text`."""
    dropped: Counter[str] = Counter()
    total = 0
    for char in text:
        if not counts(char):
            continue
        total += 1
        if char in vocabulary or (lowercase and char.lower() in vocabulary):
            continue
        dropped[char] += 1
    return VocabularyCheck(dropped, total)
