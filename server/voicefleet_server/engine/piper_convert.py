"""Piper voice -> a `PiperVitsModel` checkpoint (save_pretrained + piper.json), and the
cache of converted voices.

Piper's tensor names are mapped onto VitsModel's state dict by the rules below. The
conversion is strict: an ONNX tensor nothing maps, or a model tensor nothing fills,
fails with the file named, never a half-random model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voicefleet_server.engine.piper_onnx import (
    OnnxWeights,
    PiperVoiceError,
    PiperVoiceFiles,
    read_onnx_weights,
    read_piper_config,
    vits_config,
    voice_files,
)

log = logging.getLogger(__name__)

# The Piper config is kept beside the checkpoint under this name: it holds what the
# tokenizer needs (phoneme_id_map, espeak voice) and the speakers' names.
PIPER_CONFIG_NAME = "piper.json"
# Training-only flow of the stochastic duration predictor: VitsModel builds it but never
# runs it at inference, and Piper does not export it. Written as zeros.
_UNUSED_PREFIX = "duration_predictor.flows.1."
__all__ = ["PIPER_CONFIG_NAME", "PiperVoiceError", "PiperVoiceFiles", "voice_files"]


# ---- weights -----------------------------------------------------------------------


def _squeeze(array: np.ndarray) -> np.ndarray:
    """A 1x1 Conv1d weight [out, in, 1] as a Linear weight [out, in]; biases unchanged."""
    return array.squeeze(-1) if array.ndim == 3 else array


def _half(match: re.Match[str], group: int = 1) -> str:
    return str(int(match.group(group)) // 2)


def _dp_flow(match: re.Match[str]) -> str:
    return str((int(match.group(1)) + 1) // 2)


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str], Callable[[np.ndarray], np.ndarray]]


def _rule(
    pattern: str,
    target: Callable[[re.Match[str]], str] | str,
    transform: Callable[[np.ndarray], np.ndarray] = lambda a: a,
) -> _Rule:
    def expand(match: re.Match[str]) -> str:
        return match.expand(target) if isinstance(target, str) else target(match)

    return re.compile(pattern + "$"), expand, transform


_ENC = "text_encoder.encoder.layers."
_RULES: list[_Rule] = [
    _rule(r"enc_p\.emb\.weight", "text_encoder.embed_tokens.weight"),
    _rule(
        r"enc_p\.encoder\.attn_layers\.(\d+)\.conv_([qkv])\.(weight|bias)",
        _ENC + r"\1.attention.\2_proj.\3",
        _squeeze,
    ),
    _rule(
        r"enc_p\.encoder\.attn_layers\.(\d+)\.conv_o\.(weight|bias)",
        _ENC + r"\1.attention.out_proj.\2",
        _squeeze,
    ),
    _rule(r"enc_p\.encoder\.attn_layers\.(\d+)\.(emb_rel_[kv])", _ENC + r"\1.attention.\2"),
    _rule(r"enc_p\.encoder\.norm_layers_1\.(\d+)\.gamma", _ENC + r"\1.layer_norm.weight"),
    _rule(r"enc_p\.encoder\.norm_layers_1\.(\d+)\.beta", _ENC + r"\1.layer_norm.bias"),
    _rule(r"enc_p\.encoder\.norm_layers_2\.(\d+)\.gamma", _ENC + r"\1.final_layer_norm.weight"),
    _rule(r"enc_p\.encoder\.norm_layers_2\.(\d+)\.beta", _ENC + r"\1.final_layer_norm.bias"),
    _rule(
        r"enc_p\.encoder\.ffn_layers\.(\d+)\.conv_([12])\.(weight|bias)",
        _ENC + r"\1.feed_forward.conv_\2.\3",
    ),
    _rule(r"enc_p\.proj\.(weight|bias)", r"text_encoder.project.\1"),
    # Prior flows: Piper interleaves Flip modules (odd indices), VitsModel flips in code.
    _rule(
        r"flow\.flows\.(\d+)\.pre\.(weight|bias)",
        lambda m: f"flow.flows.{_half(m)}.conv_pre.{m[2]}",
    ),
    _rule(
        r"flow\.flows\.(\d+)\.post\.(weight|bias)",
        lambda m: f"flow.flows.{_half(m)}.conv_post.{m[2]}",
    ),
    _rule(
        r"flow\.flows\.(\d+)\.enc\.(in_layers\.\d+|res_skip_layers\.\d+|cond_layer)\.bias",
        lambda m: f"flow.flows.{_half(m)}.wavenet.{m[2]}.bias",
    ),
    # (.weight of the WaveNet convs is split into weight-norm g and v: see _weight_norm.)
    _rule(r"dp\.pre\.(weight|bias)", r"duration_predictor.conv_pre.\1"),
    _rule(r"dp\.proj\.(weight|bias)", r"duration_predictor.conv_proj.\1"),
    _rule(r"dp\.cond\.(weight|bias)", r"duration_predictor.cond.\1"),
    _rule(r"dp\.flows\.0\.m", "duration_predictor.flows.0.translate"),
    _rule(r"dp\.flows\.0\.logs", "duration_predictor.flows.0.log_scale"),
    _rule(
        r"dp\.flows\.(\d+)\.pre\.(weight|bias)",
        lambda m: f"duration_predictor.flows.{_dp_flow(m)}.conv_pre.{m[2]}",
    ),
    _rule(
        r"dp\.flows\.(\d+)\.proj\.(weight|bias)",
        lambda m: f"duration_predictor.flows.{_dp_flow(m)}.conv_proj.{m[2]}",
    ),
    _rule(
        r"dp\.flows\.(\d+)\.convs\.(.+)",
        lambda m: f"duration_predictor.flows.{_dp_flow(m)}.conv_dds.{_dds(m[2])}",
    ),
    _rule(r"dp\.convs\.(.+)", lambda m: f"duration_predictor.conv_dds.{_dds(m[1])}"),
    _rule(r"dec\.conv_pre\.(weight|bias)", r"decoder.conv_pre.\1"),
    _rule(r"dec\.ups\.(\d+)\.(weight|bias)", r"decoder.upsampler.\1.\2"),
    _rule(
        r"dec\.resblocks\.(\d+)\.(convs[12]?)\.(\d+)\.(weight|bias)",
        r"decoder.resblocks.\1.\2.\3.\4",
    ),
    _rule(r"dec\.conv_post\.(weight|bias)", r"decoder.conv_post.\1"),
    _rule(r"dec\.cond\.(weight|bias)", r"decoder.cond.\1"),
    _rule(r"emb_g\.weight", "embed_speaker.weight"),
]
_WEIGHT_NORMED = re.compile(
    r"^flow\.flows\.(\d+)\.enc\.(in_layers\.\d+|res_skip_layers\.\d+|cond_layer)\.weight$"
)


def _dds(rest: str) -> str:
    """Piper's DDSConv names -> VitsDilatedDepthSeparableConv's."""
    rest = rest.replace("convs_sep.", "convs_dilated.").replace("convs_1x1.", "convs_pointwise.")
    return rest.replace(".gamma", ".weight").replace(".beta", ".bias")


def map_weights(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Piper tensors under VitsModel's state-dict names, and the Piper names nothing mapped."""
    mapped: dict[str, np.ndarray] = {}
    unmapped: list[str] = []
    for name, array in tensors.items():
        if match := _WEIGHT_NORMED.match(name):
            # Exported with weight norm folded in: w = g * v / |v|, so v = w, g = |w|.
            module = f"flow.flows.{_half(match)}.wavenet.{match[2]}.parametrizations.weight"
            mapped[f"{module}.original0"] = np.sqrt(
                np.sum(array.astype(np.float64) ** 2, axis=(1, 2), keepdims=True)
            ).astype(np.float32)
            mapped[f"{module}.original1"] = array
            continue
        for pattern, target, transform in _RULES:
            if match := pattern.match(name):
                mapped[target(match)] = transform(array)
                break
        else:
            unmapped.append(name)
    return mapped, unmapped


