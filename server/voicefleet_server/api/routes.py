"""HTTP routes: thin functions that reach the serving layer through one dependency
(`services`: the `Services` object on `app.state`) and delegate to it."""

from __future__ import annotations

import base64
import functools
import time
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_server.api.auth import caller
from voicefleet_server.api.disconnect import hung_up, unless_disconnected
from voicefleet_server.api.errors import error_response
from voicefleet_server.api.schemas import (
    CaptionedSpeech,
    ErrorResponse,
    JobChunk,
    JobError,
    JobRequest,
    JobStatus,
    ModelCapabilities,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceCard,
    VoiceDeleted,
    VoiceList,
    WordTimestamp,
)
from voicefleet_server.serving.errors import InvalidInput, TimestampsUnsupported
from voicefleet_server.serving.jobs import JobView
from voicefleet_server.serving.ratelimit import client_identity
from voicefleet_server.serving.runtime import FAULT_HEADER, State
from voicefleet_server.serving.services import Services
from voicefleet_server.serving.specs import JobSpec, SpeechSpec
from voicefleet_server.serving.tenancy import Principal

router = APIRouter()
_STARTED = int(time.time())
_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 503, 504)
}
_JOB_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 409, 413, 429, 503)
}


def services(request: Request) -> Services:
    """The one way a route reaches the serving layer."""
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]


def principal(request: Request) -> Principal:
    """Who is asking: the API key's owner id (and whether it is the admin key), as the key
    middleware accepted it; everyone is one tenant with keys off."""
    return caller(request.scope)


Caller = Annotated[Principal, Depends(principal)]


async def rate_limit(request: Request, svc: Svc) -> None:
    """Work-creating routes spend one token of the caller's bucket (429 when empty)."""
    limiter = svc.rate_limiter
    if limiter.enabled:
        client = request.client.host if request.client else None
        await limiter.check(client_identity(request.headers.get("authorization"), client))


Limited = Depends(rate_limit)


@router.post(
    "/v1/audio/speech",
    responses={
        200: {"content": {"audio/wav": {}, "audio/mpeg": {}, "text/event-stream": {}}},
        **_ERRORS,
    },
    summary="Generate audio from text (OpenAI-compatible)",
    dependencies=[Limited],
)
async def create_speech(body: SpeechRequest, svc: Svc, request: Request, who: Caller) -> Response:
    if body.timestamps is not None and body.stream_format != "sse":
        raise TimestampsUnsupported(
            'word timestamps need stream_format "sse" (speech.audio.timestamps events); '
            "for a whole file with its timestamps use POST /v1/audio/captioned_speech"
        )
    spec = _speech_spec(body, svc, request, who, "speech")
    if body.stream_format is None:
        answer = await unless_disconnected(request, svc.speech.speak(spec))
        if answer is None:
            return hung_up()
        audio, media_type = answer
        return Response(audio, media_type=media_type)
    chunks, media_type = await svc.speech.stream(spec)
    return StreamingResponse(chunks, media_type=media_type, headers={"Cache-Control": "no-cache"})


def _speech_spec(
    body: SpeechRequest, svc: Svc, request: Request, who: Principal, route: str
) -> SpeechSpec:
    return SpeechSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        response_format=body.response_format,
        speed=body.speed,
        stream_format=body.stream_format,
        seed=body.seed,
        fault=request.headers.get(FAULT_HEADER) if svc.settings.fault_injection else None,
        timestamps=body.timestamps is not None or route == "captioned_speech",
        principal=who,
        route=route,
    )


@router.post(
    "/v1/audio/captioned_speech",
    response_model=CaptionedSpeech,
    responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS},
    summary="Audio with word timestamps (voicefleet extra; Kokoro-FastAPI's shape)",
    dependencies=[Limited],
)
async def create_captioned_speech(
    body: SpeechRequest, svc: Svc, request: Request, who: Caller
) -> Response | CaptionedSpeech:
    """The speech request's body; the answer is JSON with the whole audio (base64) and its
    word timestamps, or with `stream_format: "sse"` the speech SSE stream with
    speech.audio.timestamps events."""
    if body.stream_format == "audio":
        raise TimestampsUnsupported(
            'captioned speech answers JSON, or SSE with stream_format "sse"; raw audio '
            'streams (stream_format "audio") have no place for timestamps',
            param="stream_format",
        )
    spec = _speech_spec(body, svc, request, who, "captioned_speech")
    if body.stream_format == "sse":
        chunks, media_type = await svc.speech.stream(spec)
        return StreamingResponse(
            chunks, media_type=media_type, headers={"Cache-Control": "no-cache"}
        )
    answer = await unless_disconnected(request, svc.speech.captioned(spec))
    if answer is None:
        return hung_up()
    return CaptionedSpeech(
        audio=base64.b64encode(answer.audio).decode("ascii"),
        format=answer.format,
        timestamps=[WordTimestamp.model_validate(t) for t in answer.timestamps],
    )


