"""HiFi-GAN vocoding with per-item lengths, shared by the families whose vocoder is a
transformers HiFi-GAN (VITS's decoder, SpeechT5's `SpeechT5HifiGan`, Piper's type-2 blocks).

Run on a padded batch, a plain HiFi-GAN lets each item's last ~0.1 s hear its batch
mates' padding; masking every activation past each item's length makes batched output
equal to solo output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from voicefleet_server.engine.preempt import preemption_point


def masked_hifigan(
    decoder: Any,  # transformers' VitsHifiGan
    spectrogram: torch.Tensor,
    speaker: torch.Tensor | None,
    frame_lengths: torch.Tensor,
) -> torch.Tensor:
    """`VitsHifiGan.forward`, zeroing every activation past each item's length.

    Unmasked, a short item's last ~0.1 s hears its batch mates' padding (each conv's bias
    and receptive field reach into it); with the mask, every conv sees zeros past the end
    exactly as the item's solo run does, so batched output equals solo output.
    """
    slope = decoder.config.leaky_relu_slope
    lengths = frame_lengths.view(-1, 1)
    unpadded = bool((frame_lengths >= spectrogram.shape[-1]).all())

    def mask(hidden: torch.Tensor) -> torch.Tensor:
        if unpadded:  # a batch of one (or of equal lengths): the mask would be all ones
            return hidden
        scale = hidden.shape[-1] // spectrogram.shape[-1]
        positions = torch.arange(hidden.shape[-1], device=hidden.device).unsqueeze(0)
        return hidden * (positions < lengths * scale).unsqueeze(1).to(hidden.dtype)

    hidden = decoder.conv_pre(spectrogram)
    if speaker is not None:
        hidden = hidden + decoder.cond(speaker)
    hidden = mask(hidden)
    for i, upsample in enumerate(decoder.upsampler):
        hidden = mask(upsample(torch.nn.functional.leaky_relu(hidden, slope)))
        blocks = decoder.resblocks[i * decoder.num_kernels : (i + 1) * decoder.num_kernels]
        total = torch.zeros_like(hidden)
        for block in blocks:
            total = total + _masked_resblock(block, hidden, mask)
            # Each block is a few % of a call: urgent work waits at most that long here.
            preemption_point()
        hidden = total / decoder.num_kernels
    hidden = decoder.conv_post(torch.nn.functional.leaky_relu(hidden))
    return torch.tanh(mask(hidden))


def _masked_resblock(
    block: Any,  # transformers' HifiGanResidualBlock, or piper_model.HifiGanResidualBlock2
    hidden: torch.Tensor,
    mask: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    slope = block.leaky_relu_slope
    if hasattr(block, "convs"):  # type 2 (Piper): one dilated conv per step
        for conv in block.convs:
            hidden = mask(conv(torch.nn.functional.leaky_relu(hidden, slope))) + hidden
        return hidden
    for conv1, conv2 in zip(block.convs1, block.convs2, strict=True):
        residual = hidden
        hidden = mask(conv1(torch.nn.functional.leaky_relu(hidden, slope)))
        hidden = mask(conv2(torch.nn.functional.leaky_relu(hidden, slope)))
        hidden = hidden + residual
    return hidden
