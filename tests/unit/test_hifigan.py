"""The engine's HiFi-GAN against torch's own layers and transformers' own forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import VitsModel
from voicefleet_server.engine import hifigan
from voicefleet_server.engine.hifigan import masked_hifigan


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(16, 8, 4), (8, 4, 2), (4, 2, 1), (7, 3, 2), (11, 5, 0), (3, 1, 1)],
)
def test_polyphase_upsample_equals_the_transposed_conv(
    kernel: int, stride: int, padding: int
) -> None:
    torch.manual_seed(kernel * stride)
    layer = nn.ConvTranspose1d(6, 4, kernel, stride, padding).eval()
    signal = torch.randn(2, 6, 13)
    want = layer(signal)
    got = hifigan._Upsample.of(layer)(
        signal.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    )
    assert got.shape == (2, 4, 1, want.shape[-1])
    assert torch.allclose(got.squeeze(2), want, atol=1e-5)


def test_conv_equals_conv1d_with_dilation_and_stride() -> None:
    torch.manual_seed(0)
    layer = nn.Conv1d(5, 7, 3, stride=2, padding=2, dilation=2).eval()
    signal = torch.randn(3, 5, 20)
    got = hifigan._Conv.of(layer)(signal.unsqueeze(2))
    assert torch.allclose(got.squeeze(2), layer(signal), atol=1e-5)


@pytest.mark.parametrize("speakers", [1, 3])
def test_equals_transformers_decoder_forward(
    tiny_model_dir: str, tiny_multispeaker_dir: str, speakers: int
) -> None:
    model = VitsModel.from_pretrained(tiny_model_dir if speakers == 1 else tiny_multispeaker_dir)
    decoder = model.eval().decoder
    torch.manual_seed(1)
    spectrogram = torch.randn(1, decoder.config.flow_size, 40)
    speaker = None
    if speakers > 1:
        speaker = model.embed_speaker(torch.tensor([2])).unsqueeze(-1)
    with torch.inference_mode():
        want = decoder(spectrogram, speaker)
        got = masked_hifigan(decoder, spectrogram, speaker, torch.tensor([40]))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4)