def _model_card(svc: Services) -> ModelCard:
    capabilities = None
    if svc.runtime.state is State.READY or svc.runtime.state is State.DRAINING:
        model = svc.runtime.model()
        capabilities = ModelCapabilities(
            voice_cloning=svc.runtime.clones_voices,
            word_timestamps=model.silent_tokens is not None,
        )
    return ModelCard(id=svc.runtime.model_name, created=_STARTED, capabilities=capabilities)


@router.get("/v1/models", response_model=ModelList, summary="Models this pod serves")
async def list_models(svc: Svc) -> ModelList:
    return ModelList(data=[_model_card(svc)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
async def get_model(model_id: str, svc: Svc) -> Response | ModelCard:
    if not svc.runtime.serves(model_id):
        return error_response(
            404,
            f"model {model_id!r} is not served here",
            "invalid_request_error",
            "model_not_found",
        )
    return _model_card(svc)


@router.get(
    "/v1/audio/voices",
    response_model=VoiceList,
    responses=_ERRORS,
    summary="Voices of the loaded model, built-in and uploaded",
)
async def list_voices(svc: Svc, who: Caller) -> VoiceList:
    """Built-in voices, and the uploaded voices of the caller's API key (all of them for
    the admin key)."""
    voices = await svc.runtime.catalogue(who)
    return VoiceList(data=[VoiceCard.model_validate(v) for v in voices])


@router.post(
    "/v1/audio/voices",
    response_model=VoiceCard,
    responses={**_ERRORS, 422: {"model": ErrorResponse}},
    dependencies=[Limited],
    summary="Make a voice from reference audio (SpeechT5 models): wav, flac, mp3, ogg, m4a, webm",
)
async def upload_voice(
    svc: Svc,
    who: Caller,
    name: Annotated[str, Form(min_length=1, max_length=128, description="display name")],
    audio_sample: Annotated[
        UploadFile | None,
        File(description="reference audio, up to 30 s / 10 MB (OpenAI's field name)"),
    ] = None,
    file: Annotated[
        UploadFile | None, File(description="the same as audio_sample (voicefleet's own name)")
    ] = None,
    consent: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=128,
            description="OpenAI's consent recording id; kept with the voice, not verified",
        ),
    ] = None,
    type: Annotated[
        str, Form(description='"audio_sample" (the only kind this server makes)')
    ] = "audio_sample",
) -> VoiceCard:
    if type != "audio_sample":
        raise InvalidInput(
            f"voices of type {type!r} are not made here; upload an audio_sample", param="type"
        )
    upload = audio_sample if audio_sample is not None else file
    if upload is None or (audio_sample is not None and file is not None):
        raise InvalidInput(
            "send the reference clip as audio_sample (or file), exactly once",
            param="audio_sample",
        )
    # Read one byte past the limit so an oversized file is refused without reading it all.
    data = await upload.read(svc.settings.voice_max_upload_bytes + 1)
    return VoiceCard.model_validate(await svc.runtime.upload_voice(name, data, who, consent))


@router.delete(
    "/v1/audio/voices/{voice_id}",
    response_model=VoiceDeleted,
    responses=_ERRORS,
    summary="Delete an uploaded voice",
)
async def delete_voice(
    voice_id: Annotated[str, PathParam(min_length=1, max_length=64)], svc: Svc, who: Caller
) -> VoiceDeleted:
    await svc.runtime.delete_voice(voice_id, who)
    return VoiceDeleted(id=voice_id)


@router.get("/healthz", summary="Liveness: the process serves HTTP and the model has not failed")
async def healthz(svc: Svc) -> JSONResponse:
    _, detail = svc.runtime.readiness()
    status = 200 if svc.runtime.live() else 500
    return JSONResponse(
        {"status": "ok" if status == 200 else "failed", **detail}, status_code=status
    )


