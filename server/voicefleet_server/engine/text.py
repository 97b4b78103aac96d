"""Text normalization before tokenizing: numbers, ordinals, currency, percentages, clock
times, dates and common abbreviations become words, per language.

MMS-TTS checkpoints were trained on normalized text and their tokenizer silently drops
what is outside its vocabulary, so "$3.50" would be read as nothing. num2words spells the
numbers (many languages); this module is only the glue that finds the patterns.

- English (`en`): every rule, including dates, times, years and abbreviations.
- Other languages num2words covers: numbers in the locale's format, decimals, currency
  symbols, percentages (where the word is known), ordinals (fr, es, it, pt) and clock times.
- Unknown languages: nothing beyond Unicode NFC (reading digits in the wrong language is
  worse than dropping them; the vocabulary check reports what gets dropped).
- Families whose front end reads numbers itself (Piper voices: espeak-ng) get the text
  unchanged: espeak-ng's own per-language rules already do all of this.

Pure functions; `normalize` never raises on any input.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import CONVERTER_CLASSES

from voicefleet_server.engine import text_en
from voicefleet_server.engine.numbers import (
    Speller,
    spell_currency,
    spell_numbers,
    spell_percent,
    substitute,
)

# ISO 639-3 codes (MMS checkpoints name their language so: facebook/mms-tts-eng) of the
# languages num2words covers.
_ISO639_3 = {
    "amh": "am", "ara": "ar", "aze": "az", "bel": "be", "ben": "bn", "cat": "ca",
    "ces": "cs", "che": "ce", "cym": "cy", "dan": "da", "deu": "de", "eng": "en",
    "epo": "eo", "spa": "es", "fas": "fa", "pes": "fa", "fin": "fi", "fra": "fr",
    "heb": "he", "hun": "hu", "ind": "id", "isl": "is", "ita": "it", "jpn": "ja",
    "kan": "kn", "kor": "ko", "kaz": "kz", "lit": "lt", "lav": "lv", "nld": "nl",
    "nor": "no", "nob": "no", "pol": "pl", "por": "pt", "ron": "ro", "rus": "ru",
    "slk": "sk", "slv": "sl", "srp": "sr", "swe": "sv", "tel": "te", "tet": "tet",
    "tgk": "tg", "tha": "th", "tur": "tr", "ukr": "uk", "vie": "vi",
}  # fmt: skip
_MMS_LANGUAGE = re.compile(r"mms-tts-([a-z]{3})\b")

# Clock times: "14:30" is "vierzehn Uhr dreißig"; languages not listed say "{h} {m}".
_HOUR_WORD = {"de": "Uhr", "fr": "heures", "nl": "uur"}


def resolve_language(tag: str | None) -> str | None:
    """num2words' code for a language tag ('eng', 'en-US', 'en_us', 'pt-BR'), or None."""
    if not tag:
        return None
    parts = re.split(r"[-_]", tag.strip())
    primary = parts[0].lower()
    primary = _ISO639_3.get(primary, primary)
    if len(parts) > 1:
        regional = f"{primary}_{parts[1].upper()}"
        if regional in CONVERTER_CLASSES:
            return regional
    return primary if primary in CONVERTER_CLASSES else None


def model_language(tokenizer_language: str | None, model_name: str) -> str | None:
    """The language a checkpoint reads: its tokenizer's `language` (MMS sets it to an ISO
    639-3 code), else the code in an MMS model id (facebook/mms-tts-deu), else None."""
    found = resolve_language(tokenizer_language)
    if found is None:
        match = _MMS_LANGUAGE.search(model_name.lower())
        found = resolve_language(match.group(1)) if match else None
    return found


def normalize(text: str, language: str | None, *, reads_numbers: bool = False) -> str:
    """Written-out `text` for a model reading `language` (a num2words code, see
    `resolve_language`). `reads_numbers`: the model's own front end reads numbers and
    abbreviations (espeak-ng), so the text passes unchanged."""
    if reads_numbers:
        return text
    text = unicodedata.normalize("NFC", text)
    if language is None:
        return text
    # Typographic apostrophes are rarely in a vocabulary; the ASCII one often is.
    text = text.replace("\u2019", "'").replace("\u02bc", "'")
    if language == "en" or language.startswith("en_"):
        text = text_en.normalize_english(text, Speller(language))
    else:
        text = _normalize_generic(text, Speller(language))
    return _squeeze(text)


_CLOCK = r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?!:\d)"
_ORDINALS = {
    "fr": re.compile(r"\b(\d+)(?:er|re|e|ème|ᵉ)\b"),
    "es": re.compile(r"\b(\d+)\.?[ºª°]"),
    "it": re.compile(r"\b(\d+)\.?[ºª°]"),
    "pt": re.compile(r"\b(\d+)\.?[ºª°]"),
}


def _normalize_generic(text: str, speller: Speller) -> str:
    base = speller.language.split("_")[0]
    text = spell_currency(text, speller)
    text = spell_percent(text, speller)
    ordinal = _ORDINALS.get(base)
    if ordinal is not None:
        text = substitute(ordinal, text, lambda m: speller.ordinal(int(m.group(1))))
    hour_word = _HOUR_WORD.get(base)
    # "14:30 Uhr" is read "vierzehn Uhr dreißig": a written hour word moves after the hour.
    pattern = re.compile(_CLOCK + (rf"(?:\s*{hour_word}\b)?" if hour_word else ""))

    def clock(match: re.Match[str]) -> str | None:
        hour, minute = speller.cardinal(int(match.group(1))), int(match.group(2))
        if hour is None:
            return None
        head = f"{hour} {hour_word}" if hour_word else hour
        return head if minute == 0 else f"{head} {speller.cardinal(minute) or ''}".strip()

    text = substitute(pattern, text, clock)
    return spell_numbers(text, speller)


def _squeeze(text: str) -> str:
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r" +([,.;:!?])", r"\1", text).strip()
