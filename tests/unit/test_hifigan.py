"""The engine's HiFi-GAN against torch's own layers and transformers' own forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import VitsModel
from voicefleet_server.engine import hifigan, shapes
from voicefleet_server.engine.hifigan import Timeline, masked_hifigan, timeline_groups


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(16, 8, 4), (8, 4, 2), (4, 2, 1), (7, 3, 2), (11, 5, 3), (3, 1, 1)],
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


def test_an_upsampler_that_does_not_scale_by_its_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="does not scale by its stride"):
        hifigan._Upsample.of(nn.ConvTranspose1d(4, 4, 11, 5, 0))


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


def test_timeline_lays_items_end_to_end_and_rounds_up_short_ones() -> None:
    timeline = Timeline.of([5, 7, 1], gap=3)
    assert timeline.starts == [0, 8, 18]
    assert timeline.frames == shapes.frames(19) > 19  # rounded up to its bucket
    assert not timeline.dense
    long = Timeline.of([shapes.FRAMES.largest + 1], gap=3)
    assert long.frames == shapes.FRAMES.largest + 1 and long.dense
    spectrogram = torch.arange(2 * 1 * 7, dtype=torch.float32).view(2, 1, 7)
    packed = Timeline.of([7, 4], gap=2).pack(spectrogram).reshape(-1)
    assert packed[:7].tolist() == spectrogram[0, 0].tolist()
    assert packed[7:9].tolist() == [0, 0]
    assert packed[9:13].tolist() == spectrogram[1, 0, :4].tolist()
    assert not packed[13:].any()


@pytest.mark.parametrize("gap", ["vocoder", 0])
def test_batched_items_equal_their_solo_renders_only_with_the_vocoders_gap(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch, gap: str | int
) -> None:
    decoder = VitsModel.from_pretrained(tiny_model_dir).eval().decoder
    assert hifigan._prepared(decoder).gap >= 1
    if gap == 0:
        monkeypatch.setattr(hifigan._Vocoder, "gap", 0)
    torch.manual_seed(2)
    lengths = [23, 9, 17]
    spectrogram = torch.randn(3, decoder.config.flow_size, max(lengths))
    with torch.inference_mode():
        batched = masked_hifigan(decoder, spectrogram, None, torch.tensor(lengths))
        solo = [
            masked_hifigan(decoder, spectrogram[i : i + 1, :, :n], None, torch.tensor([n]))
            for i, n in enumerate(lengths)
        ]
    hop = batched.shape[-1] // max(lengths)
    worst = max(
        float((batched[i, 0, : n * hop] - solo[i][0, 0]).abs().max()) for i, n in enumerate(lengths)
    )
    if gap == 0:  # items touching: each conv reads its neighbour
        assert worst > 1e-3
    else:
        assert worst < 1e-5
        assert not batched[1, 0, lengths[1] * hop :].any()


def test_timeline_groups_keep_each_timeline_within_the_limit() -> None:
    assert timeline_groups([5, 5, 5], gap=2, limit=100) == [range(0, 3)]
    # 5 + 2 + 5 = 12 fits in 12; a third item would make it 19.
    assert timeline_groups([5, 5, 5], gap=2, limit=12) == [range(0, 2), range(2, 3)]
    # An item longer than the limit goes alone; the next starts a fresh timeline.
    assert timeline_groups([3, 40, 3, 3], gap=1, limit=10) == [
        range(0, 1),
        range(1, 2),
        range(2, 4),
    ]


@pytest.mark.parametrize("speakers", [1, 3])
def test_a_batch_split_over_several_timelines_equals_its_solo_renders(
    tiny_model_dir: str,
    tiny_multispeaker_dir: str,
    monkeypatch: pytest.MonkeyPatch,
    speakers: int,
) -> None:
    model = VitsModel.from_pretrained(tiny_model_dir if speakers == 1 else tiny_multispeaker_dir)
    decoder = model.eval().decoder
    # Buckets up to 40 frames: the five items need four timelines, and one holds an item
    # filling its bucket exactly (a dense timeline, narrower than the batch's rows).
    lengths = [23, 9, 17, 24, 30]
    monkeypatch.setattr(shapes, "FRAMES", shapes.Bucket(tiers=((40, 8),)))
    gap = hifigan._prepared(decoder).gap
    groups = timeline_groups(lengths, gap, 40)
    assert groups == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert Timeline.of([24], gap).dense
    torch.manual_seed(3)
    spectrogram = torch.randn(len(lengths), decoder.config.flow_size, max(lengths))
    speaker = None
    if speakers > 1:
        speaker = model.embed_speaker(torch.tensor([2, 0, 1, 2, 1])).unsqueeze(-1)
    with torch.inference_mode():
        batched = masked_hifigan(decoder, spectrogram, speaker, torch.tensor(lengths))
        solo = [
            masked_hifigan(
                decoder,
                spectrogram[i : i + 1, :, :n],
                None if speaker is None else speaker[i : i + 1],
                torch.tensor([n]),
            )
            for i, n in enumerate(lengths)
        ]
    hop = batched.shape[-1] // max(lengths)
    assert batched.shape[0] == len(lengths)
    for i, n in enumerate(lengths):
        assert torch.allclose(batched[i, 0, : n * hop], solo[i][0, 0], atol=1e-5)
        assert not batched[i, 0, n * hop :].any()
