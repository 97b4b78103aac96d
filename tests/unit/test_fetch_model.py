"""`voicefleet fetch-model`: copies and downloads land complete before their marker, a filled
directory is left alone (air-gapped seeding), the pod gate waits for the marker, and the
server's loaders read the result offline. No hub here: hub downloads use a stand-in that
writes the Hub's cache layout the way `snapshot_download` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from voicefleet_server import fetch_model
from voicefleet_server.fetch_model import FetchError, fetch, fetch_model_main, wait

from voicefleet import modelcache
from voicefleet.cli import main as voicefleet_main


def checkpoint(root: Path) -> Path:
    source = root / "my-voice"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"model_type": "vits"}')
    (source / "sub" / "weights.bin").write_bytes(b"\0" * 1000)
    return source


def tree(root: Path) -> dict[str, tuple[int, float]]:
    """Every path under `root` with its size and mtime: to see that nothing was written."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime)
        for p in sorted(root.rglob("*"))
    }


def test_a_directory_is_copied_under_its_own_name_then_marked(tmp_path: Path) -> None:
    source = checkpoint(tmp_path)
    cache = tmp_path / "cache"
    done = fetch(str(source), cache)
    assert (done.kind, done.files, done.bytes) == ("directory", 2, 1000 + 22)
    # The copy keeps the source's name, so the server names the model as it would have.
    assert done.load == str(cache / "my-voice")
    assert (cache / "my-voice" / "sub" / "weights.bin").read_bytes() == b"\0" * 1000
    marker = json.loads((cache / modelcache.MARKER).read_text())
    assert marker["model"] == str(source) and marker["revision"] is None
    assert marker["kind"] == "directory" and marker["load"] == done.load
    assert modelcache.holds(cache, str(source), None)
    assert not modelcache.holds(cache, str(source), "v2")
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial-")]