def build_model(onnx_path: Path, piper: dict[str, Any]) -> Any:
    """A `PiperVitsModel` holding the voice's weights (float32, eval mode)."""
    return model_from_weights(read_onnx_weights(onnx_path), piper, onnx_path)


def model_from_weights(weights: OnnxWeights, piper: dict[str, Any], onnx_path: Path) -> Any:
    """The model these weights fill exactly; `onnx_path` names the voice in errors."""
    from voicefleet_server.engine.piper_model import PiperVitsModel

    try:
        config = vits_config(weights, piper)
    except (KeyError, IndexError, ZeroDivisionError, ValueError) as exc:
        raise PiperVoiceError(f"{onnx_path}: unexpected Piper graph layout ({exc!r})") from exc
    mapped, unmapped = map_weights(weights.tensors)
    if unmapped:
        raise PiperVoiceError(
            f"{onnx_path}: {len(unmapped)} tensors this converter does not know "
            f"(e.g. {', '.join(sorted(unmapped)[:3])})"
        )
    # Built on the meta device (random init of 16M parameters costs seconds), then every
    # tensor is assigned from the voice.
    with torch.device("meta"):
        model = PiperVitsModel(config).eval()
    state = model.state_dict()
    missing = [k for k in state if k not in mapped and not k.startswith(_UNUSED_PREFIX)]
    extra = [k for k in mapped if k not in state]
    wrong = [k for k in mapped if k in state and tuple(state[k].shape) != mapped[k].shape]
    if missing or extra or wrong:
        raise PiperVoiceError(
            f"{onnx_path}: weights do not fit the inferred model "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})"
        )
    filled = {
        k: torch.tensor(mapped[k], dtype=torch.float32)
        if k in mapped
        else torch.zeros(v.shape, dtype=torch.float32)
        for k, v in state.items()
    }
    model.load_state_dict(filled, strict=True, assign=True)
    return model


