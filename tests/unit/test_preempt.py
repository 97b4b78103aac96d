"""Preemption points: a render paused for another is unchanged, and the pause is counted."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from voicefleet_server.engine import preempt
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.vits import VitsSynthesizer


def test_a_point_without_a_hook_does_nothing_and_a_hook_runs_at_each_point() -> None:
    calls: list[int] = []
    preempt.preemption_point()
    with preempt.hook_installed(lambda: calls.append(1)):
        preempt.preemption_point()
        with preempt.hook_installed(None):
            preempt.preemption_point()
        preempt.preemption_point()
    preempt.preemption_point()
    assert calls == [1, 1]


def test_pauses_are_counted() -> None:
    before = preempt.paused_seconds()
    with preempt.pausing():
        time.sleep(0.02)
    assert preempt.paused_seconds() - before >= 0.02


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_a_render_paused_for_another_gives_the_same_audio(
    tiny_model_dir: str, autocast: torch.dtype | None
) -> None:
    synth = VitsSynthesizer(tiny_model_dir, Precision("cpu", autocast))
    text_long = "a long sentence that is being rendered when a newcomer arrives, slowly."
    long_tokens = synth.tokenize(text_long)
    short_tokens = synth.tokenize("a newcomer.")
    solo_long = synth.synthesize([SynthesisItem(long_tokens, seed=3)])[0]
    solo_short = synth.synthesize([SynthesisItem(short_tokens, seed=4)])[0]

    nested: list[np.ndarray] = []
    points = 0

    def serve_newcomer() -> None:
        nonlocal points
        points += 1
        # As the engine runs urgent work: outside the paused call's autocast region.
        with preempt.hook_installed(None), torch.autocast("cpu", enabled=False):
            nested.append(synth.synthesize([SynthesisItem(short_tokens, seed=4)])[0])

    with preempt.hook_installed(serve_newcomer):
        paused_long = synth.synthesize([SynthesisItem(long_tokens, seed=3)])[0]
    model = synth.model
    # Between the stages (3), after each text-encoder layer, each flow and each residual
    # step of the vocoder's blocks.
    layers = len(model.text_encoder.encoder.layers) + len(model.flow.flows)
    steps = sum(len(block.convs1) for block in model.decoder.resblocks)
    assert points == 3 + layers + steps
    np.testing.assert_array_equal(paused_long, solo_long)
    for wave in nested:
        np.testing.assert_array_equal(wave, solo_short)