def test_a_piper_voice_is_copied_with_its_config(tmp_path: Path) -> None:
    voice = tmp_path / "voices" / "en_US-joe-medium.onnx"
    voice.parent.mkdir()
    voice.write_bytes(b"onnx")
    voice.with_name(voice.name + ".json").write_text("{}")
    cache = tmp_path / "cache"
    done = fetch(str(voice), cache)
    assert done.kind == "piper"
    assert done.load == str(cache / "en_US-joe-medium.onnx")
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [modelcache.MARKER, "en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"]
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.onnx", b"onnx without its .onnx.json", "not a Piper voice"),
        ("notes.txt", b"hi", "not a Piper voice"),
        ("absent", None, "no such file or directory"),
        ("./absent.onnx", None, "no such file or directory"),
    ],
)
def test_what_cannot_be_fetched_fails_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes | None,
    message: str,
) -> None:
    model = str(tmp_path / name)
    if content is not None:
        Path(model).write_bytes(content)
    assert fetch_model_main(["--model", model, "--dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("voicefleet fetch-model: ") and message in err
    assert not modelcache.holds(tmp_path / "cache", model, None)


def test_an_interrupted_copy_leaves_no_marker_and_a_retry_completes(tmp_path: Path) -> None:
    source = checkpoint(tmp_path)
    # A named pipe cannot be copied: the copy fails after the other files went over.
    os.mkfifo(source / "sub" / "stuck")
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="named pipe"):
        fetch(str(source), cache)
    assert not (cache / modelcache.MARKER).exists()
    assert not (cache / "my-voice").exists()  # nothing that looks like a finished copy
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial-")]
    (source / "sub" / "stuck").unlink()
    assert fetch(str(source), cache).files == 2
    assert modelcache.holds(cache, str(source), None)


def test_a_filled_directory_is_left_alone_so_seeded_copies_work_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = checkpoint(tmp_path)
    seeded = tmp_path / "seeded"
    assert fetch_model_main(["--model", str(source), "--dir", str(seeded)]) == 0
    before = tree(seeded)
    shutil.rmtree(source)  # the cluster side has no source at all
    assert fetch_model_main(["--model", str(source), "--dir", str(seeded)]) == 0
    assert "already there" in capsys.readouterr().out
    assert tree(seeded) == before


def hub_stand_in(files: Path, calls: list[dict[str, Any]], commit: str = "0123abcd") -> Any:
    """Writes what snapshot_download writes into `cache_dir`: blobs, a snapshot of links to
    them, and refs/<revision> naming the commit."""

    def download(*, repo_id: str, revision: str | None, cache_dir: str) -> str:
        calls.append({"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir})
        repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (repo / "blobs").mkdir()
        for index, path in enumerate(sorted(p for p in files.iterdir() if p.is_file())):
            blob = repo / "blobs" / f"blob{index}"
            shutil.copy2(path, blob)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
        (repo / "refs").mkdir()
        (repo / "refs" / (revision or "main")).write_text(commit)
        return str(snapshot)

    return download


def test_a_hub_id_is_downloaded_in_the_hub_layout_and_marked(
    tmp_path: Path, tiny_model_dir: str
) -> None:
    calls: list[dict[str, Any]] = []
    cache = tmp_path / "cache"
    done = fetch("org/tiny", cache, "v1", download=hub_stand_in(Path(tiny_model_dir), calls))
    assert calls == [{"repo_id": "org/tiny", "revision": "v1", "cache_dir": str(cache)}]
    assert (done.kind, done.load) == ("hub", "org/tiny")
    # The snapshot's files, each once (not again as the blobs they link to).
    assert done.files == len([p for p in Path(tiny_model_dir).iterdir() if p.is_file()])
    assert modelcache.holds(cache, "org/tiny", "v1")
    assert not modelcache.holds(cache, "org/tiny", None)


def test_a_failed_download_says_so_and_drops_an_older_marker(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / modelcache.MARKER).write_text(json.dumps({"model": "org/tiny", "revision": "v1"}))

    def offline(**_: Any) -> None:
        raise ConnectionError("hub unreachable")

    with pytest.raises(
        FetchError,
        match=r"could not download org/tiny@v2 from the Hugging "
        r"Face Hub: ConnectionError: hub unreachable",
    ):
        fetch("org/tiny", cache, "v2", download=offline)
    assert not (cache / modelcache.MARKER).exists()


def test_the_server_loader_reads_a_hub_download_offline_without_writing(
    tmp_path: Path, tiny_model_dir: str
) -> None:
    """What pods do: HF_HUB_CACHE at the cached directory, offline, load by the hub id."""
    cache = tmp_path / "cache"
    fetch("org/tiny", cache, None, download=hub_stand_in(Path(tiny_model_dir), []))
    before = tree(cache)
    code = (
        "from transformers import AutoTokenizer, VitsModel;"
        "VitsModel.from_pretrained('org/tiny', revision='main');"
        "AutoTokenizer.from_pretrained('org/tiny', revision='main'); print('loaded')"
    )
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]
    assert tree(cache) == before  # a read-only volume would do


def test_the_server_loader_reads_a_copied_checkpoint(tmp_path: Path, tiny_model_dir: str) -> None:
    from transformers import VitsModel

    done = fetch(tiny_model_dir, tmp_path / "cache")
    model = VitsModel.from_pretrained(done.load)
    assert model.config.model_type == "vits"


def test_wait_returns_once_the_marker_appears(tmp_path: Path) -> None:
    source = checkpoint(tmp_path)
    cache = tmp_path / "cache"
    said: list[str] = []
    timer = threading.Timer(0.3, lambda: fetch(str(source), cache))
    timer.start()
    try:
        started = time.monotonic()
        assert wait(str(source), cache, timeout=30, poll=0.05, say=said.append)
        assert time.monotonic() - started >= 0.2  # it did wait for the copy
    finally:
        timer.join()
    assert said == [f"waiting for {source} to be cached in {cache}"]
    # Another revision is not this one: the gate keeps waiting (here until its timeout).
    assert not wait(str(source), cache, "v2", timeout=0.2, poll=0.05, say=said.append)


def test_the_gate_command_fails_after_its_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--model",
        "org/tiny",
        "--dir",
        str(tmp_path),
        "--wait",
        "--timeout",
        "0.2",
        "--poll",
        "0.05",
    ]
    assert fetch_model_main(argv) == 1
    assert "did not arrive" in capsys.readouterr().err


def test_the_console_script_dispatches_fetch_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = checkpoint(tmp_path)
    assert (
        voicefleet_main(["fetch-model", "--model", str(source), "--dir", str(tmp_path / "c")]) == 0
    )
    out = capsys.readouterr().out
    assert f"serve with: voicefleet serve --model {tmp_path / 'c' / 'my-voice'}" in out
    assert fetch_model.__name__ in sys.modules


def test_layout_names_shared_with_the_operator() -> None:
    assert modelcache.spelled_kind("facebook/mms-tts-eng") == "hub"
    assert modelcache.spelled_kind("/opt/models/tiny-vits") == "directory"
    assert modelcache.spelled_kind("/voices/en_US-joe-medium.onnx") == "piper"
    slot = modelcache.slot_name("facebook/mms-tts-eng", "main")
    assert slot.startswith("facebook-mms-tts-eng@main-") and "/" not in slot
    # Every revision, and every spelling that sanitises alike, gets its own directory.
    assert (
        len(
            {
                slot,
                modelcache.slot_name("facebook/mms-tts-eng", None),
                modelcache.slot_name("facebook/mms-tts-eng", "v2"),
                modelcache.slot_name("facebook-mms-tts-eng", "main"),
            }
        )
        == 4
    )
    assert len(modelcache.slot_name("a" * 500, "r" * 200)) <= 91
    assert modelcache.load_target("facebook/mms-tts-eng", "/models/x") == "facebook/mms-tts-eng"
    assert modelcache.load_target("/opt/models/tiny-vits/", "/models/x") == ("/models/x/tiny-vits")
    assert modelcache.load_target("/v/joe.onnx", "/models/x") == "/models/x/joe.onnx"
