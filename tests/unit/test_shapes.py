"""Shape buckets: lengths rounded up per tier, every bucket listed, exact lengths on demand."""

from __future__ import annotations

import os

import pytest
from torch import nn
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


def test_kernels_per_shape_counts_each_distinct_conv_once() -> None:
    model = nn.Sequential(
        nn.Conv1d(4, 4, 3, padding=1),
        nn.Conv1d(4, 4, 3, padding=1),  # alike: the same kernel
        nn.Conv1d(4, 8, 3, padding=1),
        nn.Conv1d(4, 4, 3, padding=2, dilation=2),
        nn.ConvTranspose1d(8, 4, 4, 2),
        nn.Linear(4, 4),  # not a conv
    )
    assert shapes.kernels_per_shape(model) == 4


def test_the_cache_holds_every_bucket_at_every_thread_count() -> None:
    model = nn.Sequential(*(nn.Conv1d(4, 4, k) for k in range(1, 41)))  # 40 kernels a shape
    need = 40 * len(shapes.FRAMES.lengths())
    assert shapes.kernel_cache_capacity(model, 1) >= need
    assert shapes.kernel_cache_capacity(model, 2) >= 2 * need
    small = nn.Sequential(nn.Conv1d(1, 1, 1))
    assert shapes.kernel_cache_capacity(small, 1) == shapes.KERNEL_CACHE_CAPACITY


def test_an_operators_own_cache_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "77")
    shapes.size_kernel_cache(5000)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "77"
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    shapes.size_kernel_cache(5000)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "5000"


def test_every_bucket_pairs_cover_each_token_and_frame_bucket() -> None:
    pairs = shapes.every_bucket()
    assert [f for _, f in pairs] == shapes.FRAMES.lengths()
    assert {t for t, _ in pairs} == set(shapes.TOKENS.lengths())
