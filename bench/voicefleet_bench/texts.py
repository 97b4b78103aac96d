"""Request texts for load tests: a seeded mix of one-liners, paragraphs and long texts.

Texts use only lowercase letters, digits and basic punctuation so every VITS character
vocabulary (the tiny test model's included) keeps all of them. The same seed gives the same
texts, so two runs (batched vs one-at-a-time) see identical work.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

_VOCABULARY = (
    "the quick brown fox jumps over a lazy dog while morning light falls across quiet "
    "streets and people walk to work past small shops that open their doors one by one "
    "a train leaves the station on time carrying tired travellers toward the coast where "
    "waves break softly on the sand and children build castles near old wooden boats "
    "weather today will be mild with a gentle breeze from the west and clear skies later "
    "please remember to check your order number before calling our support team again"
)
_WORDS = _VOCABULARY.split()

# Sentences per text, inclusive ranges. "long" stands for the occasional long article.
KINDS: dict[str, tuple[int, int]] = {
    "short": (1, 1),
    "paragraph": (3, 6),
    "long": (20, 30),
}
DEFAULT_MIX: dict[str, float] = {"short": 0.7, "paragraph": 0.25, "long": 0.05}


def parse_mix(spec: str) -> dict[str, float]:
    """Parse `short=0.7,paragraph=0.25,long=0.05` (weights, normalised to sum to 1).

    A bare kind name (`short`) means that kind only.
    """
    weights: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise ValueError(f"unknown text kind {name!r} (expected one of {', '.join(KINDS)})")
        weight = float(value) if value else 1.0
        if weight < 0:
            raise ValueError(f"negative weight for {name!r}")
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mix {spec!r} has no positive weight")
    return {name: w / total for name, w in weights.items() if w > 0}


def format_mix(mix: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in mix.items())


def sentence(rng: random.Random, min_words: int = 8, max_words: int = 16) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))]
    return " ".join(words).capitalize() + "."


def make_text(kind: str, rng: random.Random) -> str:
    low, high = KINDS[kind]
    return " ".join(sentence(rng) for _ in range(rng.randint(low, high)))


def choose_kinds(mix: Mapping[str, float], n: int, rng: random.Random) -> list[str]:
    names = list(mix)
    return rng.choices(names, weights=[mix[k] for k in names], k=n)


def very_long_text(sentences: int, seed: int = 0) -> str:
    """A long-form text (an article or chapter) of `sentences` sentences."""
    rng = random.Random(seed)
    return " ".join(sentence(rng) for _ in range(sentences))
