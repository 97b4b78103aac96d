"""`PiperVitsModel`: transformers' `VitsModel` shaped like a Piper voice, inference only.

Piper's "x_low"/"low"/"medium" voices use HiFi-GAN residual blocks of type 2 (one conv
per dilation); transformers implements type 1 only, and loading such weights into it
silently leaves the decoder random (the output is noise). `config.resblock_type = "2"`
builds type-2 blocks instead. The training-only parts (posterior encoder, the duration
predictor's posterior flows) are not built: Piper's ONNX export has no weights for them
and inference never runs them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import VitsConfig, VitsModel

# Modules of VitsModel used only to train (absent from Piper's export).
TRAINING_ONLY = ("posterior_encoder",)
TRAINING_ONLY_DURATION = ("post_conv_pre", "post_conv_proj", "post_conv_dds", "post_flows")


class HifiGanResidualBlock2(nn.Module):
    """HiFi-GAN residual block type 2: per dilation, leaky ReLU -> dilated conv -> residual add."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilation: tuple[int, ...],
        leaky_relu_slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.leaky_relu_slope = leaky_relu_slope
        self.convs = nn.ModuleList(
            nn.Conv1d(
                channels,
                channels,
                kernel_size,
                dilation=d,
                padding=(kernel_size * d - d) // 2,
            )
            for d in dilation
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden = conv(nn.functional.leaky_relu(hidden, self.leaky_relu_slope)) + hidden
        return hidden


class PiperVitsModel(VitsModel):
    """A `VitsModel` whose decoder blocks follow `config.resblock_type` ("1" or "2")."""

    def __init__(self, config: VitsConfig) -> None:
        super().__init__(config)
        if str(getattr(config, "resblock_type", "1")) == "2":
            decoder: Any = self.decoder
            blocks = []
            for i in range(len(config.upsample_rates)):
                channels = config.upsample_initial_channel // (2 ** (i + 1))
                for kernel, dilation in zip(
                    config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True
                ):
                    blocks.append(
                        HifiGanResidualBlock2(
                            channels, kernel, tuple(dilation), config.leaky_relu_slope
                        )
                    )
            decoder.resblocks = nn.ModuleList(blocks)
        for name in TRAINING_ONLY:
            delattr(self, name)
        for name in TRAINING_ONLY_DURATION:
            if hasattr(self.duration_predictor, name):
                delattr(self.duration_predictor, name)
        self.post_init()
