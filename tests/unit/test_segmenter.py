from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voicefleet_server.engine import segmenter
from voicefleet_server.engine.segmenter import (
    DEFAULT_MAX_SEGMENT_CHARS,
    segment_chars,
    split_long,
    split_segments,
    split_sentences,
)


def test_splits_on_sentence_ends_and_line_breaks() -> None:
    text = 'Hello there. How are you?\nFine! "Quoted end." Next'
    assert split_segments(text) == [
        "Hello there.",
        "How are you?",
        "Fine!",
        '"Quoted end."',
        "Next",
    ]


def test_abbreviations_and_decimal_points_do_not_end_sentences() -> None:
    # The example: the old segmenter made five segments of it.
    text = "I met Dr. Smith in the U.S. yesterday. It cost 3.5 dollars, e.g. a lot."
    assert split_sentences(text) == [
        "I met Dr. Smith in the U.S. yesterday.",
        "It cost 3.5 dollars, e.g. a lot.",
    ]
    assert split_sentences("Mr. Brown left at 5 p.m. on Main St. in Boston. They talked.") == [
        "Mr. Brown left at 5 p.m. on Main St. in Boston.",
        "They talked.",
    ]
    # ...while an abbreviation that does end a sentence still ends it.
    assert split_sentences("I live in the U.S. It is big.") == ["I live in the U.S.", "It is big."]


def test_sentence_rules_follow_the_language() -> None:
    text = "Dr. Müller kam um 3 Uhr an. Er ging z. B. nach Hause. Das kostet 3,5 Euro."
    assert split_sentences(text, "de") == [
        "Dr. Müller kam um 3 Uhr an.",
        "Er ging z. B. nach Hause.",
        "Das kostet 3,5 Euro.",
    ]
    # A language pysbd lacks falls back to its English rules instead of failing.
    assert split_sentences("Dr. Smith came. He left.", "yo") == ["Dr. Smith came.", "He left."]


def test_wrapped_lines_are_joined_but_real_line_breaks_split() -> None:
    text = "This was wrapped by\nthe mail client. Title\nNext line\n\n- a list item"
    assert split_sentences(text) == [
        "This was wrapped by the mail client.",
        "Title",
        "Next line",
        "- a list item",
    ]


def test_whitespace_only_gives_nothing() -> None:
    assert split_segments(" \n\t  \n") == []
    assert split_segments("") == []


def test_short_sentences_stay_whole_whatever_their_commas() -> None:
    sentence = "Yes, well, no; maybe: it depends, really, on the weather, the time, and you."
    assert len(sentence) <= DEFAULT_MAX_SEGMENT_CHARS
    assert split_segments(sentence) == [sentence]


def test_long_sentences_are_cut_at_clauses_into_even_pieces() -> None:
    sentence = (
        "The plan had been drafted over many months by a committee of experts, "
        "it was approved at last; several members objected — they felt ignored, "
        "and they said so."
    )
    pieces = split_long(sentence, 80)
    assert pieces == [
        "The plan had been drafted over many months by a committee of experts,",
        "it was approved at last; several members objected —",
        "they felt ignored, and they said so.",
    ]
    # Greedy packing would leave a short tail; the fewest pieces are balanced instead.
    balanced = split_long("aaaa aaaa, bbbb bbbb, cccc cccc, dddd dddd, e.", 34)
    assert balanced == ["aaaa aaaa, bbbb bbbb,", "cccc cccc, dddd dddd, e."]


def test_commas_inside_numbers_are_not_clause_boundaries() -> None:
    pieces = split_long("We counted 1,234,567 stars and 2,345 more, then we went to bed.", 45)
    assert pieces == ["We counted 1,234,567 stars and 2,345 more,", "then we went to bed."]


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


def test_segment_chars_turns_audio_seconds_into_characters() -> None:
    assert segment_chars(8.0, 15.0) == 120 == DEFAULT_MAX_SEGMENT_CHARS
    assert segment_chars(2.0, 15.0) == 30
    assert segment_chars(0.01, 1.0) == 1
    with pytest.raises(ValueError):
        segment_chars(0, 15.0)


def test_long_paragraphs_go_through_pysbd_in_bounded_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pysbd's cost grows with the square of its input: a 100k-character job must reach
    # it in windows, and the windows must not change the sentences found.
    seen: list[int] = []
    real = segmenter._pysbd

    def recording(text: str, code: str) -> list[tuple[str, int]]:
        seen.append(len(text))
        return real(text, code)

    monkeypatch.setattr(segmenter, "_pysbd", recording)
    sentence = "I met Dr. Smith in the U.S. yesterday. It cost 3.5 dollars, e.g. a lot. "
    sentences = split_sentences(sentence * 300)
    assert max(seen) <= segmenter._WINDOW_CHARS
    assert len(seen) > 1
    assert (
        sentences
        == [
            "I met Dr. Smith in the U.S. yesterday.",
            "It cost 3.5 dollars, e.g. a lot.",
        ]
        * 300
    )


def test_a_sentence_longer_than_a_window_loses_nothing() -> None:
    words = " ".join(f"word{i}" for i in range(600))  # ~5k characters, no punctuation
    segments = split_segments(words + ". Next one.", max_chars=100)
    assert segments[-1] == "Next one."
    assert " ".join(segments[:-1]) == words + "."
    assert all(len(s) <= 100 for s in segments)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab .,;:!?—-\n\t3U.S")) | st.characters(), max_size=300),
    st.integers(min_value=1, max_value=80),
)
def test_never_drops_text_nor_exceeds_the_cap(text: str, max_chars: int) -> None:
    segments = split_segments(text, max_chars=max_chars)
    assert all(0 < len(s) <= max_chars for s in segments)
    assert all(s == s.strip() for s in segments)
    assert "".join("".join(segments).split()) == "".join(text.split())


@pytest.mark.parametrize("placeholder", [*"♨☝∯ȸȹ☉♬ƪ✂", "&ᓰ&", "\r"])
def test_pysbds_own_placeholder_characters_in_the_text_are_kept(placeholder: str) -> None:
    """pysbd marks list items and abbreviations with these; in a user's text they made it
    return no sentence at all ("a ♨ b" -> [])."""
    text = f"Send the {placeholder} list. Dr. Smith reads it {placeholder} aloud."
    segments = split_segments(text, max_chars=80)
    assert "".join("".join(segments).split()) == "".join(text.split())
    assert len(segments) == 2
