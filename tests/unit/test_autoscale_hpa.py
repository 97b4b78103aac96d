"""The HPA arithmetic against the worked examples of the Kubernetes documentation
("Horizontal Pod Autoscaling": algorithm details, scaling policies, default behavior,
stabilization window) and of KEP-853 (configurable scale velocity)."""

from __future__ import annotations

import pytest
from voicefleet_bench.autoscale.hpa import (
    Behavior,
    HpaController,
    PodSample,
    ScalingPolicy,
    ScalingRules,
    apply_rate_limits,
    behavior_from_manifest,
    replicas_for_pod_metric,
    scale_down_limit,
    scale_up_limit,
    simple_desired_replicas,
    stabilize,
)


def test_doubles_when_metric_is_twice_the_target() -> None:
    # "if the current metric value is 200m, and the desired value is 100m, the number of
    # replicas will be doubled"
    assert simple_desired_replicas(3, 200.0, 100.0) == 6


def test_halves_when_metric_is_half_the_target() -> None:
    # "If the current value is instead 50m, you'll halve the number of replicas"
    assert simple_desired_replicas(4, 50.0, 100.0) == 2


@pytest.mark.parametrize("value", [90.5, 100.0, 109.5])
def test_no_change_within_ten_percent_tolerance(value: float) -> None:
    assert simple_desired_replicas(5, value, 100.0) == 5


def test_ceil_rounds_up() -> None:
    assert simple_desired_replicas(3, 115.0, 100.0) == 4  # 3.45 -> 4


def test_pod_metric_average_and_tolerance() -> None:
    pods = [PodSample(200.0), PodSample(100.0), PodSample(0.0)]  # average 100 -> ratio 1
    assert replicas_for_pod_metric(pods, 100.0, 3) == 3
    pods = [PodSample(300.0), PodSample(300.0)]  # ratio 3 -> 6
    assert replicas_for_pod_metric(pods, 100.0, 2) == 6


def test_missing_metrics_count_as_target_on_scale_down() -> None:
    # Two pods at 0 would halve; the missing pod counts as exactly the target, which
    # dampens the scale-down: (0 + 0 + 100) / 3 = 33 % -> ceil(0.33 * 3) = 1.
    pods = [PodSample(0.0), PodSample(0.0), PodSample(None)]
    assert replicas_for_pod_metric(pods, 100.0, 3) == 1
    # 40 + 40 + missing(100): ratio 0.6 -> ceil(1.8) = 2, not ceil(0.4 * 2) = 1.
    pods = [PodSample(40.0), PodSample(40.0), PodSample(None)]
    assert replicas_for_pod_metric(pods, 100.0, 3) == 2


def test_missing_metrics_count_as_zero_on_scale_up() -> None:
    # 300 + 300 + missing(0): ratio 2 over 3 pods -> 6 (not 3 * 3 = 9).
    pods = [PodSample(300.0), PodSample(300.0), PodSample(None)]
    assert replicas_for_pod_metric(pods, 100.0, 3) == 6


def test_not_yet_ready_pods_count_as_zero_on_a_cpu_scale_up() -> None:
    # Two Ready pods at 80 % and two still starting, target 50 %.
    pods = [
        PodSample(80.0),
        PodSample(80.0),
        PodSample(None, ready=False),
        PodSample(None, ready=False),
    ]
    # Ready-only ratio 80/50 = 1.6 -> scale up; with unready at 0: 40/50 = 0.8 < 1 ->
    # the direction reverses, so no change.
    assert replicas_for_pod_metric(pods, 50.0, 4, cpu=True) == 4


def test_pending_pods_do_not_count_for_custom_metrics_either() -> None:
    pods = [PodSample(300.0), PodSample(None, ready=False, pending=True)]
    # 300 + 0 over 2 pods: ratio 1.5 -> 3.
    assert replicas_for_pod_metric(pods, 100.0, 2) == 3


def test_no_samples_means_no_decision() -> None:
    assert replicas_for_pod_metric([PodSample(None, pending=True)], 100.0, 1) is None


# ---- scaling policies ---------------------------------------------------------------

DOC_SCALE_DOWN = ScalingRules(
    300.0, (ScalingPolicy("Pods", 4, 60.0), ScalingPolicy("Percent", 10, 60.0)), "Max"
)


def test_doc_example_percent_policy_wins_above_40_pods() -> None:
    # "if there are 80 replicas and the target has to be scaled down to 10 replicas then
    # during the first step 8 replicas will be reduced. In the next iteration when the
    # number of replicas is 72, 10% of the pods is 7.2 but the number is rounded up to 8."
    assert scale_down_limit(80, [], [], 0.0, DOC_SCALE_DOWN) == 72
    assert scale_down_limit(72, [], [], 60.0, DOC_SCALE_DOWN) == 64


