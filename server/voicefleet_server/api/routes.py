"""HTTP routes: thin functions that take the services from `app.state` and delegate."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_server.api.errors import error_response
from voicefleet_server.api.schemas import (
    ErrorResponse,
    JobChunk,
    JobError,
    JobRequest,
    JobStatus,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceCard,
    VoiceDeleted,
    VoiceList,
)
from voicefleet_server.engine.faults import FAULT_HEADER
from voicefleet_server.serving.cache import ResultCache
from voicefleet_server.serving.jobs import JobService, JobSpec
from voicefleet_server.serving.ratelimit import RateLimiter, client_identity
from voicefleet_server.serving.redis_link import RedisLink
from voicefleet_server.serving.speech import OPENAI_MODEL_ALIASES, SpeechService, SpeechSpec
from voicefleet_server.serving.store import JobRecord

router = APIRouter()
_STARTED = int(time.time())
_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 503, 504)
}
_JOB_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 409, 413, 429, 503)
}


def speech_service(request: Request) -> SpeechService:
    service: SpeechService = request.app.state.speech
    return service


Service = Annotated[SpeechService, Depends(speech_service)]


def job_service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


Jobs = Annotated[JobService, Depends(job_service)]


async def rate_limit(request: Request) -> None:
    """Work-creating routes spend one token of the caller's bucket (429 when empty)."""
    limiter: RateLimiter = request.app.state.rate_limiter
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
async def create_speech(body: SpeechRequest, service: Service, request: Request) -> Response:
    spec = SpeechSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        response_format=body.response_format,
        speed=body.speed,
        stream_format=body.stream_format,
        seed=body.seed,
        fault=request.headers.get(FAULT_HEADER) if service.settings.fault_injection else None,
    )
    await service.ensure_voices(body.voice)
    if body.stream_format is None:
        cache: ResultCache = request.app.state.cache
        audio, media_type = await cache.speak(service, spec)
        return Response(audio, media_type=media_type)
    chunks, media_type = service.stream(spec)
    return StreamingResponse(chunks, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/v1/models", response_model=ModelList, summary="Models this pod serves")
async def list_models(service: Service) -> ModelList:
    return ModelList(data=[ModelCard(id=service.model_name, created=_STARTED)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
async def get_model(model_id: str, service: Service) -> Response | ModelCard:
    if model_id not in {service.model_name, service.settings.model, *OPENAI_MODEL_ALIASES}:
        return error_response(
            404,
            f"model {model_id!r} is not served here",
            "invalid_request_error",
            "model_not_found",
        )
    return ModelCard(id=service.model_name, created=_STARTED)


@router.get(
    "/v1/audio/voices",
    response_model=VoiceList,
    responses=_ERRORS,
    summary="Voices of the loaded model, built-in and uploaded",
)
async def list_voices(service: Service) -> VoiceList:
    return VoiceList(data=[VoiceCard.model_validate(v) for v in await service.catalogue()])


@router.post(
    "/v1/audio/voices",
    response_model=VoiceCard,
    responses={**_ERRORS, 422: {"model": ErrorResponse}},
    dependencies=[Limited],
    summary="Make a voice from reference audio (SpeechT5 models): wav, flac, mp3 or ogg",
)
async def upload_voice(
    service: Service,
    name: Annotated[str, Form(min_length=1, max_length=128, description="display name")],
    file: Annotated[UploadFile, File(description="reference audio, up to 30 s / 10 MB")],
) -> VoiceCard:
    # Read one byte past the limit so an oversized file is refused without reading it all.
    data = await file.read(service.settings.voice_max_upload_bytes + 1)
    return VoiceCard.model_validate(await service.upload_voice(name, data))


@router.delete(
    "/v1/audio/voices/{voice_id}",
    response_model=VoiceDeleted,
    responses=_ERRORS,
    summary="Delete an uploaded voice",
)
async def delete_voice(
    voice_id: Annotated[str, PathParam(min_length=1, max_length=64)], service: Service
) -> VoiceDeleted:
    await service.delete_voice(voice_id)
    return VoiceDeleted(id=voice_id)


@router.get("/healthz", summary="Liveness: the process serves HTTP and the model has not failed")
async def healthz(service: Service) -> JSONResponse:
    _, detail = service.readiness()
    status = 200 if service.live() else 500
    return JSONResponse(
        {"status": "ok" if status == 200 else "failed", **detail}, status_code=status
    )


@router.get("/readyz", summary="Readiness: loaded, warmed up, not draining, memory under watermark")
async def readyz(request: Request, service: Service, jobs: Jobs) -> JSONResponse:
    ready, detail = service.readiness()
    link: RedisLink | None = request.app.state.redis
    # Redis down does not make the pod unready (it serves speech without it); it says so.
    detail["redis"] = link.detail() if link is not None else {"configured": False}
    detail["jobs"] = jobs.detail()
    return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request, service: Service) -> Response:
    service.refresh_gauges()
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.playground_html)


# ---- long-form jobs ---------------------------------------------------------------------


def _job_status(record: JobRecord) -> JobStatus:
    base = f"/v1/audio/jobs/{record.id}"
    rate = record.sample_rate
    chunks = [
        JobChunk(index=i, url=f"{base}/chunks/{i}", seconds=round(n / rate, 3))
        for i, n in enumerate(record.chunk_samples)
        if n is not None
    ]
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
        audio_url=f"{base}/audio" if record.status == "succeeded" else None,
        response_format=record.response_format,
        seed=record.seed,
        created_at=int(record.created_at),
        started_at=None if record.started_at is None else int(record.started_at),
        finished_at=None if record.finished_at is None else int(record.finished_at),
        resumes=record.resumes,
        waiting_for=record.waiting_for,
        error=None if record.error is None else JobError(**record.error),
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
async def create_job(body: JobRequest, jobs: Jobs) -> JobStatus:
    spec = JobSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        voices=dict(body.voices),
        response_format=body.response_format,
        speed=body.speed,
        seed=body.seed,
    )
    return _job_status(await jobs.create(spec))


@router.get(
    "/v1/audio/jobs/{job_id}",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="A job's status, progress and finished chunks",
)
async def get_job(job_id: JobId, jobs: Jobs) -> JobStatus:
    return _job_status(await jobs.status(job_id))


@router.delete(
    "/v1/audio/jobs/{job_id}",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="Cancel a job",
)
async def cancel_job(job_id: JobId, jobs: Jobs) -> JobStatus:
    return _job_status(await jobs.cancel(job_id))


@router.get(
    "/v1/audio/jobs/{job_id}/chunks/{index}",
    responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}}}, **_JOB_ERRORS},
    summary="One finished chunk, as a complete file (served while later chunks render)",
)
async def get_job_chunk(job_id: JobId, index: int, jobs: Jobs) -> Response:
    body, media_type = await jobs.chunk(job_id, index)
    return Response(body, media_type=media_type)


@router.get(
    "/v1/audio/jobs/{job_id}/audio",
    responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}}}, **_JOB_ERRORS},
    summary="The whole result of a succeeded job, streamed",
)
async def get_job_audio(job_id: JobId, jobs: Jobs) -> StreamingResponse:
    chunks, media_type = await jobs.audio(job_id)
    return StreamingResponse(chunks, media_type=media_type)
