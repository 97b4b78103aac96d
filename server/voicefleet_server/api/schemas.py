"""Request and response models of the HTTP API (OpenAI's shapes where OpenAI has one)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    voice: str = Field(
        ..., min_length=1, max_length=256, description="voice id, or an OpenAI voice name"
    )
    response_format: str = Field("mp3", description="mp3, opus, wav, flac or pcm (16-bit LE mono)")
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


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "voicefleet"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str
    name: str
    model: str
    aliases: list[str] = Field(
        default_factory=list, description="OpenAI voice names that map to it"
    )


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
