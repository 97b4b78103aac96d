"""Reading a Piper voice: its files, its .onnx.json, and its ONNX graph's weights and shape.

Piper exports VITS to ONNX; every weight the inference graph uses is an initializer. Most
keep their PyTorch names; the flows' WaveNet convs (weight norm folded in at export) and
the text embedding get anonymous names, so they are named after the node that consumes
them. The model's shape (layers, heads, decoder rates, kernels, dilations) is read from
the tensors and the conv nodes' attributes, so any Piper voice quality converts, not only
"medium".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A real PyTorch parameter path ("dec.ups.0.weight"), as opposed to an anonymous
# initializer ("onnx::Conv_8168", "sid", "/dp/flows.0/Exp_output_0").
_PARAM_NAME = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")


class PiperVoiceError(ValueError):
    """A Piper voice file is missing, unreadable, or not a VITS voice we can convert."""


@dataclass(frozen=True, slots=True)
class PiperVoiceFiles:
    onnx: Path
    config: Path

    @property
    def name(self) -> str:
        return self.onnx.name.removesuffix(".onnx")


def voice_files(source: str | Path) -> PiperVoiceFiles | None:
    """The Piper voice `source` names (a .onnx file, or a directory holding one), else None.

    A .onnx without its .onnx.json beside it, or a directory with several voices, raises
    `PiperVoiceError` naming the file.
    """
    path = Path(source)
    if path.is_dir():
        onnx_files = sorted(path.glob("*.onnx"))
        if not onnx_files:
            return None
        if len(onnx_files) > 1:
            names = ", ".join(p.name for p in onnx_files)
            raise PiperVoiceError(f"{path}: holds several Piper voices ({names}); name one .onnx")
        path = onnx_files[0]
    elif path.suffix != ".onnx":
        return None
    if not path.is_file():
        raise PiperVoiceError(f"{path}: no such Piper voice file")
    config = path.with_name(path.name + ".json")
    if not config.is_file():
        raise PiperVoiceError(f"{config}: missing (a Piper voice needs its .onnx.json beside it)")
    return PiperVoiceFiles(path, config)


def read_piper_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PiperVoiceError(f"{path}: not a readable Piper voice config ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("phoneme_id_map"), dict):
        raise PiperVoiceError(f"{path}: not a Piper voice config (no phoneme_id_map)")
    phoneme_type = config.get("phoneme_type", "espeak")
    if phoneme_type != "espeak":
        raise PiperVoiceError(
            f"{path}: phoneme_type {phoneme_type!r} is not supported (only espeak voices)"
        )
    return config


# ---- reading the ONNX graph ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnnxWeights:
    """The graph's weights under PyTorch-style names, and each conv's attributes."""

    tensors: dict[str, np.ndarray]
    conv_attributes: dict[str, dict[str, list[int]]]  # module name -> {"dilations", "strides"}


def _module_of(node_name: str) -> str:
    """'/flow/flows.6/enc/in_layers.0/Conv' -> 'flow.flows.6.enc.in_layers.0'."""
    return node_name.strip("/").rsplit("/", 1)[0].replace("/", ".")


def read_onnx_weights(path: Path) -> OnnxWeights:
    try:
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        raise PiperVoiceError(f"{path}: not a readable ONNX model ({exc})") from exc
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    tensors: dict[str, np.ndarray] = {}
    attributes: dict[str, dict[str, list[int]]] = {}
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            attributes[_module_of(node.name)] = {
                a.name: list(helper.get_attribute_value(a))
                for a in node.attribute
                if a.name in ("dilations", "strides")
            }
        for index, name in enumerate(node.input):
            if name not in initializers or name in tensors:
                continue
            array = numpy_helper.to_array(initializers[name])
            if _PARAM_NAME.match(name):
                tensors[name] = array
            elif node.op_type in ("Conv", "ConvTranspose") and index in (1, 2):
                tensors[f"{_module_of(node.name)}.{('weight', 'bias')[index - 1]}"] = array
            elif node.op_type == "Gather" and index == 0:
                tensors[f"{_module_of(node.name)}.weight"] = array
            elif name == "/dp/flows.0/Exp_output_0":
                # The duration predictor's affine flow runs (x - m) * exp(-logs) in
                # reverse; export folds exp(-logs) into this constant.
                tensors["dp.flows.0.logs"] = -np.log(array)
    if "enc_p.emb.weight" not in tensors or "dec.conv_pre.weight" not in tensors:
        raise PiperVoiceError(f"{path}: not a Piper VITS voice (no text embedding or decoder)")
    return OnnxWeights(tensors, attributes)


# ---- the model's shape -----------------------------------------------------------------


def _count(tensors: dict[str, np.ndarray], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for name in tensors if (m := regex.match(name))})


def vits_config(weights: OnnxWeights, piper: dict[str, Any]) -> Any:
    """The `VitsConfig` (plus `resblock_type`) that these weights fill exactly."""
    from transformers import VitsConfig

    t = weights.tensors
    attrs = weights.conv_attributes
    if "dp.flows.0.m" not in t:
        raise PiperVoiceError("only voices with a stochastic duration predictor are supported")
    vocab_size, hidden = t["enc_p.emb.weight"].shape
    rel = t["enc_p.encoder.attn_layers.0.emb_rel_k"]
    ups = _count(t, r"^dec\.ups\.(\d+)\.weight$")
    blocks = _count(t, r"^dec\.resblocks\.(\d+)\.")
    kernels_per_up = blocks // ups
    type2 = "dec.resblocks.0.convs.0.weight" in t
    dilations: list[list[int]] = []
    kernel_sizes: list[int] = []
    for b in range(kernels_per_up):
        if type2:
            steps = _count(t, rf"^dec\.resblocks\.{b}\.convs\.(\d+)\.weight$")
            convs = [f"dec.resblocks.{b}.convs.{i}" for i in range(steps)]
        else:
            steps = _count(t, rf"^dec\.resblocks\.{b}\.convs1\.(\d+)\.weight$")
            convs = [f"dec.resblocks.{b}.convs1.{i}" for i in range(steps)]
        dilations.append([attrs[c]["dilations"][0] for c in convs])
        kernel_sizes.append(int(t[f"{convs[0]}.weight"].shape[2]))
    speakers = t.get("emb_g.weight")
    flow_layers = _count(t, r"^flow\.flows\.0\.enc\.in_layers\.(\d+)\.")
    wavenet_dilation = (
        attrs["flow.flows.0.enc.in_layers.1"]["dilations"][0] if flow_layers > 1 else 1
    )
    dp_proj = t.get("dp.flows.3.proj.weight")
    dp_channels = int(t["dp.flows.0.m"].shape[0])
    bins = 10 if dp_proj is None else (dp_proj.shape[0] // (dp_channels // 2) + 1) // 3
    inference = piper.get("inference", {})
    config = VitsConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(hidden),
        num_hidden_layers=_count(t, r"^enc_p\.encoder\.attn_layers\.(\d+)\."),
        num_attention_heads=int(hidden) // int(rel.shape[2]),
        window_size=(int(rel.shape[1]) - 1) // 2,
        ffn_dim=int(t["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0]),
        ffn_kernel_size=int(t["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[2]),
        flow_size=int(t["enc_p.proj.weight"].shape[0]) // 2,
        use_stochastic_duration_prediction=True,
        num_speakers=1 if speakers is None else int(speakers.shape[0]),
        speaker_embedding_size=0 if speakers is None else int(speakers.shape[1]),
        upsample_initial_channel=int(t["dec.conv_pre.weight"].shape[0]),
        upsample_rates=[attrs[f"dec.ups.{i}"]["strides"][0] for i in range(ups)],
        upsample_kernel_sizes=[int(t[f"dec.ups.{i}.weight"].shape[2]) for i in range(ups)],
        resblock_kernel_sizes=kernel_sizes,
        resblock_dilation_sizes=dilations,
        depth_separable_channels=dp_channels,
        depth_separable_num_layers=_count(t, r"^dp\.convs\.convs_sep\.(\d+)\."),
        duration_predictor_flow_bins=int(bins),
        duration_predictor_kernel_size=int(t["dp.convs.convs_sep.0.weight"].shape[2]),
        # Piper exports ConvFlows 3, 5, 7...; flow 1 is training-only (written as zeros).
        duration_predictor_num_flows=_count(t, r"^dp\.flows\.(\d+)\.pre\.") + 1,
        prior_encoder_num_flows=_count(t, r"^flow\.flows\.(\d+)\.pre\."),
        prior_encoder_num_wavenet_layers=flow_layers,
        wavenet_kernel_size=int(t["flow.flows.0.enc.in_layers.0.weight"].shape[2]),
        wavenet_dilation_rate=int(wavenet_dilation),
        sampling_rate=int(piper.get("audio", {}).get("sample_rate", 22050)),
        noise_scale=float(inference.get("noise_scale", 0.667)),
        noise_scale_duration=float(inference.get("noise_w", 0.8)),
        speaking_rate=1.0 / float(inference.get("length_scale", 1.0) or 1.0),
        pad_token_id=int(piper["phoneme_id_map"].get("_", [0])[0]),
    )
    config.resblock_type = "2" if type2 else "1"
    config.architectures = ["PiperVitsModel"]
    return config
