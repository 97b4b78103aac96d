"""The text normalizer: what users write becomes what a model trained on words can read."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voicefleet_server.engine.text import model_language, normalize, resolve_language


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        # The sentence: abbreviations and a decimal point.
        (
            "I met Dr. Smith in the U.S. yesterday.",
            "I met Doctor Smith in the U S yesterday.",
        ),
        (
            "It cost 3.5 dollars, e.g. a lot.",
            "It cost three point five dollars, for example a lot.",
        ),
        # Currency: units and cents, no "zero cents", scale words, cents sign.
        ("It cost $3.50 today.", "It cost three dollars and fifty cents today."),
        ("A $5 bill.", "A five dollars bill."),
        ("Only $0.99!", "Only ninety nine cents!"),
        ("£1 and €2.", "one pound sterling and two euro."),
        ("Worth $1.5 million.", "Worth one point five million dollars."),
        ("It's $3bn.", "It's three billion dollars."),
        ("Just 50¢.", "Just fifty cents."),
        ("It was ¥500.", "It was five hundred yen."),
        # Percentages.
        ("It rose 45% and 12.5 %.", "It rose forty five percent and twelve point five percent."),
        # Clock times.
        ("Meet me at 3:30 pm.", "Meet me at three thirty p m."),
        ("At 3:30 p.m. today.", "At three thirty p m today."),
        ("At 5 a.m.", "At five a m."),
        ("At 14:00, 9:05 and 10:00.", "At fourteen hundred, nine oh five and ten o'clock."),
        # Dates and years.
        ("On 2024-03-01 we left.", "On March first, twenty twenty four we left."),
        ("March 5, 2024 was fine.", "March fifth, twenty twenty four was fine."),
        ("It was 5 March.", "It was the fifth of March."),
        ("On the 5th of March.", "On the fifth of March."),
        ("In Jan. 2020.", "In January twenty twenty."),
        (
            "In 1999 we had 1999 people.",
            "In nineteen ninety nine we had one thousand nine hundred and ninety nine people.",
        ),
        ("The 1990s and the '80s.", "The nineteen nineties and the eighties."),
        ("From 1990-2000.", "From nineteen ninety to two thousand."),
        # Ordinals.
        ("The 1st, 22nd and 103rd.", "The first, twenty second and one hundred and third."),
        # Abbreviations: titles before a name, streets elsewhere, Latin, initialisms.
        (
            "Mr. and Mrs. Jones vs. St. Paul etc.",
            "Mister and Missus Jones versus Saint Paul et cetera.",
        ),
        ("He lives on Elm Dr.", "He lives on Elm Drive."),
        ("Fruit, i.e. apples.", "Fruit, that is apples."),
        ("No. 5 won.", "Number five won."),
        ("Apple Inc. grew.", "Apple Incorporated grew."),
        ("She moved to the U.K.", "She moved to the U K."),
        # Numbers: grouping, signs, identifiers, digits glued to letters.
        (
            "1,234,567 ants.",
            "one million two hundred and thirty four thousand five hundred and sixty seven ants.",
        ),
        ("It was -5 degrees.", "It was minus five degrees."),
        (
            "Call 5551234567 or 007.",
            "Call five five five one two three four five six seven or zero zero seven.",
        ),
        ("COVID-19, mp3 and 3D.", "COVID nineteen, mp three and three D."),
        ("Pi is 3.14159.", "Pi is three point one four one five nine."),
        # Symbols.
        ("Tom & Jerry.", "Tom and Jerry."),
        ("It is 20°C.", "It is twenty degrees Celsius."),
        # Typographic apostrophes become the one vocabularies have.
        ("It\u2019s fine.", "It's fine."),
        # Plain text passes untouched.
        ("Hello there, how are you?", "Hello there, how are you?"),
    ],
)
def test_english(written: str, spoken: str) -> None:
    assert normalize(written, "en") == spoken


@pytest.mark.parametrize(
    ("language", "written", "spoken"),
    [
        (
            "de",
            "Es kostet 3,50 € für 1.234 Leute, 45 %, um 14:30 Uhr.",
            "Es kostet drei Euro und fünfzig Cent für eintausendzweihundertvierunddreißig "
            "Leute, fünfundvierzig Prozent, um vierzehn Uhr dreißig.",
        ),
        (
            "fr",
            "Le 1er mai à 14:30, 3,5 % et 12 €.",
            "Le premier mai à quatorze heures trente, trois virgule cinq pour cent et douze euros.",
        ),
        (
            "es",
            "El 2º piso cuesta 1.500,25 € y 10 %.",
            "El segundo piso cuesta mil quinientos euros con veinticinco céntimos y diez "
            "por ciento.",
        ),
        # num2words drops the fraction of Italian decimals: read digit by digit instead.
        ("it", "Costa 3,25 euro.", "Costa tre virgola due cinque euro."),
        ("ru", "Цена 3,5.", "Цена три целых пять десятых."),
    ],
)
def test_other_languages(language: str, written: str, spoken: str) -> None:
    assert normalize(written, language) == spoken


def test_unknown_language_and_number_reading_front_ends_leave_text_alone() -> None:
    text = "Dr. Smith paid $3.50 at 3:30 pm."
    assert normalize(text, None) == text
    # Piper voices: espeak-ng reads numbers and abbreviations itself.
    assert normalize(text, "en", reads_numbers=True) == text
    # Unknown language still gets Unicode composition (e + combining acute -> é).
    assert normalize("cafe\u0301", None) == "caf\u00e9"


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("eng", "en"),
        ("en-US", "en"),
        ("en_us", "en"),
        ("deu", "de"),
        ("pt-BR", "pt_BR"),
        ("fra", "fr"),
        ("yor", None),  # Yoruba: num2words has no rules for it
        ("", None),
        (None, None),
    ],
)
def test_resolve_language(tag: str | None, code: str | None) -> None:
    assert resolve_language(tag) == code


def test_model_language_prefers_the_tokenizer_then_the_mms_id() -> None:
    assert model_language("deu", "facebook/mms-tts-eng") == "de"
    assert model_language(None, "facebook/mms-tts-fra") == "fr"
    assert model_language(None, "/models/my-voice") is None
    assert model_language("yor", "facebook/mms-tts-yor") is None


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("0123456789$€£%.,:-/ apmAPMDrst°¢'&#")) | st.characters(),
        max_size=60,
    ),
    st.sampled_from(["en", "de", "fr", "es", "it", "ru", "ar", "ja", "vi", "tr", None]),
)
def test_never_raises_and_keeps_words(text: str, language: str | None) -> None:
    out = normalize(text, language)
    assert isinstance(out, str)
    # Words that are not numbers or abbreviations survive.
    assert ("zebra" in normalize(f"{text} zebra", language)) or language is None
