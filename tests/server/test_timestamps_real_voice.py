"""Word timestamps of the real voice (the bundled Piper voice) against pocketsphinx's own
word segmentation of the same audio."""

from __future__ import annotations

import base64
import difflib
from collections.abc import Iterator

import httpx
import pytest
from server_process import ServerProcess, start_server
from test_timestamps_api import captioned, check_invariants, wav_seconds
from voicefleet_bench.recognizer import SIMPLE_SENTENCES, Recognizer, read_wav


@pytest.fixture(scope="module")
def real_voice(
    piper_voice_onnx: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_server(
        piper_voice_onnx, tmp_path_factory.mktemp("piper-logs"), "--no-autotune",
        "--max-batch-size", "4", "--batch-window-ms", "50", "--dtype", "float32",
        ready_timeout=180,
    )  # fmt: skip
    yield server
    server.stop()


def _key(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum() or c == "'")


@pytest.mark.timeout(600)
def test_real_voice_word_times_agree_with_the_recognizer(real_voice: ServerProcess) -> None:
    """Our word times against pocketsphinx's own segmentation of the same audio: where the
    recognizer heard the word we said, start and end agree within 0.3 s for most words."""
    recognizer = Recognizer()
    compared = within = spoken = 0
    with httpx.Client(base_url=real_voice.url, timeout=120) as http:
        for sentence in SIMPLE_SENTENCES:
            response = captioned(http, input=sentence, response_format="wav", seed=11)
            assert response.status_code == 200, response.text
            body = response.json()
            wav = base64.b64decode(body["audio"])
            ours = body["timestamps"]
            assert [t["word"] for t in ours] == [w.strip(".,?!") for w in sentence.split()]
            check_invariants(ours, wav_seconds(wav))
            audio, rate = read_wav(wav)
            heard = recognizer.word_segments(audio, rate)
            matcher = difflib.SequenceMatcher(
                None, [_key(t["word"]) for t in ours], [_key(w) for w, _, _ in heard]
            )
            spoken += len(ours)
            for a, b, size in matcher.get_matching_blocks():
                for k in range(size):
                    mine, (_, start, end) = ours[a + k], heard[b + k]
                    compared += 1
                    close = abs(mine["start_time"] - start) <= 0.3
                    within += close and abs(mine["end_time"] - end) <= 0.3
    assert compared >= 0.6 * spoken, f"the recognizer matched only {compared} of {spoken} words"
    assert within >= 0.85 * compared, f"{within} of {compared} words within 0.3 s"
