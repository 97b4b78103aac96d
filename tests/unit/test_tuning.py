from __future__ import annotations

from voicefleet_server.engine.tuning import MemoryProfile, choose_batch_limit, token_budget


def test_keeps_the_fastest_measured_batch_size() -> None:
    assert choose_batch_limit({1: 3.0, 2: 3.4, 4: 2.0}, ceiling=16) == 2


def test_batch_one_wins_when_batching_loses() -> None:
    # Measured on 2 CPU cores: VITS at batch 16 gives less audio per second than batch 1.
    assert choose_batch_limit({1: 3.5, 2: 2.9}, ceiling=16) == 1


def test_never_above_the_users_ceiling_and_trusts_it_without_measurements() -> None:
    assert choose_batch_limit({1: 1.0, 8: 9.0}, ceiling=4) == 1
    assert choose_batch_limit({}, ceiling=6) == 6


def test_token_budget_fits_within_headroom_of_the_budget() -> None:
    profile = MemoryProfile(baseline_bytes=1_000, bytes_per_padded_token=10.0)
    tokens = token_budget(profile, budget_bytes=11_000, headroom=1.0)
    assert tokens == 1_000
    assert profile.baseline_bytes + tokens * profile.bytes_per_padded_token <= 11_000


def test_no_budget_left_after_the_model_gives_zero() -> None:
    assert token_budget(MemoryProfile(5_000, 1.0), budget_bytes=4_000) == 0
