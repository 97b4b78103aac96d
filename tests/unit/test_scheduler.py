from __future__ import annotations

from voicefleet_server.engine.scheduler import (
    BatchLimits,
    Waiting,
    padding_waste,
    plan_batch,
    segment_deadline,
    select_batch,
)

LIMITS = BatchLimits(max_batch_size=4, max_padded_tokens=1000, window_s=0.05)


def request(first_key: int, arrival: float, lengths: list[int], slo: float = 0.5) -> list[Waiting]:
    """One request's segments; keys from `first_key`, which also names the request."""
    return [
        Waiting(first_key + i, n, arrival, segment_deadline(arrival, i, slo), request=first_key)
        for i, n in enumerate(lengths)
    ]


def test_a_short_request_runs_between_a_long_requests_segments() -> None:
    long_text = request(0, arrival=0.0, lengths=[50] * 40)
    short = request(100, arrival=3.0, lengths=[50])  # arrives while segment ~6 renders
    limits = BatchLimits(max_batch_size=1, max_padded_tokens=1000, window_s=0.0)
    decision = plan_batch(long_text[6:] + short, limits, now=3.0)
    # Segment 6 of the long text is due at 3.5; the short one at 3.5 too but arrived later:
    # EDF runs the long text's segment 6, then the short one, not the 33 remaining segments.
    assert decision.batch == (6,)
    decision = plan_batch(long_text[7:] + short, limits, now=3.3)
    assert decision.batch == (100,)


def test_a_background_request_yields_to_interactive_work() -> None:
    job = request(0, arrival=0.0, lengths=[50] * 5, slo=5.0)
    interactive = request(100, arrival=1.0, lengths=[50, 50])
    limits = BatchLimits(max_batch_size=1, max_padded_tokens=1000, window_s=0.0)
    assert plan_batch(job + interactive, limits, now=1.0).batch == (100,)
    assert plan_batch(job + interactive[1:], limits, now=1.1).batch == (101,)
    assert plan_batch(job, limits, now=1.2).batch == (0,)


def test_every_waiting_request_gets_a_place_before_any_request_gets_a_second() -> None:
    long_text = request(0, arrival=0.0, lengths=[50] * 30)
    newcomer = request(100, arrival=9.0, lengths=[50])  # due after all 30: the text is early
    limits = BatchLimits(max_batch_size=4, max_padded_tokens=10_000, window_s=0.0, request_share=4)
    batch = plan_batch(long_text + newcomer, limits, now=9.0).batch
    # The text is most urgent, but its own later segments do not fill the places ahead
    # of the newcomer: one place each first, then the text fills what is left.
    assert batch == (0, 100, 1, 2)


def test_a_request_fills_a_batch_only_up_to_its_share() -> None:
    paragraph = request(0, arrival=0.0, lengths=[50] * 6)
    cpu = BatchLimits(max_batch_size=8, max_padded_tokens=10_000, window_s=0.0)
    # Where a batch of n costs n segments (share 1), a streamed paragraph's first segment
    # runs alone, so its first audio does not wait for its later segments.
    assert plan_batch(paragraph, cpu, now=0.0).batch == (0,)
    gpu = BatchLimits(max_batch_size=8, max_padded_tokens=10_000, window_s=0.0, request_share=4)
    assert plan_batch(paragraph, gpu, now=0.0).batch == (0, 1, 2, 3)


def test_several_requests_share_a_batch_one_segment_each() -> None:
    a = request(0, arrival=0.0, lengths=[40] * 3)
    b = request(10, arrival=0.1, lengths=[40] * 3)
    c = request(20, arrival=0.2, lengths=[40])
    limits = BatchLimits(max_batch_size=8, max_padded_tokens=10_000, window_s=0.0)
    assert plan_batch(a + b + c, limits, now=0.3).batch == (0, 10, 20)


def test_a_batch_left_short_by_the_share_closes_without_waiting_for_the_window() -> None:
    paragraph = request(0, arrival=0.0, lengths=[50] * 3)
    limits = BatchLimits(max_batch_size=8, max_padded_tokens=10_000, window_s=5.0)
    # Waiting would not let segment 1 join: the share rule, not lack of company, left it out.
    assert plan_batch(paragraph, limits, now=0.0).batch == (0,)


def test_waits_for_the_window_measured_from_the_oldest_segment() -> None:
    waiting = request(0, arrival=10.0, lengths=[30])
    decision = plan_batch(waiting, LIMITS, now=10.02)
    assert decision.batch == ()
    assert abs(decision.wait_s - 0.03) < 1e-9
    assert plan_batch(waiting, LIMITS, now=10.05).batch == (0,)


def test_a_full_batch_closes_before_the_window() -> None:
    waiting = [w for i in range(6) for w in request(i * 10, arrival=0.0, lengths=[30])]
    decision = plan_batch(waiting, LIMITS, now=0.0)
    assert len(decision.batch) == LIMITS.max_batch_size


def test_padded_token_budget_limits_the_batch_and_closes_it() -> None:
    limits = BatchLimits(max_batch_size=16, max_padded_tokens=250, window_s=1.0)
    waiting = [w for i in range(5) for w in request(i * 10, arrival=0.0, lengths=[100])]
    decision = plan_batch(waiting, limits, now=0.0)
    assert decision.batch == (0, 10)  # 2 x 100 fits, a third would pad to 300


def test_the_most_urgent_segment_runs_even_over_budget() -> None:
    limits = BatchLimits(max_batch_size=4, max_padded_tokens=10, window_s=0.0)
    assert select_batch(request(0, 0.0, [500]), limits)[0].key == 0


def test_length_bucketing_keeps_padding_waste_low() -> None:
    limits = BatchLimits(
        max_batch_size=8, max_padded_tokens=10_000, window_s=0.0, max_padding_waste=0.3
    )
    waiting = [
        Waiting(0, 100, 0.0, 1.0),
        Waiting(1, 10, 0.0, 1.1),
        Waiting(2, 90, 0.0, 1.2),
        Waiting(3, 95, 0.0, 1.3),
    ]
    chosen = select_batch(waiting, limits)
    assert [w.key for w in chosen] == [0, 2, 3]
    assert padding_waste([w.tokens for w in chosen]) <= 0.3


def test_segments_of_different_groups_never_share_a_batch() -> None:
    waiting = [Waiting(0, 10, 0.0, 1.0, group="vits"), Waiting(1, 10, 0.0, 1.1, group="speecht5")]
    assert [w.key for w in select_batch(waiting, LIMITS)] == [0]


def test_nothing_waiting_means_nothing_to_do() -> None:
    assert plan_batch([], LIMITS, now=0.0).batch == ()
