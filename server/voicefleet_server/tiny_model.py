"""Writes a tiny random-weight VITS checkpoint for tests and smoke runs.

The checkpoint goes through the same `save_pretrained` / `from_pretrained` path as a
real MMS-TTS model, so tests exercise the real loading code without a model hub. Its
audio is noise shaped by random weights, not speech.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

# Characters the tiny tokenizer knows; anything else is dropped by the tokenizer, as MMS
# vocabularies drop characters outside their alphabet.
_TINY_ALPHABET = list(string.ascii_lowercase + string.digits + " '.,!?;:-")


def tiny_vits_config_kwargs(num_speakers: int = 1) -> dict[str, object]:
    """Smallest VITS shape that still runs every module (34k parameters)."""
    return {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "ffn_dim": 32,
        "flow_size": 16,
        "spectrogram_bins": 33,
        "upsample_initial_channel": 32,
        "upsample_rates": [8, 8, 2, 2],
        "upsample_kernel_sizes": [16, 16, 4, 4],
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3]],
        "prior_encoder_num_flows": 1,
        "prior_encoder_num_wavenet_layers": 1,
        "posterior_encoder_num_wavenet_layers": 1,
        "duration_predictor_num_flows": 1,
        "duration_predictor_filter_channels": 16,
        "depth_separable_num_layers": 1,
        "num_speakers": num_speakers,
        "speaker_embedding_size": 8 if num_speakers > 1 else 0,
        "sampling_rate": 16000,
    }


def make_tiny_model(
    directory: str | Path, *, num_speakers: int = 1, size: str = "tiny", seed: int = 0
) -> Path:
    """Write a random-weight VITS model + character tokenizer to `directory` and return it.

    `size="tiny"` is the 34k-parameter test model; `size="mms"` keeps transformers'
    default VITS shape (that of facebook/mms-tts-*, 36M parameters) for representative
    benchmarks without a model hub.
    """
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1} | {ch: i + 2 for i, ch in enumerate(_TINY_ALPHABET)}
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        tokenizer = VitsTokenizer(
            str(vocab_file),
            pad_token="<pad>",
            unk_token="<unk>",
            add_blank=True,
            phonemize=False,
            normalize=True,
        )
        tokenizer.save_pretrained(out)

    if size == "tiny":
        shape = tiny_vits_config_kwargs(num_speakers)
    elif size == "mms":
        shape = {
            "num_speakers": num_speakers,
            "speaker_embedding_size": 256 if num_speakers > 1 else 0,
        }
    else:
        raise ValueError(f"unknown model size {size!r} (expected 'tiny' or 'mms')")
    config = VitsConfig(vocab_size=len(vocab), pad_token_id=0, **shape)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = VitsModel(config).eval()
    model.save_pretrained(out)
    return out


# Shapes of the tiny SpeechT5 family: 16-d speaker vectors on both sides, 20 mel bins.
_TINY_T5_DIM = 16
_TINY_T5_MELS = 20


def make_tiny_speecht5(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight SpeechT5 family to `directory` and return the model path.

    Layout (each a `save_pretrained` checkpoint, loaded like the real ones):
    `DIR/model` (SpeechT5ForTextToSpeech + character sentencepiece tokenizer, with two
    built-in voices in `speaker_embeddings/`), `DIR/vocoder` (SpeechT5HifiGan) and
    `DIR/speaker-encoder` (WavLMForXVector + feature extractor). The stop-token bias
    is set very negative so every segment runs to its length limit (4 frames a token,
    declared in the config): random weights would otherwise stop after one step.
    """
    import io

    import numpy as np
    import sentencepiece as spm
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Tokenizer,
        Wav2Vec2FeatureExtractor,
        WavLMConfig,
        WavLMForXVector,
    )

    out = Path(directory)
    model_dir, vocoder_dir, encoder_dir = out / "model", out / "vocoder", out / "speaker-encoder"
    for path in (model_dir, vocoder_dir, encoder_dir):
        path.mkdir(parents=True, exist_ok=True)
    alphabet = string.ascii_letters + string.digits + " '.,!?;:-"
    spm_model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([alphabet, "the quick brown fox jumps over the lazy dog"]),
        model_writer=spm_model,
        model_type="char",
        vocab_size=len(set(alphabet)) + 4,
        hard_vocab_limit=False,
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as scratch:
        spm_file = Path(scratch) / "spm_char.model"
        spm_file.write_bytes(spm_model.getvalue())
        tokenizer = SpeechT5Tokenizer(str(spm_file))
        tokenizer.save_pretrained(model_dir)

    torch.manual_seed(seed)
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_max_relative_position=16,
        num_mel_bins=_TINY_T5_MELS,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_layers=2,
        speech_decoder_postnet_units=16,
        speaker_embedding_dim=_TINY_T5_DIM,
        reduction_factor=2,
        max_speech_positions=4000,
        max_text_positions=600,
    )
    # Read by the SpeechT5 family: at most 2 decoder steps (4 frames) per token.
    config.voicefleet_max_len_ratio = 4.0
    model = SpeechT5ForTextToSpeech(config).eval()
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.bias.fill_(-20.0)
    model.save_pretrained(model_dir)
    voices = model_dir / "speaker_embeddings"
    voices.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in ("default", "alt"):
        np.save(voices / f"{name}.npy", rng.standard_normal(_TINY_T5_DIM).astype(np.float32))

    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=_TINY_T5_MELS,
            upsample_initial_channel=32,
            upsample_rates=[4, 4, 4, 4],
            upsample_kernel_sizes=[8, 8, 8, 8],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            sampling_rate=16000,
            # Default init (std 0.01) renders ~1e-9 peaks: too quiet to tell voices apart.
            initializer_range=0.1,
        )
    ).eval()
    vocoder.save_pretrained(vocoder_dir)

    encoder = WavLMForXVector(
        WavLMConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            conv_dim=(16, 16),
            conv_stride=(5, 4),
            conv_kernel=(10, 8),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            tdnn_dim=(16, 16),
            tdnn_kernel=(3, 1),
            tdnn_dilation=(1, 1),
            xvector_output_dim=_TINY_T5_DIM,
            num_buckets=32,
            max_bucket_distance=64,
        )
    ).eval()
    encoder.save_pretrained(encoder_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(encoder_dir)
    return model_dir
