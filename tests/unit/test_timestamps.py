# ruff: noqa: RUF001, RUF003  (IPA symbols in phoneme examples)
"""Word timestamps as pure functions: input words -> normalized words -> segment words ->
tokens -> times."""

from __future__ import annotations

import pytest
from voicefleet_server.engine.segmenter import split_long
from voicefleet_server.engine.text import normalize
from voicefleet_server.engine.timestamps import (
    align_normalized,
    display_word,
    input_words,
    plan_words,
    split_owners,
    token_owners,
    word_times,
)


def weigh_en(word: str) -> int:
    return len(normalize(word, "en").split())


def owned(written: str) -> dict[str, list[str]]:
    """Which normalized words each written word became (real English normalizer)."""
    normalized = normalize(written, "en")
    words, spoken = input_words(written), input_words(normalized)
    owners = align_normalized(words, spoken, weigh_en)
    result: dict[str, list[str]] = {w: [] for w in words}
    for word, owner in zip(spoken, owners, strict=True):
        result[words[owner]].append(word)
    return result


def test_rewritten_words_keep_their_source() -> None:
    got = owned("It costs $3.50 today, Dr. Smith said.")
    assert got["$3.50"] == ["three", "dollars", "and", "fifty", "cents"]
    assert got["Dr."] == ["Doctor"]
    assert got["It"] == ["It"] and got["said."] == ["said."]


def test_a_run_of_rewritten_words_is_shared_by_weight() -> None:
    got = owned("On March 3, 2024 at 14:30 we met 42 people.")
    assert got["3,"] == ["third,"]
    assert got["2024"] == ["twenty", "twenty", "four"]
    assert got["14:30"] == ["fourteen", "thirty"]
    assert got["42"] == ["forty", "two"]


def test_one_written_word_may_become_several_and_none() -> None:
    got = owned("The U.S. has 50 states; e.g. Ohio.")
    assert got["U.S."] == ["U", "S"]
    assert got["e.g."] == ["for", "example"]
    owners = align_normalized(["a", "—", "b"], ["a", "b"], lambda _: 1)
    assert owners == [0, 2]  # the dash is said as nothing


def test_owners_are_monotonic() -> None:
    text = "In 1999, Mr. Jones paid $1,234,567 for 3 acres (approx. 12,140 m²) on Jan. 5th."
    normalized = normalize(text, "en")
    owners = align_normalized(input_words(text), input_words(normalized), weigh_en)
    assert owners == sorted(owners) and -1 not in owners


@pytest.mark.parametrize(
    ("word", "shown"),
    [("Hello,", "Hello"), ('"quoted"', "quoted"), ("$3.50", "$3.50"), ("U.S.", "U.S."),
     ("(approx.", "approx"), ("don't", "don't"), ("—", "")],
)  # fmt: skip
def test_display_word(word: str, shown: str) -> None:
    assert display_word(word) == shown


def test_segments_of_a_cut_sentence_map_back_to_the_sentence() -> None:
    sentence = "one two, three four, five six seven, eight"
    owners = list(range(8))
    pieces = split_long(sentence, 12)
    assert len(pieces) > 2
    mapped = split_owners(sentence, owners, pieces)
    assert [o for piece in mapped for o in piece] == owners
    # A word longer than a segment is cut in two: both halves keep its owner.
    long = "see https://example.com/a/very/long/path/that/never/ends now"
    cut = split_long(long, 20)
    mapped = split_owners(long, [0, 1, 2], cut)
    flat = [o for piece in mapped for o in piece]
    assert flat[0] == 0 and flat[-1] == 2 and set(flat[1:-1]) == {1} and len(flat) > 3


SILENT = {0, ord(" "), ord(",")}


def characters(text: str) -> list[int]:
    """A character tokenizer with blanks between characters (as VITS add_blank)."""
    ids = [0]
    for char in text.lower():
        ids += [ord(char), 0]
    return ids


def test_alignment_is_exact_for_a_character_tokenizer() -> None:
    words = ["hi,", "you", "there"]
    tokens = characters(" ".join(words))
    owners = token_owners(characters, words, tokens, SILENT)
    spelled: dict[int, str] = {}
    for owner, token in zip(owners, tokens, strict=True):
        if owner >= 0:
            spelled[owner] = spelled.get(owner, "") + chr(token)
        else:
            assert token in SILENT
    assert spelled == {0: "hi", 1: "you", 2: "there"}