def test_doc_example_pods_policy_wins_at_40_or_fewer() -> None:
    # "When the number of replicas falls below 40 the first policy (Pods) is applied and
    # 4 replicas will be reduced at a time."
    assert scale_down_limit(36, [], [], 0.0, DOC_SCALE_DOWN) == 32


def test_period_counts_earlier_changes() -> None:
    # 80 -> 72 ten seconds ago: within the 60 s period no further scale-down is allowed.
    assert scale_down_limit(72, [], [(0.0, 8)], 10.0, DOC_SCALE_DOWN) == 72
    # After the period has passed the policy applies again.
    assert scale_down_limit(72, [], [(0.0, 8)], 61.0, DOC_SCALE_DOWN) == 64


def test_select_policy_min_takes_the_smallest_change() -> None:
    # "no more than 5 Pods are removed per minute": 10 % of 100 = 10, Pods 5 -> 5.
    rules = ScalingRules(
        300.0, (ScalingPolicy("Percent", 10, 60.0), ScalingPolicy("Pods", 5, 60.0)), "Min"
    )
    assert scale_down_limit(100, [], [], 0.0, rules) == 95


def test_disabled_direction_never_moves() -> None:
    rules = ScalingRules(0.0, (ScalingPolicy("Pods", 4, 15.0),), "Disabled")
    assert scale_up_limit(3, [], [], 0.0, rules) == 3
    behavior = Behavior(scale_down=ScalingRules(300.0, DOC_SCALE_DOWN.policies, "Disabled"))
    assert apply_rate_limits(1, 5, [], [], 0.0, behavior, 1, 10) == 5


def test_default_scale_up_is_100_percent_or_4_pods_per_15_s() -> None:
    # "4 pods or a 100% of the currently running replicas may at most be added every 15
    # seconds"
    up = Behavior().scale_up
    assert scale_up_limit(1, [], [], 0.0, up) == 5
    assert scale_up_limit(10, [], [], 0.0, up) == 20
    # 1 -> 5 five seconds ago: the period starts from 1 again, so still at most 5.
    assert scale_up_limit(5, [(0.0, 4)], [], 5.0, up) == 5


def test_rate_limit_and_bounds() -> None:
    behavior = Behavior()
    assert apply_rate_limits(100, 2, [], [], 0.0, behavior, 1, 50) == 6  # +4 pods
    assert apply_rate_limits(100, 40, [], [], 0.0, behavior, 1, 50) == 50  # max bound
    assert apply_rate_limits(0, 10, [], [], 0.0, behavior, 3, 50) == 3  # min bound


# ---- stabilization --------------------------------------------------------------------


def test_kep_853_scale_down_stabilization_example() -> None:
    # KEP-853: window 600 s, one recommendation a minute, 10 replicas.
    behavior = Behavior(scale_down=ScalingRules(600.0, (ScalingPolicy("Pods", 5, 600.0),)))
    history = [(float(60 * i), r) for i, r in enumerate([10, 9, 8, 9, 9, 8, 9, 8, 9])]
    # Minute 10, recommendation 8: the largest in the window is 10 -> no change.
    assert stabilize(8, 10, history, 540.0, behavior) == 10
    # Minute 11, recommendation 7, the 10 has left the window -> 9.
    history.append((540.0, 8))
    assert stabilize(7, 10, history, 600.0, behavior) == 9


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    behavior = Behavior(scale_up=ScalingRules(60.0, Behavior().scale_up.policies))
    history = [(0.0, 4), (15.0, 8), (30.0, 9)]
    assert stabilize(10, 4, history, 45.0, behavior) == 4
    assert stabilize(10, 4, history, 61.0, behavior) == 8


def test_controller_waits_out_the_scale_down_window() -> None:
    hpa = HpaController(1, 10)  # default behavior: 300 s scale-down window
    current = hpa.decide(0.0, 2, 8)
    assert current == 6  # +4 pods (default policy)
    current = hpa.decide(15.0, current, 8)
    assert current == 8
    t = 30.0
    while t < 300.0:
        assert hpa.decide(t, current, 1) == 8, t
        t += 15.0
    # The 8 recorded at t=15 s leaves the window after 315 s.
    assert hpa.decide(315.0, current, 1) == 1


def test_behavior_round_trips_through_a_manifest() -> None:
    behavior = Behavior(
        scale_down=ScalingRules(120.0, (ScalingPolicy("Percent", 10, 60.0),), "Min")
    )
    assert behavior_from_manifest(behavior.to_manifest()) == behavior
    assert behavior_from_manifest({}) == Behavior()


def test_operator_hpa_ships_the_recommended_behavior() -> None:
    from voicefleet_bench.autoscale.defaults import RECOMMENDED
    from voicefleet_operator import autoscalers

    assert behavior_from_manifest(autoscalers.hpa_behavior()) == RECOMMENDED
    assert autoscalers.hpa_behavior() == RECOMMENDED.to_manifest()
