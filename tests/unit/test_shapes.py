"""Shape buckets: lengths rounded up per tier, every bucket listed, exact lengths on demand."""

from __future__ import annotations

from voicefleet_server.engine import shapes
from voicefleet_server.engine.shapes import Bucket


def test_lengths_round_up_to_their_tiers_step_and_long_ones_stay_exact() -> None:
    bucket = Bucket(tiers=((64, 16), (128, 32)))
    assert [bucket(n) for n in (1, 16, 17, 64, 65, 96, 97, 128)] == [
        16,
        16,
        32,
        64,
        96,
        96,
        128,
        128,
    ]
    assert bucket(129) == 129
    assert bucket.largest == 128


def test_every_bucket_is_listed_once_in_order() -> None:
    bucket = Bucket(tiers=((64, 16), (128, 32)))
    assert bucket.lengths() == [16, 32, 48, 64, 96, 128]
    for buckets in (shapes.FRAMES, shapes.TOKENS):
        listed = buckets.lengths()
        assert listed == sorted(set(listed))
        # Every length up to the largest lands on a listed bucket, never below itself.
        assert {buckets(n) for n in range(1, buckets.largest + 1)} == set(listed)


def test_exact_lengths_switches_rounding_off_for_the_block() -> None:
    assert shapes.frames(17) > 17
    with shapes.exact_lengths():
        assert shapes.frames(17) == 17 and shapes.tokens(17) == 17
    assert shapes.frames(17) > 17