def test_alignment_absorbs_a_phonemizer_merging_words() -> None:
    # espeak says "on the" as one word "ɔnðə", and "on" alone with a stress mark.
    alone = {"slid": "slˈɪd", "on": "ˈɔn", "the": "ðˈə", "smooth": "smˈuːð"}
    context = "slˈɪd ɔnðə smˈuːð"

    def phonemes(text: str) -> list[int]:
        spoken = context if text == " ".join(alone) else alone[text]
        return [ord(c) for c in spoken]

    words = list(alone)
    tokens = phonemes(" ".join(words))
    owners = token_owners(phonemes, words, tokens, {ord(" "), ord("ˈ")})
    heard = {w: "".join(chr(t) for t, o in zip(tokens, owners, strict=True) if o == i)
             for i, w in enumerate(words)}  # fmt: skip
    assert heard == {"slid": "slɪd", "on": "ɔn", "the": "ðə", "smooth": "smuːð"}
    assert [o for o in owners if o >= 0] == sorted(o for o in owners if o >= 0)


def test_a_word_said_differently_alone_gets_the_sounds_between_its_neighbours() -> None:
    # espeak reads "a" alone as the letter ("eɪ"); in "like a cup" it says "ɐ".
    alone = {"like": "lˈaɪk", "a": "ˈeɪ", "cup": "kˈʌp"}

    def phonemes(text: str) -> list[int]:
        spoken = "lˈaɪk ɐ kˈʌp" if text == "like a cup" else alone[text]
        return [ord(c) for c in spoken]

    tokens = phonemes("like a cup")
    owners = token_owners(phonemes, list(alone), tokens, {ord(" "), ord("ˈ")})
    heard = {w: "".join(chr(t) for t, o in zip(tokens, owners, strict=True) if o == i)
             for i, w in enumerate(alone)}  # fmt: skip
    assert heard == {"like": "laɪk", "a": "ɐ", "cup": "kʌp"}


def test_unmatched_tokens_are_shared_by_their_neighbours() -> None:
    def mangled(text: str) -> list[int]:
        # In context, "ab" and "cd" gain two sounds between them nobody says alone.
        return {"ab": [1, 2], "cd": [3, 4], "ab cd": [1, 2, 7, 8, 3, 4]}[text]

    owners = token_owners(mangled, ["ab", "cd"], mangled("ab cd"), set())
    assert owners == [0, 0, 0, 1, 1, 1]


def test_word_times_run_from_first_sound_to_the_next_break() -> None:
    # "hi, you": blank h blank i blank , blank space blank y blank end-marker
    words = ["hi,", "you"]
    tokens = [0, 104, 0, 105, 0, 44, 0, 32, 0, 121, 0, 36]
    owners = [-1, 0, -1, 0, -1, -1, -1, -1, -1, 1, -1, -1]
    samples = [10, 20, 5, 20, 50, 30, 5, 40, 15, 40, 25, 100]
    times = word_times(
        words, owners, samples, {0, 44, 32, 36}, {32, 36}, tokens, rate=100, offset_samples=1000
    )
    # "hi,": from its first letter (after 10 samples of blank) through the blank after
    # it, its comma and the comma's blank; not the space.
    assert times[0] == pytest.approx((10.1, 11.4))
    # "you": not the space or the blank before it; its trailing blank, not the end marker.
    assert times[1] == pytest.approx((11.95, 12.6))


def test_plan_numbers_words_across_sentences_and_segments() -> None:
    sentences = []
    for written in ["Hello there, friend.", "It is 42 degrees."]:
        normalized = normalize(written, "en")
        sentences.append((written, normalized, split_long(normalized, 14)))
    plan = plan_words(sentences, weigh_en)
    assert plan.words == ["Hello", "there", "friend", "It", "is", "42", "degrees"]
    flat = [o for segment in plan.segments for o in segment]
    assert flat == [0, 1, 2, 3, 4, 5, 5, 6]
    assert len(plan.segments) >= 3
