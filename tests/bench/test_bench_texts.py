"""The request text mix: parsing, determinism, and text kinds of the right size."""

from __future__ import annotations

import random

import pytest
from voicefleet_bench import texts


def test_parse_mix_normalises_and_rejects_nonsense() -> None:
    assert texts.parse_mix("short=3,long=1") == {"short": 0.75, "long": 0.25}
    assert texts.parse_mix("short") == {"short": 1.0}
    assert texts.parse_mix(texts.format_mix(texts.DEFAULT_MIX)) == pytest.approx(texts.DEFAULT_MIX)
    for bad in ("poem=1", "short=-1", "short=0", ""):
        with pytest.raises(ValueError):
            texts.parse_mix(bad)


def test_texts_are_seeded_and_sized_by_kind() -> None:
    a = texts.make_text("paragraph", random.Random(3))
    assert a == texts.make_text("paragraph", random.Random(3))
    assert 3 <= a.count(".") <= 6
    assert texts.make_text("short", random.Random(0)).count(".") == 1
    assert 20 <= texts.make_text("long", random.Random(0)).count(".") <= 30
    assert texts.very_long_text(50).count(".") == 50
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .")
    assert set(texts.very_long_text(40)) <= allowed


def test_choose_kinds_follows_the_weights() -> None:
    kinds = texts.choose_kinds({"short": 0.9, "long": 0.1}, 2000, random.Random(0))
    assert 0.85 < kinds.count("short") / 2000 < 0.95
