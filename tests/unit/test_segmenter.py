from __future__ import annotations

import pytest
from voicefleet_server.engine.segmenter import split_segments


def test_splits_on_sentence_ends_and_line_breaks() -> None:
    text = 'Hello there. How are you?\nFine! "Quoted end." Next'
    assert split_segments(text) == [
        "Hello there.",
        "How are you?",
        "Fine!",
        '"Quoted end."',
        "Next",
    ]


def test_whitespace_only_gives_nothing() -> None:
    assert split_segments(" \n\t  \n") == []


def test_decimal_points_do_not_split() -> None:
    assert split_segments("It costs 3.50 today.") == ["It costs 3.50 today."]


@pytest.mark.parametrize("max_chars", [10, 25, 60])
def test_long_sentences_are_cut_at_clauses_then_words_without_losing_text(max_chars: int) -> None:
    text = (
        "This sentence is long, it has several clauses; some are short, others ramble on "
        "without any punctuation for quite a while before they end and a supercalifragilisticword"
    )
    segments = split_segments(text, max_chars=max_chars)
    assert all(0 < len(s) <= max_chars for s in segments)
    assert "".join(segments).replace(" ", "") == text.replace(" ", "")


def test_clause_boundaries_are_preferred() -> None:
    segments = split_segments("first part here, second part here, third part here.", max_chars=20)
    assert segments == ["first part here,", "second part here,", "third part here."]
