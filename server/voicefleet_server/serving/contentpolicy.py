"""Content policy: refuse input that contains a blocked term, before any synthesis.

`--blocked-terms-file` lists one entry a line: a plain term, or a regular expression
written between slashes (`/free\\s+money/`). Blank lines and lines starting with `#` are
ignored. Matching is case-insensitive on NFKC-normalized text, so full-width letters,
ligatures and case variants match their plain forms (text is casefolded; expressions are
compiled case-insensitive). A plain term matches as a whole
word where its edge is a letter or digit of a script that separates words with spaces
("ass" does not match "class"); at a CJK edge it matches anywhere (those scripts have no
spaces to find words by). Whitespace inside a term matches any run of whitespace.

The file is re-read when it changes (checked at most every `RELOAD_EVERY_S`), so a
mounted ConfigMap can be edited live; an unreadable or invalid new version keeps the
previous list (logged). Refusals never say which term matched: a message that echoes
the term would turn the server into an oracle for the list.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RELOAD_EVERY_S = 2.0
# Scripts written without spaces between words: a term's edge in them gets no boundary.
_UNSPACED = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables (particles attach to nouns)
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x0E00, 0x0E7F),  # Thai
)


class BlockListError(ValueError):
    """The blocked-terms file has an entry that is not a valid regular expression."""


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _spaced_word_char(char: str) -> bool:
    code = ord(char)
    return char.isalnum() and not any(lo <= code <= hi for lo, hi in _UNSPACED)


def term_pattern(term: str) -> str:
    """The regular expression a plain term stands for (see the module docstring)."""
    words = normalize(term).split()
    body = r"\s+".join(re.escape(w) for w in words)
    head = r"(?<!\w)" if _spaced_word_char(words[0][0]) else ""
    tail = r"(?!\w)" if _spaced_word_char(words[-1][-1]) else ""
    return head + body + tail


def parse_entries(text: str) -> list[re.Pattern[str]]:
    """Compiled patterns of a blocked-terms file; `BlockListError` names a bad line."""
    patterns = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) >= 2 and line.startswith("/") and line.endswith("/"):
            # Not casefolded: that would turn `\S` into `\s`; IGNORECASE covers case.
            source = unicodedata.normalize("NFKC", line[1:-1])
        else:
            source = term_pattern(line)
        try:
            patterns.append(re.compile(source, re.IGNORECASE))
        except re.error as exc:
            raise BlockListError(f"line {number}: not a valid regular expression: {exc}") from exc
    return patterns


@dataclass(frozen=True, slots=True)
class BlockList:
    patterns: tuple[re.Pattern[str], ...] = ()

    def blocks(self, text: str) -> bool:
        if not self.patterns:
            return False
        folded = normalize(text)
        return any(p.search(folded) for p in self.patterns)


class ContentPolicy:
    """The block list of `--blocked-terms-file`, kept current with the file."""

    def __init__(self, path: str | None) -> None:
        self._path = Path(path) if path else None
        self._list = BlockList()
        self._file_state: tuple[int, int, int] | None = None
        self._checked_at = time.monotonic()
        if self._path is not None:
            # A list that is configured but missing or broken is a broken deployment:
            # refuse to start rather than serve without the policy.
            self._list = BlockList(tuple(parse_entries(self._path.read_text(encoding="utf-8"))))
            self._file_state = _state(self._path)
            log.info("content policy: %d blocked entries", len(self._list.patterns))

    @property
    def enabled(self) -> bool:
        return self._path is not None

    @property
    def entries(self) -> int:
        return len(self._list.patterns)

    def blocks(self, text: str) -> bool:
        self._maybe_reload()
        return self._list.blocks(text)

    def _maybe_reload(self) -> None:
        if self._path is None or time.monotonic() - self._checked_at < RELOAD_EVERY_S:
            return
        self._checked_at = time.monotonic()
        try:
            state = _state(self._path)
            if state == self._file_state:
                return
            patterns = parse_entries(self._path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, BlockListError) as exc:
            log.warning(
                "blocked-terms file %s not reloaded (keeping the last list): %s", self._path, exc
            )
            return
        self._list = BlockList(tuple(patterns))
        self._file_state = state
        log.info("content policy reloaded: %d blocked entries", len(patterns))


def _state(path: Path) -> tuple[int, int, int]:
    # A ConfigMap update swaps a symlink: the inode changes even when size and mtime agree.
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino
