"""HPA behaviours the study compares, and the one the operator ships (`RECOMMENDED`).

tests/unit/test_autoscale_hpa.py checks that the operator's HPA builder emits exactly
`RECOMMENDED`, so the study and the product cannot drift apart.
"""

from __future__ import annotations

from voicefleet_bench.autoscale.hpa import Behavior, ScalingPolicy, ScalingRules

_FAST_UP = (ScalingPolicy("Percent", 100, 15.0), ScalingPolicy("Pods", 4, 15.0))

# Scale up at once (no window; double or +4 pods every 15 s, whichever is more); scale
# down only after 5 minutes of lower recommendations, then at most 20 % or 2 pods a minute.
RECOMMENDED = Behavior(
    scale_up=ScalingRules(0.0, _FAST_UP, "Max"),
    scale_down=ScalingRules(
        300.0, (ScalingPolicy("Percent", 20, 60.0), ScalingPolicy("Pods", 2, 60.0)), "Max"
    ),
)

VARIANTS: dict[str, Behavior] = {
    "recommended": RECOMMENDED,
    "kubernetes default": Behavior(),
    "slow up (1 pod / 60 s)": Behavior(
        ScalingRules(0.0, (ScalingPolicy("Pods", 1, 60.0),)), RECOMMENDED.scale_down
    ),
    "up capped (100 % / 60 s)": Behavior(
        ScalingRules(0.0, (ScalingPolicy("Percent", 100, 60.0),
                           ScalingPolicy("Pods", 4, 60.0))), RECOMMENDED.scale_down
    ),
    "up window 60 s": Behavior(ScalingRules(60.0, _FAST_UP), RECOMMENDED.scale_down),
    "down window 60 s": Behavior(
        RECOMMENDED.scale_up,
        ScalingRules(60.0, RECOMMENDED.scale_down.policies, "Max"),
    ),
    "down window 600 s": Behavior(
        RECOMMENDED.scale_up,
        ScalingRules(600.0, RECOMMENDED.scale_down.policies, "Max"),
    ),
    "down 10 % / 60 s": Behavior(
        RECOMMENDED.scale_up,
        ScalingRules(300.0, (ScalingPolicy("Percent", 10, 60.0),
                             ScalingPolicy("Pods", 1, 60.0))),
    ),
}
