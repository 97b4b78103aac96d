"""HiFi-GAN vocoding with per-item lengths, shared by the families whose vocoder is a
transformers HiFi-GAN (VITS's decoder, SpeechT5's `SpeechT5HifiGan`, Piper's type-2 blocks).

A batch is vocoded as one timeline: the items' spectrograms laid end to end with a few
silent frames between them (`Timeline`), every activation between and after the items
zeroed after every conv. Each item then sees exactly what its solo run sees (zeros past
both its ends), so batched output equals solo output, and no conv runs over padding up to
the longest item.

The vocoder is most of a call's time on CPU, and two layout choices cut it there
(bench/RESULTS.md, "Where torch's time went"):
- activations stay channels-last, `[1, C, 1, T]`, from the first conv to the last:
  oneDNN reads and writes that layout as it is, where plain `[B, C, T]` tensors were
  reordered into its blocked layout and back around every conv;
- each upsampling transposed conv runs as an ordinary conv with `stride` times the output
  channels, whose outputs interleave into the upsampled signal (polyphase form): oneDNN
  builds a transposed-conv kernel for every new input length, a slow one to build.
The timeline's length is rounded up to a frame bucket (engine/shapes.py), so that oneDNN
reuses the kernels it built for that length.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from voicefleet_server.engine import shapes
from voicefleet_server.engine.preempt import preemption_point

Mask = Callable[[torch.Tensor], torch.Tensor]


def masked_hifigan(
    decoder: Any,  # transformers' VitsHifiGan or SpeechT5HifiGan
    spectrogram: torch.Tensor,
    speaker: torch.Tensor | None,
    frame_lengths: torch.Tensor,
) -> torch.Tensor:
    """`VitsHifiGan.forward` ([B, C, frames] -> [B, 1, samples]) with per-item lengths:
    row i holds item i's solo rendering, zeros past its length. Items whose timeline would
    pass the largest frame bucket are vocoded in several timelines (`timeline_groups`)."""
    vocoder = _prepared(decoder)
    lengths = [int(n) for n in frame_lengths.tolist()]
    parts = [
        _vocode(
            vocoder,
            spectrogram[rows.start : rows.stop],
            None if speaker is None else speaker[rows.start : rows.stop],
            Timeline.of(lengths[rows.start : rows.stop], vocoder.gap),
        )
        for rows in timeline_groups(lengths, vocoder.gap, shapes.FRAMES.largest)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def timeline_groups(lengths: Sequence[int], gap: int, limit: int) -> list[range]:
    """Consecutive runs of items whose timeline (lengths plus gaps) stays within `limit`
    frames; an item longer than that alone. Timelines past the largest bucket would run at
    exact lengths, new kernels for nearly every batch (engine/shapes.py)."""
    groups: list[range] = []
    first, end = 0, 0
    for i, length in enumerate(lengths):
        if i > first and end + gap + length > limit:
            groups.append(range(first, i))
            first = i
        end = length if i == first else end + gap + length
    groups.append(range(first, len(lengths)))
    return groups


def _vocode(
    vocoder: _Vocoder, spectrogram: torch.Tensor, speaker: torch.Tensor | None, timeline: Timeline
) -> torch.Tensor:
    hidden = vocoder.conv_pre(timeline.pack(spectrogram))
    if speaker is not None and vocoder.cond is not None:
        hidden = hidden + timeline.spread(vocoder.cond(speaker.unsqueeze(2)))
    hidden = timeline.mask(hidden)
    for upsample, blocks in zip(vocoder.upsamplers, vocoder.resblocks, strict=True):
        hidden = timeline.mask(upsample(functional.leaky_relu(hidden, vocoder.slope)))
        total: torch.Tensor | None = None
        for block in blocks:
            out = block(hidden, timeline.mask)
            total = out if total is None else total + out
        assert total is not None
        hidden = total / len(blocks)
    hidden = vocoder.conv_post(functional.leaky_relu(hidden))  # transformers: default slope
    return timeline.unpack(torch.tanh(timeline.mask(hidden)), spectrogram.shape[-1])


@dataclass
class Timeline:
    """Where each item of a batch lies on the one timeline the vocoder runs over."""

    lengths: list[int]  # frames of each item
    starts: list[int]  # first frame of each item
    frames: int  # the timeline's length (a bucket: >= the last item's end)
    _masks: dict[tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, lengths: Sequence[int], gap: int) -> Timeline:
        """Items in order, `gap` silent frames apart (at least the vocoder's reach)."""
        starts = [sum(lengths[:i]) + i * gap for i in range(len(lengths))]
        return cls(list(lengths), starts, shapes.frames(starts[-1] + lengths[-1]))

    @property
    def dense(self) -> bool:
        """One item filling the whole timeline: there is nothing to zero."""
        return len(self.lengths) == 1 and self.lengths[0] == self.frames

    def pack(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """[B, C, frames] (rows padded) -> the timeline, [1, C, 1, T] channels-last."""
        packed = spectrogram.new_zeros(1, spectrogram.shape[1], self.frames)
        for row, (start, length) in enumerate(zip(self.starts, self.lengths, strict=True)):
            packed[0, :, start : start + length] = spectrogram[row, :, :length]
        return packed.unsqueeze(2).contiguous(memory_format=_LAYOUT)

    def spread(self, per_item: torch.Tensor) -> torch.Tensor:
        """[B, C, 1, 1] (one vector per item) -> [1, C, 1, T]: each item's vector over its
        frames (and the gap after it, which the mask zeroes)."""
        if len(self.lengths) == 1:
            return per_item
        owner = torch.zeros(self.frames, dtype=torch.long, device=per_item.device)
        for row, start in enumerate(self.starts[1:], start=1):
            owner[start:] = row
        return per_item[:, :, 0, 0][owner].t().reshape(1, -1, 1, self.frames)

    def mask(self, hidden: torch.Tensor) -> torch.Tensor:
        """`hidden` ([1, C, 1, frames * scale]) with everything outside the items zeroed."""
        if self.dense:
            return hidden
        scale = hidden.shape[-1] // self.frames
        keep = self._masks.get((scale, hidden.dtype))
        if keep is None:  # once per resolution and dtype, not once per conv
            inside = torch.zeros(self.frames * scale, device=hidden.device, dtype=hidden.dtype)
            for start, length in zip(self.starts, self.lengths, strict=True):
                inside[start * scale : (start + length) * scale] = 1
            keep = self._masks[scale, hidden.dtype] = inside.view(1, 1, 1, -1)
        return hidden * keep

    def unpack(self, signal: torch.Tensor, width: int) -> torch.Tensor:
        """The timeline's [1, 1, 1, frames * hop] output -> [B, 1, width * hop], row i
        item i's samples (zeros past its length)."""
        hop = signal.shape[-1] // self.frames
        flat = signal.reshape(-1)
        if self.dense and self.frames == width:
            return flat.view(1, 1, -1)
        rows = flat.new_zeros(len(self.lengths), 1, width * hop)
        for row, (start, length) in enumerate(zip(self.starts, self.lengths, strict=True)):
            rows[row, 0, : length * hop] = flat[start * hop : (start + length) * hop]
        return rows


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

    @property
    def reach(self) -> int:
        """How many steps either side of an output the conv reads."""
        return max(self.padding, self.dilation * (self.weight.shape[-1] - 1) - self.padding)

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
        stride, kernel, padding = upsample.stride[0], upsample.kernel_size[0], upsample.padding
        if (
            isinstance(padding, str)
            or upsample.groups != 1
            or upsample.dilation[0] != 1
            or upsample.output_padding[0]
        ):
            raise ValueError(f"unsupported HiFi-GAN upsampler: {upsample}")
        if kernel - 2 * int(padding[0]) != stride:  # the timeline needs stride x as long
            raise ValueError(f"HiFi-GAN upsampler does not scale by its stride: {upsample}")
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
        return cls(conv, stride, kernel, int(padding[0]))

    @property
    def reach(self) -> int:
        """How many input steps either side of an output's own the upsampler reads."""
        taps = self.phases.weight.shape[-1]
        return max(
            (self.stride - 1 + self.crop) // self.stride, taps - 1 - self.crop // self.stride
        )

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
            # A step is 1-5 % of a call: urgent work waits at most that long here.
            preemption_point()
        return hidden


@dataclass(frozen=True)
class _Vocoder:
    conv_pre: _Conv
    cond: _Conv | None
    upsamplers: tuple[_Upsample, ...]
    resblocks: tuple[tuple[_ResBlock, ...], ...]  # the blocks after each upsampler
    conv_post: _Conv
    slope: float

    @property
    def gap(self) -> int:
        """Silent frames between two items of a timeline so that no conv reading one
        item reaches the next: the largest reach of any conv, in frames."""
        reaches = [(self.conv_pre.reach, 1)]
        scale = 1  # samples per frame at this stage
        for upsample, blocks in zip(self.upsamplers, self.resblocks, strict=True):
            reaches.append((upsample.reach, scale))
            scale *= upsample.stride
            for block in blocks:
                reaches += [(conv.reach, scale) for step in block.steps for conv in step]
        reaches.append((self.conv_post.reach, scale))
        return max(math.ceil(reach / scale) for reach, scale in reaches)


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
