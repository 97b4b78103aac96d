"""espeak-ng as a program: clause punctuation, the persistent pool, and its failures."""

# IPA strings are meant to hold IPA letters.
# ruff: noqa: RUF001

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from voicefleet_server.engine.phonemize import (
    EspeakPhonemizer,
    PhonemizerError,
    espeak_program,
    split_clauses,
)


@pytest.fixture(scope="module")
def phonemizer():  # type: ignore[no-untyped-def]
    p = EspeakPhonemizer("en-us", processes=2)
    yield p
    p.close()


def test_clauses_keep_their_punctuation_and_numbers_stay_whole() -> None:
    assert split_clauses("Hello, world. It cost 3.5 dollars?! Yes") == [
        ("Hello", ","),
        ("world", "."),
        ("It cost 3.5 dollars", "?"),
        ("Yes", ""),
    ]
    assert split_clauses("  ") == []
    assert split_clauses("line one\nline two\x00.") == [("line one line two", ".")]


def test_phonemes_match_espeak_with_piper_punctuation(phonemizer: EspeakPhonemizer) -> None:
    assert phonemizer.phonemize("Hello, world.") == _nfd("həlˈoʊ, wˈɜːld.")
    assert phonemizer.phonemize("How are you today?").endswith("?")
    assert phonemizer.phonemize("") == ""
    assert phonemizer.phonemize("...") == "."


def test_a_line_that_prints_several_clauses_is_read_whole(phonemizer: EspeakPhonemizer) -> None:
    # espeak ends a clause at "Dr." on its own and prints two lines for this one line.
    ipa = phonemizer.phonemize("I met Dr Smith and Mrs Jones yesterday")
    assert "smˈɪθ" in ipa and "dʒˈoʊnz" in ipa and "jˈɛstɚdˌeɪ" in ipa
    # The answer to the next call is not shifted by a line.
    assert phonemizer.phonemize("Hello, world.") == _nfd("həlˈoʊ, wˈɜːld.")


def test_the_marker_word_in_user_text_cannot_desynchronize(phonemizer: EspeakPhonemizer) -> None:
    phonemizer.phonemize("voicefleetsentinel VOICEFLEETSENTINEL")
    assert phonemizer.phonemize("Hello, world.") == _nfd("həlˈoʊ, wˈɜːld.")


def test_threads_share_the_pool_without_mixing_answers(phonemizer: EspeakPhonemizer) -> None:
    texts = [f"Sentence number {w} is here." for w in ("one", "two", "three", "four")] * 5
    expected = {t: phonemizer.phonemize(t) for t in set(texts)}
    got: dict[int, str] = {}

    def work(i: int, text: str) -> None:
        got[i] = phonemizer.phonemize(text)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(texts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [got[i] for i in range(len(texts))] == [expected[t] for t in texts]


def test_a_killed_process_fails_one_call_and_is_replaced() -> None:
    p = EspeakPhonemizer("en-us", processes=1)
    try:
        os.kill(p._all[0].proc.pid, signal.SIGKILL)
        p._all[0].proc.wait()
        with pytest.raises(PhonemizerError):
            p.phonemize("anyone there?")
        assert p.phonemize("Hello, world.") == _nfd("həlˈoʊ, wˈɜːld.")
    finally:
        p.close()


def test_missing_program_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PhonemizerError, match="'espeak-ng' program is not on PATH"):
        espeak_program()
    with pytest.raises(PhonemizerError, match="espeak-ng"):
        EspeakPhonemizer("en-us")


def test_unknown_espeak_voice_fails_at_start() -> None:
    with pytest.raises(PhonemizerError, match=r"voice 'xx-nope'.*does not exist"):
        EspeakPhonemizer("xx-nope")


def _nfd(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFD", text)
