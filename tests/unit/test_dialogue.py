"""Dialogue parsing and job chunk plans (pure functions)."""

from __future__ import annotations

import pytest
from voicefleet_server.serving.dialogue import (
    ChunkPlan,
    Turn,
    normalize_label,
    parse_script,
    plan_chunks,
)


def test_plain_text_is_one_unlabelled_turn() -> None:
    text = "Once upon a time. Note: this colon is not a speaker.\nSecond line."
    assert parse_script(text) == [
        Turn(None, "Once upon a time. Note: this colon is not a speaker.\nSecond line.")
    ]


def test_speaker_lines_become_turns_and_unlabelled_lines_continue_them() -> None:
    script = (
        "Intro before anyone speaks.\n"
        "Speaker 1: Hello there.\n"
        "  and more from one.\n"
        "\n"
        "speaker 2 : Hi! Time: noon.\n"
        "SPEAKER 01: Back to me."
    )
    assert parse_script(script) == [
        Turn(None, "Intro before anyone speaks."),
        Turn("Speaker 1", "Hello there.\n  and more from one."),
        Turn("Speaker 2", "Hi! Time: noon."),
        Turn("Speaker 1", "Back to me."),
    ]


def test_custom_labels_only_when_mapped() -> None:
    script = "Alice: Hi Bob.\nBob: Hi Alice.\nNote: not a speaker."
    assert parse_script(script) == [Turn(None, script)]
    turns = parse_script(script, labels=["alice", "Bob"])
    assert turns == [Turn("alice", "Hi Bob."), Turn("Bob", "Hi Alice.\nNote: not a speaker.")]


def test_empty_turns_are_dropped() -> None:
    assert parse_script("Speaker 1:\nSpeaker 2:   \n\nSpeaker 1: Yes.") == [
        Turn("Speaker 1", "Yes.")
    ]
    assert parse_script("   \n") == []


def test_normalize_label() -> None:
    assert normalize_label("speaker   007") == "Speaker 7"
    assert normalize_label("  Dr.  Who ") == "Dr. Who"


def test_plan_chunks_never_spans_turns_and_numbers_segments_globally() -> None:
    # (Whole words: the segmenter reads "A. B. C." as initials, not three sentences.)
    turns = [
        Turn("Speaker 1", "Ay. Bee. See."),
        Turn("Speaker 2", "Dee."),
        Turn("Speaker 1", "Ee. Eff."),
    ]
    assert plan_chunks(turns, max_chunk_segments=2) == [
        ChunkPlan("Speaker 1", ("Ay.", "Bee."), 0, True),
        ChunkPlan("Speaker 1", ("See.",), 2, False),
        ChunkPlan("Speaker 2", ("Dee.",), 3, True),
        ChunkPlan("Speaker 1", ("Ee.", "Eff."), 4, True),
    ]


def test_plan_chunks_of_a_long_text_is_bounded() -> None:
    text = "This is one sentence of a long book. " * 1000
    chunks = plan_chunks(parse_script(text), max_chunk_segments=8)
    assert len(chunks) == 125
    assert sum(len(c.segments) for c in chunks) == 1000
    with pytest.raises(ValueError):
        plan_chunks([], 0)