def convert_piper(onnx_path: str | Path, out_dir: str | Path) -> Path:
    """Write the voice as a checkpoint: save_pretrained + piper.json (tokenizer config)."""
    files = voice_files(onnx_path)
    if files is None:
        raise PiperVoiceError(f"{onnx_path}: not a Piper voice (.onnx with its .onnx.json)")
    piper = read_piper_config(files.config)
    started = time.perf_counter()
    model = build_model(files.onnx, piper)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    piper = {**piper, "voicefleet": {"name": files.name, "source": files.onnx.name}}
    (out / PIPER_CONFIG_NAME).write_text(
        json.dumps(piper, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    log.info("converted %s in %.2fs -> %s", files.onnx, time.perf_counter() - started, out)
    return out


def is_piper_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    return (p / PIPER_CONFIG_NAME).is_file() and (p / "config.json").is_file()


def cache_root() -> Path:
    """Where converted voices are kept: $VOICEFLEET_CACHE_DIR, else $XDG_CACHE_HOME or
    ~/.cache, under voicefleet/piper."""
    explicit = os.environ.get("VOICEFLEET_CACHE_DIR")
    if explicit:
        return Path(explicit) / "piper"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voicefleet" / "piper"


def voice_digest(files: PiperVoiceFiles) -> str:
    """Content hash of the voice (weights and config): the cache key."""
    digest = hashlib.sha256()
    for path in (files.onnx, files.config):
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached_checkpoint(files: PiperVoiceFiles, root: Path | None = None) -> Path:
    """The converted checkpoint of `files`, converting on the first call only.

    Keyed by content hash, written to a temporary directory and renamed into place, so a
    crash mid-conversion or two processes converting at once never leave a partial one.
    """
    root = root or cache_root()
    target = root / f"{files.name}-{voice_digest(files)[:16]}"
    if is_piper_checkpoint(target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    except OSError as exc:  # e.g. a read-only home in a locked-down pod
        fallback = Path(tempfile.gettempdir()) / "voicefleet-piper"
        if root == fallback:
            raise
        log.warning("cannot write the voice cache %s (%s); using %s", root, exc, fallback)
        return cached_checkpoint(files, fallback)
    try:
        convert_piper(files.onnx, scratch)
        scratch.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            scratch.rename(target)
        except OSError:
            if not is_piper_checkpoint(target):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
