"""Dialogue scripts and job plans: pure functions from a job's text to the chunks it renders.

A script is text whose lines start with a speaker label (`Speaker 1: ...`, or any label
the request maps to a voice). A job plan cuts the turns into sentence segments (the
engine's unit) and groups them into chunks (the unit users fetch and preview): a chunk
never spans two turns, so each turn's voice and the pause before it stay exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from voicefleet_server.engine.segmenter import split_segments

# A label ends at a colon, ASCII or fullwidth (U+FF1A, common in CJK scripts).
_COLON = ":\uff1a"
_SPEAKER_N = re.compile(rf"^\s*speaker\s*(\d{{1,4}})\s*[{_COLON}]\s?(.*)$", re.IGNORECASE)
_LABELLED = re.compile(rf"^\s*([^{_COLON}\n]{{1,64}}?)\s*[{_COLON}]\s?(.*)$")


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker's turn; `speaker` is None for text before the first label (plain text)."""

    speaker: str | None
    text: str


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Consecutive segments of one turn, rendered with one voice and fetched as one file."""

    speaker: str | None
    segments: tuple[str, ...]
    first_segment: int  # index of segments[0] among all the job's segments (seeds derive from it)
    starts_turn: bool  # a turn pause goes before this chunk (except the job's first chunk)


def normalize_label(label: str) -> str:
    """`speaker 1`, `SPEAKER  01` -> `Speaker 1`; other labels keep their case, trimmed."""
    match = _SPEAKER_N.match(label + ":")
    if match:
        return f"Speaker {int(match.group(1))}"
    return " ".join(label.split())


def parse_script(text: str, labels: Collection[str] = ()) -> list[Turn]:
    """Split `text` into speaker turns.

    A line starts a turn when it begins with `Speaker N:` or with one of `labels`
    (compared after `normalize_label`, case-insensitively). Lines without a label
    continue the current turn; text before the first label is a turn with no speaker.
    Plain text with no labels comes back as a single unlabelled turn. Empty turns are
    dropped; consecutive turns of one speaker stay separate (each gets its pause).
    """
    known = {normalize_label(label).casefold(): normalize_label(label) for label in labels}
    turns: list[Turn] = []
    speaker: str | None = None
    lines: list[str] = []

    def close() -> None:
        body = "\n".join(lines).strip()
        if body:
            turns.append(Turn(speaker, body))

    for line in text.splitlines():
        label = _label_of(line, known)
        if label is None:
            lines.append(line)
            continue
        close()
        speaker, lines = label[0], [label[1]]
    close()
    return turns


def _label_of(line: str, known: Mapping[str, str]) -> tuple[str, str] | None:
    match = _SPEAKER_N.match(line)
    if match:
        return f"Speaker {int(match.group(1))}", match.group(2)
    if known:
        match = _LABELLED.match(line)
        if match:
            canonical = known.get(normalize_label(match.group(1)).casefold())
            if canonical is not None:
                return canonical, match.group(2)
    return None


def plan_chunks(
    turns: list[Turn],
    max_chunk_segments: int,
    segment: Callable[[str], list[str]] = split_segments,
) -> list[ChunkPlan]:
    """Segments of every turn, grouped into chunks of at most `max_chunk_segments`.

    Jobs pass the runtime's text -> segments stage as `segment`, so a job is cut exactly
    as a speech request with the same text would be."""
    if max_chunk_segments < 1:
        raise ValueError("max_chunk_segments must be positive")
    chunks: list[ChunkPlan] = []
    index = 0
    for turn in turns:
        segments = segment(turn.text)
        for start in range(0, len(segments), max_chunk_segments):
            part = tuple(segments[start : start + max_chunk_segments])
            chunks.append(ChunkPlan(turn.speaker, part, index, start == 0))
            index += len(part)
    return chunks
