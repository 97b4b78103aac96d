"""What a request asks for, as the serving layer sees it (the API schemas have already
type-checked it): the plain values SpeechService, JobService and the cache work from."""

from __future__ import annotations

from dataclasses import dataclass, field

from voicefleet_server.serving.tenancy import ANYONE, Principal


@dataclass(frozen=True, slots=True)
class SpeechSpec:
    """One /v1/audio/speech request."""

    model: str
    input: str
    voice: str
    response_format: str = "wav"
    speed: float = 1.0
    stream_format: str | None = None
    seed: int | None = None
    # Test-only (--fault-injection): the X-Voicefleet-Fault header, see engine/faults.py.
    fault: str | None = None
    # Word timestamps: SSE speech.audio.timestamps events, or a captioned answer.
    timestamps: bool = False
    # Who asks (serving/tenancy.py): which uploaded voices it may use. Not part of the
    # cache key: uploaded voice ids differ per owner, built-in voices sound the same.
    principal: Principal = ANYONE
    # Which route asked, for metrics ("speech" or "captioned_speech").
    route: str = "speech"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One /v1/audio/jobs request: plain text, or a script whose labels map to `voices`."""

    model: str
    input: str
    voice: str
    voices: dict[str, str] = field(default_factory=dict)
    response_format: str = "wav"
    speed: float = 1.0
    seed: int | None = None
