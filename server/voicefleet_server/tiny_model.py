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
