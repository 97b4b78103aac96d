"""Numbers as words, in the locale's format: the number-reading half of the normalizer.

`Speller` makes num2words total for one language (None where it cannot say a form) and
knows how the locale writes numbers (1,234.5 or 1.234,5); the `spell_*` rules find
numbers, amounts and percentages in text and replace them. Shared by every language;
`text_en` adds the English-only rules on top.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from num2words import num2words

# Languages writing 3,5 for three and a half (and 1.000 or 1 000 for a thousand).
_DECIMAL_COMMA = frozenset(
    [
        "az", "be", "ca", "cs", "da", "de", "eo", "es", "fi", "fr", "hu", "id", "is", "it",
        "kz", "lt", "lv", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "sr", "sv", "tet",
        "tg", "tr", "uk", "vi",
    ]
)  # fmt: skip
# num2words' decimals are wrong in these (it drops the fraction, tr and vi read 3.5 as
# "three comma fifty", cy and ar garble it): read the fraction digit by digit after this word.
_DECIMAL_WORD = {"it": "virgola", "tr": "virgül", "vi": "phẩy", "cy": "pwynt"}
_BROKEN_DECIMALS = frozenset({"ar", *_DECIMAL_WORD})
_PERCENT_WORD = {
    "en": "percent", "de": "Prozent", "fr": "pour cent", "es": "por ciento",
    "it": "per cento", "pt": "por cento", "nl": "procent", "sv": "procent",
    "da": "procent", "no": "prosent", "ca": "per cent", "pl": "procent",
    "fi": "prosenttia", "id": "persen",
}  # fmt: skip
CURRENCY_SYMBOLS = {
    "$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "₽": "RUB", "₩": "KRW",
    "₺": "TRY", "₴": "UAH", "₪": "ILS",
}  # fmt: skip
# Longer runs of digits without group separators are identifiers (phone numbers,
# codes): read digit by digit. Grouped numbers ("1,234,567,890") are read as amounts.
_MAX_UNGROUPED_DIGITS = 9
_MAX_DIGITS = 15
# num2words' converters are shared objects, and some keep per-call state on themselves
# (the base class stores a decimal's precision in `self.precision` before reading it
# back): calls from two threads at once could read each other's digits.
_NUM2WORDS = threading.Lock()
# Marks where num2words joins a currency's units and cents (a private-use character: it
# survives `tidy`, unlike a control character, which counts as white space).
_MARK = "\ue000"


class Speller:
    """num2words for one language, made total: None where num2words cannot say it.

    num2words' language modules raise assorted errors (NotImplementedError, TypeError,
    AttributeError, IndexError) for forms they lack, so every call is guarded.
    """

    def __init__(self, language: str) -> None:
        self.language = language
        self.decimal_comma = language.split("_")[0] in _DECIMAL_COMMA

    def _call(self, value: int | Decimal, to: str, **kwargs: object) -> str | None:
        try:
            with _NUM2WORDS:
                words = num2words(value, lang=self.language, to=to, **kwargs)
        except Exception:
            return None
        return tidy(str(words)) or None

    def cardinal(self, value: int) -> str | None:
        return self._call(value, "cardinal")

    def ordinal(self, value: int) -> str | None:
        return self._call(value, "ordinal")

    def year(self, value: int) -> str | None:
        return self._call(value, "year")

    def digits(self, run: str) -> str:
        return " ".join(self.cardinal(int(d)) or d for d in run)

    def number(self, text: str) -> str | None:
        """Words for a number written in this locale: '1,234.5' (en), '1.234,5' (de)."""
        sign = ""
        if text[:1] in "-−":  # noqa: RUF001 (the minus sign)
            sign, text = "-", text[1:]
        group, point = (".", ",") if self.decimal_comma else (",", ".")
        for space in (" ", "\u00a0", "\u202f"):
            text = text.replace(space, "")
        whole, _, fraction = text.partition(point)
        grouped = group in whole
        whole = whole.replace(group, "")
        if not whole.isdigit() or (fraction and not fraction.isdigit()):
            return None
        too_long = len(whole) > (_MAX_DIGITS if grouped else _MAX_UNGROUPED_DIGITS)
        if too_long or (len(whole) > 1 and whole[0] == "0"):
            # An identifier (a phone number, "007"); one with a fraction is left as written.
            return None if fraction else self.digits(whole)
        if not fraction:
            return self.cardinal(int(sign + whole))
        if self.language in _BROKEN_DECIMALS:
            word = _DECIMAL_WORD.get(self.language)
            head = self.cardinal(int(sign + whole))
            return (
                None if word is None or head is None else f"{head} {word} {self.digits(fraction)}"
            )
        try:
            value = Decimal(f"{sign}{whole}.{fraction}")
        except InvalidOperation:
            return None
        return self._call(value, "cardinal")

    def currency(self, amount: str, code: str) -> str | None:
        """Words for `amount` (locale format) of currency `code`, without "zero cents"."""
        group, point = (".", ",") if self.decimal_comma else (",", ".")
        whole, _, fraction = amount.replace(" ", "").partition(point)
        whole = whole.replace(group, "")
        if not whole.isdigit() or (fraction and (not fraction.isdigit() or len(fraction) > 2)):
            return None
        cents = int(fraction.ljust(2, "0")) if fraction else 0
        value = Decimal(f"{int(whole)}.{cents:02d}")
        # num2words joins units and cents with a language-specific separator; splitting
        # on a marker of ours drops a zero part ("three euro, zero cents").
        marked = self._call(value, "currency", currency=code, separator=_MARK)
        if marked is None or _MARK not in marked:
            return marked
        units, _, subunits = (part.strip() for part in marked.partition(_MARK))
        if cents == 0:
            return units
        if int(whole) == 0:
            return subunits
        if self.language.startswith("en"):
            return f"{units} and {subunits}"
        return self._call(value, "currency", currency=code)


def tidy(words: str) -> str:
    # Hyphens and commas inside number words ("twenty-four", "one million, two hundred")
    # would be dropped or become clause boundaries; spaces read the same.
    return re.sub(r"\s+", " ", re.sub(r"[-,]", " ", words)).strip()


def spaced(match: re.Match[str], words: str) -> str:
    """`words` replacing `match`, with a space where it touches a letter or digit
    ("mp3" -> "mp three")."""
    source, start, end = match.string, match.start(), match.end()
    before = " " if start > 0 and source[start - 1].isalnum() else ""
    after = " " if end < len(source) and source[end].isalnum() else ""
    return f"{before}{words}{after}"


def substitute(
    pattern: re.Pattern[str], text: str, speak: Callable[[re.Match[str]], str | None]
) -> str:
    """Replace each match with `speak(match)`, or leave it as written where that is None."""

    def replace(match: re.Match[str]) -> str:
        words = speak(match)
        return match.group(0) if words is None else spaced(match, words)

    return pattern.sub(replace, text)


def number_pattern(speller: Speller) -> str:
    """A number as the locale writes it: grouped thousands, optional decimal part."""
    if speller.decimal_comma:
        return r"\d{1,3}(?:[.\u00a0\u202f]\d{3})+(?:,\d+)?|\d+(?:,\d+)?"
    return r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"


# A leading minus only where it cannot be a hyphen or a range ("1-2", "COVID-19").
_SIGN = r"(?:(?<![\w.,])[-−])?"  # noqa: RUF001 (the minus sign)


def spell_numbers(text: str, speller: Speller) -> str:
    """Every remaining number, in the locale's format, as words."""
    # "COVID-19": the hyphen may be outside the vocabulary and glue the words together.
    text = re.sub(r"(?<=[^\W\d_])-(?=\d)", " ", text)
    pattern = re.compile(rf"{_SIGN}(?:{number_pattern(speller)})")
    return substitute(pattern, text, lambda m: speller.number(m.group(0)))


def spell_currency(text: str, speller: Speller) -> str:
    """'$3.50', '3,50 €', '€ 5' as words (num2words' currency forms)."""
    number = number_pattern(speller)
    symbols = "".join(re.escape(s) for s in CURRENCY_SYMBOLS)
    before = re.compile(rf"([{symbols}])\s?({number})")
    after = re.compile(rf"({number})\s?([{symbols}])")
    text = substitute(
        before, text, lambda m: speller.currency(m.group(2), CURRENCY_SYMBOLS[m.group(1)])
    )
    return substitute(
        after, text, lambda m: speller.currency(m.group(1), CURRENCY_SYMBOLS[m.group(2)])
    )


def spell_percent(text: str, speller: Speller) -> str:
    word = _PERCENT_WORD.get(speller.language.split("_")[0])
    if word is None:
        return text
    pattern = re.compile(rf"({_SIGN}(?:{number_pattern(speller)}))\s?%")

    def speak(match: re.Match[str]) -> str | None:
        amount = speller.number(match.group(1))
        return None if amount is None else f"{amount} {word}"

    return substitute(pattern, text, speak)
