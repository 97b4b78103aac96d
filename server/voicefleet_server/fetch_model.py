"""`voicefleet fetch-model --model M [--revision R] --dir D`: put a model into a cache
directory that server pods then load offline, and mark it complete.

A Hugging Face id is downloaded with `huggingface_hub.snapshot_download` into D in the Hub's
cache layout; a local checkpoint directory or a Piper voice (`X.onnx` beside `X.onnx.json`)
is copied in. The marker (`voicefleet.modelcache.MARKER`, with model and revision) is written
only after everything else is in place, so a pod gate (`--wait`, the operator's init
container) never lets a server start on half a model. A directory that already holds the
model is left alone: that is how an air-gapped cluster uses a copy seeded elsewhere.
Imports nothing heavy (no torch), so the gate starts in a moment.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicefleet import modelcache


class FetchError(RuntimeError):
    """The model could not be put into the directory; the message says why."""


@dataclass(frozen=True)
class Fetched:
    """What `fetch` left in the directory."""

    kind: modelcache.Kind
    load: str  # what to pass to `voicefleet serve --model`
    files: int
    bytes: int
    already_there: bool = False


def source_kind(model: str) -> modelcache.Kind:
    """What `model` names, from the filesystem where it exists, else from its spelling."""
    path = Path(model)
    if path.is_dir():
        return "directory"
    if path.is_file():
        if path.suffix == modelcache.PIPER_SUFFIX and _piper_config(path).is_file():
            return "piper"
        raise FetchError(
            f"{model} is a file but not a Piper voice (X.onnx with X.onnx.json beside it)"
        )
    kind = modelcache.spelled_kind(model)
    if kind != "hub":
        raise FetchError(f"{model}: no such file or directory")
    return kind


def _piper_config(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + ".json")


def _tree_size(root: Path) -> tuple[int, int]:
    """Files and bytes of the model under `root` (a Hub snapshot's links count as the files
    they point at)."""
    files = total = 0
    for path in root.rglob("*"):
        if path.is_file() and path.name != modelcache.MARKER:
            files += 1
            total += path.stat().st_size
    return files, total


def _copy_dir(source: Path, target: Path) -> None:
    """Copy a checkpoint directory to `target` through a hidden sibling renamed into place
    at the end (replacing what an interrupted earlier attempt left there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        shutil.copytree(source, staging / "copy")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "copy", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_files(sources: Sequence[Path], directory: Path) -> None:
    """Copy single files (a Piper voice and its config) into `directory`, each through a
    temporary name."""
    for source in sources:
        handle, temp = tempfile.mkstemp(prefix=".partial-", dir=directory)
        os.close(handle)
        try:
            shutil.copy2(source, temp)
            os.replace(temp, directory / source.name)
        finally:
            Path(temp).unlink(missing_ok=True)


def _write_marker(directory: Path, content: dict[str, Any]) -> None:
    """Written to a temporary name and renamed: readers see the whole marker or none."""
    handle, temp = tempfile.mkstemp(prefix=".marker-", dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(content, out, indent=2, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, modelcache.marker(directory))


SnapshotDownload = Callable[..., Any]


def _hub_download(
    model: str, revision: str | None, directory: Path, download: SnapshotDownload | None
) -> Path:
    """Download into `directory` in the Hub's cache layout; returns the snapshot folder."""
    if download is None:
        from huggingface_hub import snapshot_download

        download = snapshot_download
    try:
        return Path(download(repo_id=model, revision=revision, cache_dir=str(directory)))
    except Exception as exc:  # the hub client's errors have no common base worth naming
        where = f"{model}@{revision}" if revision else model
        raise FetchError(
            f"could not download {where} from the Hugging Face Hub: {type(exc).__name__}: "
            f"{exc}".strip()
        ) from exc


def fetch(
    model: str,
    directory: str | Path,
    revision: str | None = None,
    *,
    download: SnapshotDownload | None = None,
) -> Fetched:
    """Put `model` at `revision` into `directory` and mark it complete (see module doc).

    `download` replaces `huggingface_hub.snapshot_download` (tests have no hub).
    """
    root = Path(directory)
    if modelcache.holds(root, model, revision):
        found = modelcache.read_marker(root) or {}
        kind = found.get("kind") or modelcache.spelled_kind(model)
        return Fetched(
            kind,
            str(found.get("load") or model),
            int(found.get("files") or 0),
            int(found.get("bytes") or 0),
            already_there=True,
        )
    kind = source_kind(model)
    try:
        root.mkdir(parents=True, exist_ok=True)
        # A marker for something else must not outlive the copy that replaces it.
        modelcache.marker(root).unlink(missing_ok=True)
        counted = root
        if kind == "hub":
            counted = _hub_download(model, revision, root, download)
            load = model
        else:
            source = Path(model)
            load = modelcache.load_target(model, str(root), kind)
            if kind == "piper":
                _copy_files([source, _piper_config(source)], root)
            else:
                _copy_dir(source, Path(load))
        files, size = _tree_size(counted)
        _write_marker(
            root,
            {
                "model": model,
                "revision": revision,
                "kind": kind,
                "load": load,
                "files": files,
                "bytes": size,
                "fetchedAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
    except OSError as exc:
        raise FetchError(f"could not write {model} into {root}: {exc}") from exc
    return Fetched(kind, load, files, size)


def wait(
    model: str,
    directory: str | Path,
    revision: str | None = None,
    *,
    timeout: float = 0.0,
    poll: float = 5.0,
    say: Callable[[str], None] = print,
) -> bool:
    """Block until `directory` holds `model` at `revision` (the pod gate). False when
    `timeout` (seconds; 0 waits for ever) passes first."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    said = False
    while not modelcache.holds(directory, model, revision):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if not said:
            say(f"waiting for {_label(model, revision)} to be cached in {directory}")
            said = True
        time.sleep(poll if deadline is None else min(poll, max(deadline - time.monotonic(), 0)))
    return True


def _label(model: str, revision: str | None) -> str:
    return f"{model}@{revision}" if revision else model


def fetch_model_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voicefleet fetch-model",
        description="Put a model into a cache directory that `voicefleet serve` then loads "
        "offline: a Hugging Face id is downloaded (Hub cache layout; serve with "
        "HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1 --model ID), a checkpoint directory or a Piper "
        "voice (X.onnx with X.onnx.json) is copied (serve with the printed path). A marker "
        f"file ({modelcache.MARKER}) is written last; a directory that already holds the "
        "model is left alone, so a copy seeded elsewhere works without a network.",
    )
    parser.add_argument(
        "--model", required=True, help="Hugging Face id, checkpoint directory or Piper .onnx file"
    )
    parser.add_argument(
        "--revision",
        default=None,
        help="branch, tag or commit on the Hub (default: its default branch)",
    )
    parser.add_argument(
        "--dir",
        required=True,
        dest="directory",
        help="cache directory to fill (created if missing)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="fetch nothing: wait until DIR holds the model (a pod gate)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="with --wait: give up after this many seconds (0: never)",
    )
    parser.add_argument(
        "--poll", type=float, default=5.0, help="with --wait: seconds between looks at DIR"
    )
    args = parser.parse_args(argv)
    label = _label(args.model, args.revision)
    if args.wait:
        if not wait(
            args.model, args.directory, args.revision, timeout=args.timeout, poll=args.poll
        ):
            print(
                f"voicefleet fetch-model: {label} did not arrive in {args.directory} "
                f"within {args.timeout:g} s",
                file=sys.stderr,
            )
            return 1
        print(f"{label} is cached in {args.directory}")
        return 0
    try:
        done = fetch(args.model, args.directory, args.revision)
    except FetchError as exc:
        print(f"voicefleet fetch-model: {exc}", file=sys.stderr)
        return 1
    state = (
        "already there"
        if done.already_there
        else (f"{done.files} files, {done.bytes / 2**20:.1f} MiB")
    )
    print(f"{label} is cached in {args.directory} ({state})")
    if done.kind == "hub":
        print(
            f"serve with: HF_HUB_CACHE={args.directory} HF_HUB_OFFLINE=1 voicefleet serve "
            f"--model {args.model}" + (f" --revision {args.revision}" if args.revision else "")
        )
    else:
        print(f"serve with: voicefleet serve --model {done.load}")
    return 0
