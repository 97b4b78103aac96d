"""HiFi-GAN vocoding with per-item lengths, shared by the families whose vocoder is a
transformers HiFi-GAN (VITS's decoder, SpeechT5's `SpeechT5HifiGan`, Piper's type-2 blocks).

Run on a padded batch, a plain HiFi-GAN lets each item's last ~0.1 s hear its batch
mates' padding; masking every activation past each item's length makes batched output
equal to solo output.

The vocoder is most of a call's time on CPU, and two layout choices make it about a
quarter faster there (bench/RESULTS.md, "Where torch's time goes"):
- activations stay channels-last, `[B, C, 1, T]`, from the first conv to the last:
  oneDNN reads and writes that layout as it is, where plain `[B, C, T]` tensors were
  reordered into its blocked layout and back around every conv;
- each upsampling transposed conv runs as an ordinary conv with `stride` times the output
  channels, whose outputs interleave into the upsampled signal (polyphase form): oneDNN
  builds a transposed-conv kernel per input length (~10 ms each), and every request
  brings a new length.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from voicefleet_server.engine.preempt import preemption_point

Mask = Callable[[torch.Tensor], torch.Tensor]


def masked_hifigan(
    decoder: Any,  # transformers' VitsHifiGan or SpeechT5HifiGan
    spectrogram: torch.Tensor,
    speaker: torch.Tensor | None,
    frame_lengths: torch.Tensor,
) -> torch.Tensor:
    """`VitsHifiGan.forward` ([B, C, frames] -> [B, 1, samples]), zeroing every
    activation past each item's length.

    Unmasked, a short item's last ~0.1 s hears its batch mates' padding (each conv's bias
    and receptive field reach into it); with the mask, every conv sees zeros past the end
    exactly as the item's solo run does, so batched output equals solo output.
    """
    vocoder = _prepared(decoder)
    lengths = frame_lengths.view(-1, 1)
    frames = spectrogram.shape[-1]
    unpadded = bool((frame_lengths >= frames).all())

    def mask(hidden: torch.Tensor) -> torch.Tensor:
        if unpadded:  # a batch of one (or of equal lengths): the mask would be all ones
            return hidden
        scale = hidden.shape[-1] // frames
        positions = torch.arange(hidden.shape[-1], device=hidden.device).unsqueeze(0)
        keep = (positions < lengths * scale).to(hidden.dtype)
        return hidden * keep.view(hidden.shape[0], 1, 1, -1)

    hidden = vocoder.conv_pre(spectrogram.unsqueeze(2).contiguous(memory_format=_LAYOUT))
    if speaker is not None and vocoder.cond is not None:
        hidden = hidden + vocoder.cond(speaker.unsqueeze(2))
    hidden = mask(hidden)
    for upsample, blocks in zip(vocoder.upsamplers, vocoder.resblocks, strict=True):
        hidden = mask(upsample(functional.leaky_relu(hidden, vocoder.slope)))
        total: torch.Tensor | None = None
        for block in blocks:
            out = block(hidden, mask)
            total = out if total is None else total + out
            # Each block is a few % of a call: urgent work waits at most that long here.
            preemption_point()
        assert total is not None
        hidden = total / len(blocks)
    hidden = vocoder.conv_post(functional.leaky_relu(hidden))  # transformers: default slope
    return torch.tanh(mask(hidden)).squeeze(2)


_LAYOUT = torch.channels_last


@dataclass(frozen=True)
class _Conv:
    """A `Conv1d` as a conv2d over `[B, C, 1, T]`, its weight kept channels-last."""

    weight: torch.Tensor  # [out, in, 1, kernel]
    bias: torch.Tensor | None
    stride: int
    padding: int
    dilation: int

    @classmethod
    def of(cls, conv: nn.Conv1d) -> _Conv:
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"unsupported HiFi-GAN conv: {conv}")
        return cls(
            conv.weight.detach().unsqueeze(2).contiguous(memory_format=_LAYOUT),
            None if conv.bias is None else conv.bias.detach(),
            conv.stride[0],
            int(conv.padding[0]),
            conv.dilation[0],
        )

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(
            hidden,
            self.weight,
            self.bias,
            (1, self.stride),
            (0, self.padding),
            (1, self.dilation),
        )


@dataclass(frozen=True)
class _Upsample:
    """A `ConvTranspose1d` in polyphase form: one conv computes, for every input step,
    the `stride` output samples it starts (phase-major output channels); read
    channels-last, those phases are already the interleaved signal."""

    phases: _Conv
    stride: int
    kernel: int
    crop: int  # the transposed conv's padding, cut from each end

    @classmethod
    def of(cls, upsample: nn.ConvTranspose1d) -> _Upsample:
        (stride,), (kernel,), (padding,) = upsample.stride, upsample.kernel_size, upsample.padding
        if upsample.groups != 1 or upsample.dilation[0] != 1 or upsample.output_padding[0]:
            raise ValueError(f"unsupported HiFi-GAN upsampler: {upsample}")
        taps = -(-kernel // stride)
        weight = upsample.weight.detach()  # [in, out, kernel]
        channels_in, channels_out, _ = weight.shape
        padded = weight.new_zeros(channels_in, channels_out, taps * stride)
        padded[..., :kernel] = weight
        # Output sample u = n * stride + r takes tap q * stride + r from input n - q: a
        # conv whose tap order is reversed (it reads n + q' - (taps - 1)).
        per_phase = padded.view(channels_in, channels_out, taps, stride).flip(2)
        phase_weight = per_phase.permute(3, 1, 0, 2).reshape(
            stride * channels_out, channels_in, 1, taps
        )
        bias = None if upsample.bias is None else upsample.bias.detach().repeat(stride)
        conv = _Conv(phase_weight.contiguous(memory_format=_LAYOUT), bias, 1, taps - 1, 1)
        return cls(conv, stride, kernel, padding)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, _, _, frames = hidden.shape
        phases = self.phases(hidden)  # [B, stride * out, 1, steps]
        steps = phases.shape[-1]
        channels = phases.shape[1] // self.stride
        # A view when `phases` is channels-last (its memory is [B, steps, stride, out]).
        signal = (
            phases.permute(0, 2, 3, 1)
            .reshape(batch, 1, steps * self.stride, channels)
            .permute(0, 3, 1, 2)
        )
        length = (frames - 1) * self.stride - 2 * self.crop + self.kernel
        return signal[..., self.crop : self.crop + length]


@dataclass(frozen=True)
class _ResBlock:
    """A HiFi-GAN residual block as steps of convs, each step a residual add: type 1
    (transformers) has two convs a step, type 2 (Piper) one."""

    steps: tuple[tuple[_Conv, ...], ...]
    slope: float

    @classmethod
    def of(cls, block: Any) -> _ResBlock:
        pairs: Sequence[tuple[nn.Conv1d, ...]]
        if hasattr(block, "convs"):  # piper_model.HifiGanResidualBlock2
            pairs = [(conv,) for conv in block.convs]
        else:  # transformers' HifiGanResidualBlock
            pairs = list(zip(block.convs1, block.convs2, strict=True))
        steps = tuple(tuple(_Conv.of(conv) for conv in pair) for pair in pairs)
        return cls(steps, float(block.leaky_relu_slope))

    def __call__(self, hidden: torch.Tensor, mask: Mask) -> torch.Tensor:
        for step in self.steps:
            residual = hidden
            for conv in step:
                hidden = mask(conv(functional.leaky_relu(hidden, self.slope)))
            hidden = hidden + residual
        return hidden


@dataclass(frozen=True)
class _Vocoder:
    conv_pre: _Conv
    cond: _Conv | None
    upsamplers: tuple[_Upsample, ...]
    resblocks: tuple[tuple[_ResBlock, ...], ...]  # the blocks after each upsampler
    conv_post: _Conv
    slope: float


# Built on a decoder's first call (after it is on its device) and kept while it lives;
# inference never changes its weights.
_VOCODERS: weakref.WeakKeyDictionary[nn.Module, _Vocoder] = weakref.WeakKeyDictionary()


def _prepared(decoder: Any) -> _Vocoder:
    vocoder = _VOCODERS.get(decoder)
    if vocoder is None:
        kernels = decoder.num_kernels
        blocks = [_ResBlock.of(block) for block in decoder.resblocks]
        cond = getattr(decoder, "cond", None)
        vocoder = _Vocoder(
            _Conv.of(decoder.conv_pre),
            None if cond is None else _Conv.of(cond),
            tuple(_Upsample.of(up) for up in decoder.upsampler),
            tuple(
                tuple(blocks[i * kernels : (i + 1) * kernels])
                for i in range(len(decoder.upsampler))
            ),
            _Conv.of(decoder.conv_post),
            float(decoder.config.leaky_relu_slope),
        )
        _VOCODERS[decoder] = vocoder
    return vocoder