@router.get("/readyz", summary="Readiness: loaded, warmed up, not draining, memory under watermark")
async def readyz(svc: Svc) -> JSONResponse:
    ready, detail = svc.runtime.readiness()
    # Redis down does not make the pod unready (it serves speech without it); it says so.
    detail["redis"] = svc.redis.detail() if svc.redis is not None else {"configured": False}
    detail["jobs"] = svc.jobs.detail()
    return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(svc: Svc) -> Response:
    svc.runtime.refresh_gauges()
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@functools.cache
def _playground_html() -> str:
    return (
        resources.files("voicefleet_server")
        .joinpath("static/index.html")
        .read_text(encoding="utf-8")
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground() -> HTMLResponse:
    return HTMLResponse(_playground_html())


# ---- long-form jobs ---------------------------------------------------------------------


def _job_status(view: JobView) -> JobStatus:
    record = view.record
    base = f"/v1/audio/jobs/{record.id}"
    rate = record.sample_rate
    chunks = []
    for i, n in enumerate(record.chunk_samples):
        if n is None or record.deleted:
            continue
        link = view.chunk_links.get(i)
        chunks.append(
            JobChunk(
                index=i,
                url=link.url if link else f"{base}/chunks/{i}",
                seconds=round(n / rate, 3),
                format="flac" if link else record.response_format,
                expires_at=int(link.expires_at) if link else None,
            )
        )
    total = max(1, record.segments_total)
    return JobStatus(
        id=record.id,
        status=record.status,  # type: ignore[arg-type]
        progress=1.0 if record.status == "succeeded" else round(record.segments_done / total, 4),
        segments_done=record.segments_done,
        segments_total=record.segments_total,
        chunks_done=len(chunks),
        chunks_total=len(record.chunk_samples),
        chunks=chunks,
        estimated_seconds_left=None if record.terminal else record.eta_s,
        audio_seconds=round(sum(c.seconds for c in chunks), 3),
        audio_url=f"{base}/audio" if record.status == "succeeded" and not record.deleted else None,
        response_format=record.response_format,
        seed=record.seed,
        created_at=int(record.created_at),
        started_at=None if record.started_at is None else int(record.started_at),
        finished_at=None if record.finished_at is None else int(record.finished_at),
        resumes=record.resumes,
        waiting_for=record.waiting_for,
        error=None if record.error is None else JobError(**record.error),
        deleted=record.deleted,
    )


JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="job id")]


@router.post(
    "/v1/audio/jobs",
    status_code=202,
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    dependencies=[Limited],
    summary="Start a long-form or multi-speaker job; returns at once",
)
async def create_job(body: JobRequest, svc: Svc, who: Caller) -> JobStatus:
    spec = JobSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        voices=dict(body.voices),
        response_format=body.response_format,
        speed=body.speed,
        seed=body.seed,
    )
    return _job_status(await svc.jobs.create(spec, who))


@router.get(
    "/v1/audio/jobs/{job_id}",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="A job's status, progress and finished chunks",
)
async def get_job(job_id: JobId, svc: Svc, who: Caller) -> JobStatus:
    return _job_status(await svc.jobs.status(job_id, who))


@router.delete(
    "/v1/audio/jobs/{job_id}",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="Cancel a job and delete its audio",
)
async def cancel_job(job_id: JobId, svc: Svc, who: Caller) -> JobStatus:
    return _job_status(await svc.jobs.cancel(job_id, who))


@router.get(
    "/v1/audio/jobs/{job_id}/chunks/{index}",
    responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}}}, **_JOB_ERRORS},
    summary="One finished chunk, as a complete file (served while later chunks render)",
)
async def get_job_chunk(job_id: JobId, index: int, svc: Svc, who: Caller) -> Response:
    body, media_type = await svc.jobs.chunk(job_id, index, who)
    return Response(body, media_type=media_type)


@router.get(
    "/v1/audio/jobs/{job_id}/audio",
    responses={
        200: {"content": {"audio/wav": {}, "audio/mpeg": {}}},
        307: {"description": "with S3 storage: a presigned URL of the whole result"},
        **_JOB_ERRORS,
    },
    summary="The whole result of a succeeded job: a redirect to storage, or streamed",
)
async def get_job_audio(job_id: JobId, svc: Svc, who: Caller) -> Response:
    audio = await svc.jobs.audio(job_id, who)
    if audio.url is not None:
        return RedirectResponse(audio.url, status_code=307)
    assert audio.body is not None
    return StreamingResponse(audio.body, media_type=audio.media_type)
