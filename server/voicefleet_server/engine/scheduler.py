"""Batch-forming decisions: which waiting segments run next, and when.

Pure functions over plain data, so fairness, windows and budgets are unit-tested
without a model or a clock. The batcher calls `plan_batch` each time the device is
free and acts on the decision.

Ordering is earliest-deadline-first over per-segment deadlines, which the batcher
computes (`segment_deadline`): segment k of a request is due (k + 1) slots after its
arrival, a slot being the measured time of one model call (never below a floor), and a
request that fell behind its schedule is due one slot after its last segment finished.
A one-line request that arrives while a long text is rendering is therefore due long
before that text's later segments, so it runs between them instead of waiting behind
them (fair queueing without per-client state). Background jobs get looser deadlines
through a larger slot (`slo_scale`). Segments share a batch only within one `group`.

Batch formation is fair too: every request with a segment waiting gets one place in the
batch (in deadline order) before any request gets a second one, and a request gets more
than one place only up to `request_share`, the batch size the device renders at about
the cost of one segment (measured at start-up). On a CPU, where a batch of n costs about
n segments, a request's later segments would only delay its own first audio and the
requests behind it; on a GPU a long text still fills its batches.
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
    # Most segments of one request in one batch. 1 (the default) unless the device was
    # measured to render that many segments for not much more than the price of one.
    request_share: int = 1


@dataclass(frozen=True, slots=True)
class Waiting:
    """What the scheduler needs to know about one queued segment."""

    key: int
    tokens: int
    enqueued_at: float
    deadline: float
    # Segments can share a model call only when their group matches (model family, dtype path).
    group: str = ""
    # The request this segment belongs to (None: a request of its own).
    request: int | None = None

    @property
    def owner(self) -> tuple[bool, int]:
        return (False, self.key) if self.request is None else (True, self.request)


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

    Starts from the most urgent segment. First pass: adds the most urgent segment of
    every other request, in deadline order; second pass (only where places are left):
    further segments of the requests already in, up to `request_share` each. Every
    addition shares the head's group, stays within the padded-token budget and keeps
    padding waste low. The most urgent segment always runs, even alone over budget (it
    cannot be split).
    """
    if not waiting:
        return []
    by_deadline = sorted(waiting, key=lambda w: (w.deadline, w.enqueued_at, w.key))
    head = by_deadline[0]
    chosen = [head]
    lengths = [head.tokens]
    keys = {head.key}
    share = {head.owner: 1}
    for second_pass in (False, True):
        for candidate in by_deadline[1:]:
            if len(chosen) >= limits.max_batch_size:
                return chosen
            if candidate.group != head.group or candidate.key in keys:
                continue
            placed = share.get(candidate.owner, 0)
            # First pass: requests not yet in the batch; second: more of those already in.
            if (not 0 < placed < limits.request_share) if second_pass else placed:
                continue
            trial = [*lengths, candidate.tokens]
            if padded_tokens(trial) > limits.max_padded_tokens:
                continue
            if padding_waste(trial) > limits.max_padding_waste:
                continue
            chosen.append(candidate)
            keys.add(candidate.key)
            lengths = trial
            share[candidate.owner] = placed + 1
    return chosen


def plan_batch(waiting: Sequence[Waiting], limits: BatchLimits, now: float) -> Decision:
    """Close a batch when it is full, when nothing else waiting could join it (budget,
    padding, or request share), or when the window measured from the oldest waiting
    segment has expired; otherwise say how long to wait for batch mates."""
    if not waiting:
        return Decision()
    batch = select_batch(waiting, limits)
    oldest = min(w.enqueued_at for w in waiting)
    window_left = oldest + limits.window_s - now
    full = len(batch) >= limits.max_batch_size
    # Another segment of the head's kind was left out: waiting longer would not add it.
    left_out = len(batch) < sum(1 for w in waiting if w.group == batch[0].group)
    if full or left_out or window_left <= 0:
        return Decision(batch=tuple(w.key for w in batch))
    return Decision(wait_s=window_left)
