"""Batch-forming decisions: which waiting segments run next, and when.

Pure functions over plain data, so fairness, windows and budgets are unit-tested
without a model or a clock. The batcher calls `plan_batch` each time the device is
free and acts on the decision.

Ordering is earliest-deadline-first over per-segment deadlines. Segment k of a request
is due at `arrival + (k + 1) * segment_slo_s`: a one-line request that arrives while a
long text is rendering is due long before that text's later segments, so it runs
between them instead of waiting behind them (fair queueing without per-client state).
Interactive requests get a tighter slo than background jobs through `priority`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int
    max_padded_tokens: int
    window_s: float
    # Joining a batch may not make it more than this share padding (length bucketing).
    max_padding_waste: float = 0.5


@dataclass(frozen=True, slots=True)
class Waiting:
    """What the scheduler needs to know about one queued segment."""

    key: int
    tokens: int
    enqueued_at: float
    deadline: float
    # Segments can share a model call only when their group matches (model family, dtype path).
    group: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """Run `batch` now (keys in run order), or wait `wait_s` before asking again."""

    batch: tuple[int, ...] = ()
    wait_s: float = 0.0


def segment_deadline(arrival: float, index: int, segment_slo_s: float) -> float:
    return arrival + (index + 1) * segment_slo_s


def padded_tokens(token_counts: Sequence[int]) -> int:
    return max(token_counts, default=0) * len(token_counts)


def padding_waste(token_counts: Sequence[int]) -> float:
    """Share of a padded batch that is padding (0 for a batch of equal lengths)."""
    total = padded_tokens(token_counts)
    return 0.0 if total == 0 else 1.0 - sum(token_counts) / total


def select_batch(waiting: Sequence[Waiting], limits: BatchLimits) -> list[Waiting]:
    """The batch to run if the device were free now.

    Starts from the most urgent segment and adds others in deadline order when they
    share its group, stay within the padded-token budget and keep padding waste low.
    The most urgent segment always runs, even alone over budget (it cannot be split).
    """
    if not waiting:
        return []
    by_deadline = sorted(waiting, key=lambda w: (w.deadline, w.enqueued_at, w.key))
    head = by_deadline[0]
    chosen = [head]
    lengths = [head.tokens]
    for candidate in by_deadline[1:]:
        if len(chosen) >= limits.max_batch_size:
            break
        if candidate.group != head.group:
            continue
        trial = [*lengths, candidate.tokens]
        if padded_tokens(trial) > limits.max_padded_tokens:
            continue
        if padding_waste(trial) > limits.max_padding_waste:
            continue
        chosen.append(candidate)
        lengths = trial
    return chosen


def plan_batch(waiting: Sequence[Waiting], limits: BatchLimits, now: float) -> Decision:
    """Close a batch when it is full, when the budget is reached, or when the window
    measured from the oldest waiting segment has expired; otherwise say how long to wait."""
    if not waiting:
        return Decision()
    batch = select_batch(waiting, limits)
    oldest = min(w.enqueued_at for w in waiting)
    window_left = oldest + limits.window_s - now
    full = len(batch) >= limits.max_batch_size
    # Budget reached: another segment of the head's kind was left out only for lack of room.
    budget_bound = len(batch) < sum(1 for w in waiting if w.group == batch[0].group)
    if full or budget_bound or window_left <= 0:
        return Decision(batch=tuple(w.key for w in batch))
    return Decision(wait_s=window_left)
