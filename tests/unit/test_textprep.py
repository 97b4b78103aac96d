"""From request text to segments: sentences, normalization, the vocabulary check, the cap."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from voicefleet_server.engine.model import TextProfile
from voicefleet_server.engine.textprep import UnspeakableText, prepare_text
from voicefleet_server.engine.vits import vits_text_profile
from voicefleet_server.engine.vocabulary import check_vocabulary

# An MMS-like English profile: lower-case letters, digits dropped, a few punctuation marks.
ENGLISH = TextProfile("en", False, frozenset(string.ascii_lowercase + " '-"), True)


def test_issue_example_gives_two_normalized_segments() -> None:
    text = "I met Dr. Smith in the U.S. yesterday. It cost 3.5 dollars, e.g. a lot."
    prepared = prepare_text(text, ENGLISH)
    assert prepared.segments == [
        "I met Doctor Smith in the U S yesterday.",
        "It cost three point five dollars, for example a lot.",
    ]
    assert prepared.check.dropped_count == 0


def test_the_cap_counts_the_words_said_not_the_digits_written() -> None:
    # 28 characters as written, ~110 as said: cut at 60 after normalizing.
    prepared = prepare_text("It cost $1,234,567, I think.", ENGLISH, max_chars=60)
    assert prepared.segments == [
        "It cost one million two hundred and thirty four",
        "thousand five hundred and sixty seven dollars, I think.",
    ]


def test_a_few_unknown_characters_are_counted_not_refused() -> None:
    prepared = prepare_text("Café déjà vu, naïve.", ENGLISH)
    assert prepared.segments == ["Café déjà vu, naïve."]
    assert dict(prepared.check.dropped) == {"é": 2, "à": 1, "ï": 1}
    assert prepared.check.total == 15


def test_mostly_unknown_characters_are_refused_by_name() -> None:
    with pytest.raises(UnspeakableText) as caught:
        prepare_text("Привет, мир! Hi.", ENGLISH)
    message = str(caught.value)
    assert "'и' (U+0438)" in message and "'П' (U+041F)" in message
    assert "9 of 11 letters, digits and symbols" in message
    assert "the model reads 'en'" in message


def test_text_with_nothing_to_say_is_refused() -> None:
    for text in ("...", " !? ", "— — —"):
        with pytest.raises(UnspeakableText, match="nothing to say"):
            prepare_text(text, ENGLISH)
    # Also for a family without a vocabulary check.
    with pytest.raises(UnspeakableText, match="nothing to say"):
        prepare_text("!!!", TextProfile("en", reads_numbers=True))


def test_number_reading_front_ends_get_the_sentences_as_written() -> None:
    piper = TextProfile("en", reads_numbers=True)
    prepared = prepare_text("Dr. Smith paid $3.50 at 3:30 pm. Then he left.", piper)
    assert prepared.segments == ["Dr. Smith paid $3.50 at 3:30 pm.", "Then he left."]


def test_unknown_language_skips_number_rules_and_the_check_counts_the_digits() -> None:
    unknown = TextProfile(None, False, ENGLISH.vocabulary, True)
    prepared = prepare_text("Room 12 is free.", unknown)
    assert prepared.segments == ["Room 12 is free."]
    assert dict(prepared.check.dropped) == {"1": 1, "2": 1}


def test_check_vocabulary_lowercases_only_when_the_tokenizer_does() -> None:
    vocabulary = frozenset("abc")
    assert check_vocabulary("ABC", vocabulary, lowercase=True).dropped_count == 0
    assert check_vocabulary("ABC", vocabulary, lowercase=False).dropped_count == 3
    # Punctuation and spaces going is by design: they do not count.
    check = check_vocabulary("a, b. c!", vocabulary, lowercase=False)
    assert (check.total, check.dropped_count) == (3, 0)


def _tokenizer(tmp_path: Path, **kwargs: object) -> object:
    from transformers import VitsTokenizer

    vocab = {"<pad>": 0, "<unk>": 1} | {c: i + 2 for i, c in enumerate("abc '")}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return VitsTokenizer(str(tmp_path / "vocab.json"), **kwargs)  # type: ignore[arg-type]


def test_vits_profile_from_an_mms_like_tokenizer(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path, language="deu", phonemize=False, normalize=True)
    profile = vits_text_profile(tokenizer, "/models/anything")
    assert profile == TextProfile("de", False, frozenset("abc '"), True)


def test_vits_profile_of_a_phonemizing_tokenizer_skips_numbers_and_the_check(
    tmp_path: Path,
) -> None:
    tokenizer = _tokenizer(tmp_path, phonemize=True)
    profile = vits_text_profile(tokenizer, "facebook/mms-tts-eng")
    assert profile == TextProfile("en", reads_numbers=True)


def test_a_phonemizing_vits_subclass_reads_numbers_itself() -> None:
    from voicefleet_server.engine.vits import VitsSynthesizer

    class Phonemizing(VitsSynthesizer):
        phonemizes = True
        language_tag = "en-us"

        def __init__(self) -> None:  # no checkpoint: only the text profile is asked for
            pass

    assert Phonemizing().text_profile == TextProfile("en", reads_numbers=True)


def test_a_silent_part_may_give_no_segments_instead_of_an_error() -> None:
    # A dialogue turn "..." is a pause; the job as a whole is checked by its caller.
    assert prepare_text("...", ENGLISH, require_speech=False).segments == []
    with pytest.raises(UnspeakableText, match="cannot pronounce"):
        prepare_text("Привет, мир!", ENGLISH, require_speech=False)
