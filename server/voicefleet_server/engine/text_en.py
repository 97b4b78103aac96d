"""English rules of the text normalizer: dates, clock times, currency, years, ordinals,
abbreviations, initialisms and a few symbols, before the numbers that remain.

Numbers are spelled by num2words (through `numbers.Speller`); this module only finds the
patterns and says which form a number takes (a year, an ordinal, an amount). Order
matters: a date or a time is recognized before its numbers are read one by one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import CONVERTER_CLASSES

from voicefleet_server.engine.numbers import Speller, spell_numbers, spell_percent, substitute

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_ABBREVIATIONS = {m[:3]: m for m in _MONTHS} | {"Sept": "September"}
_MONTH = r"(January|February|March|April|May|June|July|August|September|October|November|" \
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"  # fmt: skip
_DAY = r"(0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(1[1-9]\d\d|20\d\d)"
_CLOSING = "\"')]}\u201d\u2019"

# Titles are expanded before a name; "Dr." and "St." elsewhere are streets.
_TITLES = {
    "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor",
    "St": "Saint", "Gen": "General", "Capt": "Captain", "Lt": "Lieutenant", "Col": "Colonel",
    "Sgt": "Sergeant", "Rev": "Reverend", "Hon": "Honorable", "Gov": "Governor",
    "Sen": "Senator", "Rep": "Representative", "Pres": "President", "Mt": "Mount",
    "Ft": "Fort",
}  # fmt: skip
_TITLES_ANYWHERE = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor",
                    "Dr": "Drive", "St": "Street"}  # fmt: skip
_SUFFIXES = {
    "Jr": "Junior", "Sr": "Senior", "Inc": "Incorporated", "Ltd": "Limited",
    "Corp": "Corporation", "Co": "Company", "Ave": "Avenue", "Blvd": "Boulevard",
    "Rd": "Road", "Dept": "Department", "Univ": "University", "Bros": "Brothers",
    "Fig": "Figure", "Vol": "Volume",
}  # fmt: skip
# Case-insensitive; each must end in a period or be a whole word.
_LATIN = {
    r"e\.\s?g\.": "for example", r"i\.\s?e\.": "that is", r"etc\.": "et cetera",
    r"vs\.?": "versus", r"approx\.": "approximately", r"cf\.": "compare",
    r"a\.k\.a\.": "also known as", r"viz\.": "namely", r"et al\.": "and others",
}  # fmt: skip
_SCALES = {"thousand": "thousand", "k": "thousand", "million": "million", "m": "million",
           "mn": "million", "billion": "billion", "b": "billion", "bn": "billion",
           "trillion": "trillion", "t": "trillion"}  # fmt: skip
_EN_CURRENCY_NAMES = {"JPY": ("yen", "yen"), "KRW": ("won", "won"), "TRY": ("lira", "lira"),
                      "UAH": ("hryvnia", "hryvnias"), "ILS": ("shekel", "shekels"),
                      "RUB": ("ruble", "rubles")}  # fmt: skip
_SYMBOL_CODES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "₽": "RUB",
                 "₩": "KRW", "₺": "TRY", "₴": "UAH", "₪": "ILS"}  # fmt: skip
_YEAR_CUES = [
    "in",
    "since",
    "by",
    "from",
    "until",
    "till",
    "of",
    "year",
    "circa",
    "before",
    "after",
    "during",
    "around",
    "early",
    "late",
    "mid",
    "spring",
    "summer",
    "autumn",
    "fall",
    "winter",
]


def normalize_english(text: str, speller: Speller) -> str:
    for rule in _RULES:
        text = rule(text, speller)
    return text


def _at_end(match: re.Match[str]) -> bool:
    """Whether nothing but closing quotes/brackets and spaces follows the match."""
    return not match.string[match.end() :].strip().strip(_CLOSING)


def _with_stop(match: re.Match[str], words: str) -> str:
    """Keep a sentence-final period that the matched abbreviation swallowed."""
    return f"{words}." if match.group(0).endswith(".") and _at_end(match) else words


def _dates(text: str, sp: Speller) -> str:
    def month(name: str) -> str:
        return _MONTH_ABBREVIATIONS.get(name, name)

    def year(value: str | None) -> str:
        return "" if value is None else f", {sp.year(int(value)) or value}"

    def iso(m: re.Match[str]) -> str | None:
        month_number = int(m.group(2))
        if not 1 <= month_number <= 12:
            return None
        return f"{_MONTHS[month_number - 1]} {sp.ordinal(int(m.group(3)))}{year(m.group(1))}"

    def month_day(m: re.Match[str]) -> str | None:
        return f"{month(m.group(1))} {sp.ordinal(int(m.group(2)))}{year(m.group(3))}"

    def day_month(m: re.Match[str]) -> str | None:
        preceding = m.string[: m.start()].rstrip().lower()
        the = "" if preceding.endswith("the") else "the "
        return f"{the}{sp.ordinal(int(m.group(1)))} of {month(m.group(2))}{year(m.group(3))}"

    def month_year(m: re.Match[str]) -> str | None:
        return f"{month(m.group(1))} {sp.year(int(m.group(2)))}"

    text = substitute(re.compile(rf"\b(\d{{4}})-(\d\d?)-{_DAY}\b"), text, iso)
    text = substitute(
        re.compile(rf"\b{_MONTH}\s+{_DAY}\b(?!:)(?:,?\s+{_YEAR}\b)?"), text, month_day
    )
    text = substitute(
        re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}\b(?:,?\s+{_YEAR}\b)?"), text, day_month
    )
    return substitute(re.compile(rf"\b{_MONTH}\s+{_YEAR}\b"), text, month_year)


_MERIDIEM = r"([AaPp])\.?\s?[Mm]\b\.?"


def _times(text: str, sp: Speller) -> str:
    def clock(hour: int, minute: int, meridiem: str | None) -> str | None:
        h = sp.cardinal(hour)
        if h is None:
            return None
        if minute == 0:
            head = h if meridiem else (f"{h} o'clock" if hour <= 12 else f"{h} hundred")
        elif minute < 10:
            head = f"{h} oh {sp.cardinal(minute)}"
        else:
            head = f"{h} {sp.cardinal(minute)}"
        return f"{head} {meridiem.lower()} m" if meridiem else head

    def with_meridiem(m: re.Match[str]) -> str | None:
        minute = int(m.group(2)) if m.group(2) else 0
        words = clock(int(m.group(1)), minute, m.group(3))
        return None if words is None else _with_stop(m, words)

    text = substitute(
        re.compile(rf"\b(1[0-2]|0?[1-9])(?::([0-5]\d))?\s*{_MERIDIEM}"), text, with_meridiem
    )
    return substitute(
        re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?!:\d)"),
        text,
        lambda m: clock(int(m.group(1)), int(m.group(2)), None),
    )


def _currency_names(code: str) -> tuple[str, str] | None:
    forms = getattr(CONVERTER_CLASSES["en"], "CURRENCY_FORMS", {}).get(code)
    if forms:
        singular, plural = forms[0]
        return str(singular), str(plural)
    return _EN_CURRENCY_NAMES.get(code)


def _currency(text: str, sp: Speller) -> str:
    symbols = "".join(re.escape(s) for s in _SYMBOL_CODES)
    scales = "|".join(sorted(_SCALES, key=len, reverse=True))
    pattern = re.compile(
        rf"([{symbols}])\s?(\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)"
        rf"(?:\s?({scales})\b)?",
        re.IGNORECASE,
    )

    def speak(m: re.Match[str]) -> str | None:
        code, amount, scale = _SYMBOL_CODES[m.group(1)], m.group(2), m.group(3)
        names = _currency_names(code)
        if scale is not None:
            number = sp.number(amount)
            if number is None or names is None:
                return None
            return f"{number} {_SCALES[scale.lower()]} {names[1]}"
        words = sp.currency(amount, code)
        if words is not None:
            return words
        number = sp.number(amount)
        if number is None or names is None:
            return None
        return f"{number} {names[0] if amount == '1' else names[1]}"

    text = substitute(pattern, text, speak)

    def cents(m: re.Match[str]) -> str | None:
        number = sp.cardinal(int(m.group(1)))
        return None if number is None else f"{number} {'cent' if m.group(1) == '1' else 'cents'}"

    return substitute(re.compile(r"\b(\d+)\s?¢"), text, cents)


def _abbreviations(text: str, sp: Speller) -> str:
    def table(words: dict[str, str], tail: str) -> re.Pattern[str]:
        alternatives = "|".join(sorted(words, key=len, reverse=True))
        return re.compile(rf"\b({alternatives})\.{tail}")

    text = table(_TITLES, r"(?=\s+[A-Z])").sub(lambda m: _TITLES[m.group(1)], text)
    for words in (_TITLES_ANYWHERE, _SUFFIXES):
        pattern = table(words, "")
        text = pattern.sub(lambda m, w=words: _with_stop(m, w[m.group(1)]), text)  # type: ignore[misc]
    for written, spoken in _LATIN.items():
        pattern = re.compile(rf"(?<![\w.]){written}(?!\w)", re.IGNORECASE)
        text = pattern.sub(lambda m, s=spoken: _with_stop(m, s), text)  # type: ignore[misc]
    months = "|".join(sorted(_MONTH_ABBREVIATIONS, key=len, reverse=True))
    text = re.sub(rf"\b({months})\.", lambda m: _MONTH_ABBREVIATIONS[m.group(1)], text)
    text = re.sub(r"\b([Nn])o\.(?=\s?\d)", lambda m: f"{m.group(1)}umber", text)
    # Initialisms: "U.S." -> "U S" (letters the model reads one by one).
    return re.sub(
        r"(?<![\w.])((?:[A-Za-z]\.){2,})(?!\w)",
        lambda m: _with_stop(m, " ".join(c.upper() for c in m.group(1) if c.isalpha())),
        text,
    )


def _ordinals(text: str, sp: Speller) -> str:
    pattern = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
    return substitute(pattern, text, lambda m: sp.ordinal(int(m.group(1))))


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _years(text: str, sp: Speller) -> str:
    def year(value: str) -> str:
        return sp.year(int(value)) or value

    text = substitute(
        re.compile(rf"\b{_YEAR}\s?[-–]\s?{_YEAR}\b"),  # noqa: RUF001 (en dash)
        text,
        lambda m: f"{year(m.group(1))} to {year(m.group(2))}",
    )
    # Decades: "1990s", "'90s".
    text = substitute(
        re.compile(r"\b(1[1-9]\d0|20\d0)s\b"), text, lambda m: _plural(year(m.group(1)))
    )
    text = substitute(
        re.compile(r"(?<!\w)'(\d0)s\b"), text, lambda m: _plural(sp.cardinal(int(m.group(1))) or "")
    )
    cues = "|".join(_YEAR_CUES)
    text = re.sub(
        rf"\b({cues})\s+{_YEAR}\b(?![.,]\d)",
        lambda m: f"{m.group(1)} {year(m.group(2))}",
        text,
        flags=re.IGNORECASE,
    )
    return substitute(
        re.compile(rf"\b{_YEAR}\s?(AD|BC|BCE|CE)\b"),
        text,
        lambda m: f"{year(m.group(1))} {' '.join(m.group(2))}",
    )


_SYMBOLS = (
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"(?<=\d)\s?°C\b"), " degrees Celsius"),
    (re.compile(r"(?<=\d)\s?°F\b"), " degrees Fahrenheit"),
    (re.compile(r"(?<=\d)\s?°"), " degrees"),
    (re.compile(r"#(?=\d)"), "number "),
    (re.compile(r"\s@\s"), " at "),
    (re.compile(r"(?<=\d)\s?\+\s?(?=\d)"), " plus "),
    (re.compile(r"(?<=\d)\s?=\s?(?=\d)"), " equals "),
)


def _symbols(text: str, sp: Speller) -> str:
    for pattern, words in _SYMBOLS:
        text = pattern.sub(words, text)
    return text


_RULES: tuple[Callable[[str, Speller], str], ...] = (
    _dates,
    _times,
    _currency,
    spell_percent,
    _abbreviations,
    _ordinals,
    _years,
    _symbols,
    spell_numbers,
)
