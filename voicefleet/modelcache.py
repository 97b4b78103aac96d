"""The model cache's layout, shared by `voicefleet fetch-model` (which fills a directory) and
the operator (which runs it in a Job and points server pods at the result).

One directory holds one model at one revision. A Hugging Face id is stored in the Hub's own
cache layout, so pods keep loading it by its id (`HF_HUB_CACHE` pointing there, offline) and
clients keep sending the same `model`; a local checkpoint directory or a Piper voice is
copied in under its own file name, so the name the server derives from it stays the same.
The marker file is written last: its presence means the copy is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

MARKER = ".voicefleet-model.json"
PIPER_SUFFIX = ".onnx"

Kind = Literal["hub", "directory", "piper"]


def spelled_kind(model: str) -> Kind:
    """What `model` is, judged by its spelling alone (the operator never sees the image's
    files): a `.onnx` file is a Piper voice, an absolute or ./ path a checkpoint directory,
    anything else a Hugging Face id."""
    if model.endswith(PIPER_SUFFIX):
        return "piper"
    if model.startswith(("/", "./", "../")):
        return "directory"
    return "hub"


def slot_name(model: str, revision: str | None) -> str:
    """The directory (under the cache volume) that holds `model` at `revision`: readable,
    and unique through a hash of the exact pair, so a new revision never reuses the old one's
    files while pods still load from them."""
    label = model if not revision else f"{model}@{revision}"
    slug = re.sub(r"[^A-Za-z0-9._@-]+", "-", label).strip("-.")[:80] or "model"
    digest = hashlib.sha256(f"{model}\0{revision or ''}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def load_target(model: str, directory: str, kind: Kind | None = None) -> str:
    """What the server is given as `--model` once `model` is cached in `directory`: the hub
    id itself (with HF_HUB_CACHE=directory), or the copy's path."""
    kind = kind or spelled_kind(model)
    if kind == "hub":
        return model
    name = PurePosixPath(model.rstrip("/")).name
    return str(PurePosixPath(directory) / name)


def marker(directory: str | Path) -> Path:
    return Path(directory) / MARKER


def read_marker(directory: str | Path) -> dict[str, Any] | None:
    """The marker's content, or None when there is none (or it is unreadable: an
    interrupted write never leaves half a marker, see `fetch_model`, but a hand edit may)."""
    try:
        data = json.loads(marker(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holds(directory: str | Path, model: str, revision: str | None) -> bool:
    """Whether `directory` holds a complete copy of `model` at `revision`."""
    found = read_marker(directory)
    return (
        found is not None
        and found.get("model") == model
        and (found.get("revision") or None) == (revision or None)
    )
