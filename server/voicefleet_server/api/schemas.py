"""Request and response models of the HTTP API (OpenAI's shapes where OpenAI has one)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError


def _voice_id(value: Any) -> Any:
    """OpenAI passes custom voices as `{"id": "voice_..."}`; both forms become the id."""
    if isinstance(value, dict):
        if "id" not in value:
            raise PydanticCustomError(
                "voice_object",
                'a voice object needs an "id" (a voice id from GET /v1/audio/voices)',
            )
        return value["id"]
    return value


# A voice as a name or id string, or as OpenAI's voice object {"id": ...}.
VoiceRef = Annotated[
    str,
    Field(min_length=1, max_length=256),
    BeforeValidator(_voice_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 256},
                {
                    "type": "object",
                    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 256}},
                    "required": ["id"],
                },
            ],
            "description": 'voice id or OpenAI voice name, as a string or as {"id": "..."}',
        }
    ),
]


class SpeechRequest(BaseModel):
    """Body of POST /v1/audio/speech, as OpenAI's `audio.speech.create` sends it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ...,
        min_length=1,
        max_length=256,
        description="model id (or tts-1, tts-1-hd, gpt-4o-mini-tts)",
    )
    input: str = Field(..., description="text to speak (limit: --max-input-chars, 4096 by default)")
    voice: VoiceRef
    response_format: str = Field(
        "mp3", description="mp3, opus, aac, wav, flac or pcm (16-bit LE mono)"
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate, 0.25 to 4.0")
    stream_format: Literal["audio", "sse"] | None = Field(
        None, description="audio: chunked bytes as segments finish; sse: speech.audio.delta events"
    )
    instructions: str | None = Field(
        None, max_length=4096, description="accepted for compatibility; VITS voices ignore it"
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="voicefleet extra: reproducible noise for this request",
    )
    timestamps: Literal["word"] | None = Field(
        None,
        description='voicefleet extra: "word" adds speech.audio.timestamps events (word, '
        "start_time, end_time in seconds) before each segment's audio; needs "
        "stream_format sse and a model that predicts durations (VITS, Piper)",
    )


class WordTimestamp(BaseModel):
    word: str = Field(..., description="the word as written in the input")
    start_time: float = Field(..., description="seconds from the start of the audio")
    end_time: float = Field(..., description="seconds from the start of the audio")


class CaptionedSpeech(BaseModel):
    """Audio and its word timestamps in one answer (the shape Kokoro-FastAPI's clients use)."""

    audio: str = Field(..., description="the whole audio file, base64")
    format: str = Field(..., description="its response_format")
    timestamps: list[WordTimestamp] = Field(..., description="words in input order")


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelCapabilities(BaseModel):
    """voicefleet extra: what the loaded model can do beyond plain speech."""

    voice_cloning: bool = Field(..., description="voices from reference audio (SpeechT5)")
    word_timestamps: bool = Field(
        ..., description="per-token durations, so word timestamps (VITS, Piper)"
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "voicefleet"
    capabilities: ModelCapabilities | None = Field(
        None, description="voicefleet extra; null while the model loads"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str
    object: Literal["audio.voice"] = "audio.voice"
    name: str
    model: str
    aliases: list[str] = Field(
        default_factory=list, description="OpenAI voice names that map to it"
    )
    type: Literal["builtin", "uploaded"] = Field(
        "builtin", description="built into the model, or made from uploaded reference audio"
    )
    duration: float | None = Field(None, description="uploaded voices: seconds of reference")
    created_at: int | None = Field(None, description="uploaded voices: unix time of upload")
    consent: str | None = Field(
        None, description="uploaded voices: the consent reference given at upload"
    )


class VoiceDeleted(BaseModel):
    id: str
    object: Literal["audio.voice.deleted"] = "audio.voice.deleted"
    deleted: bool = True


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]


class JobRequest(BaseModel):
    """Body of POST /v1/audio/jobs: a long text, or a `Speaker N: ...` script."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("tts-1", min_length=1, max_length=256, description="model id or alias")
    input: str = Field(
        ..., description="long text, or a script of `Speaker 1: ...` lines (--job-max-input-chars)"
    )
    voice: VoiceRef = "alloy"
    voices: dict[str, VoiceRef] = Field(
        default_factory=dict,
        max_length=64,
        description='speaker label -> voice, e.g. {"Speaker 1": "alloy", "Speaker 2": "echo"}',
    )
    response_format: str = Field("mp3", description="mp3, opus, aac, wav, flac or pcm")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate, 0.25 to 4.0")
    seed: int | None = Field(
        None, ge=0, le=2**62, description="reproducible noise; drawn at random when absent"
    )


class JobChunk(BaseModel):
    index: int
    url: str = Field(
        ...,
        description="where to fetch it: a presigned object-storage URL (S3 storage, valid "
        "until expires_at) or this server's /chunks/{n} route",
    )
    seconds: float
    format: str = Field(
        ..., description="flac for object-storage URLs (what is stored), else the job's format"
    )
    expires_at: int | None = Field(None, description="when a presigned URL stops working")


class JobError(BaseModel):
    code: str
    message: str


class JobStatus(BaseModel):
    id: str
    object: Literal["audio.job"] = "audio.job"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(..., description="share of segments rendered, 0 to 1")
    segments_done: int
    segments_total: int
    chunks_done: int
    chunks_total: int
    chunks: list[JobChunk] = Field(..., description="finished chunks, in order of index")
    estimated_seconds_left: float | None
    audio_seconds: float = Field(..., description="seconds of audio rendered so far")
    audio_url: str | None = Field(None, description="the whole result, once succeeded")
    response_format: str
    seed: int
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    resumes: int = Field(0, description="times another replica took the job over")
    waiting_for: str | None = Field(None, description='"redis" while its store is unreachable')
    error: JobError | None = None
    deleted: bool = Field(False, description="DELETE removed its audio (chunks and result)")
