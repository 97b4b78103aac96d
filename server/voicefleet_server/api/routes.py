"""HTTP routes: thin functions that reach the serving layer through one dependency
(`services`: the `Services` object on `app.state`) and delegate to it."""

from __future__ import annotations

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
from voicefleet_server.serving.jobs import JobView
from voicefleet_server.serving.ratelimit import client_identity
from voicefleet_server.serving.runtime import FAULT_HEADER
from voicefleet_server.serving.services import Services
from voicefleet_server.serving.specs import JobSpec, SpeechSpec

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
async def create_speech(body: SpeechRequest, svc: Svc, request: Request) -> Response:
    spec = SpeechSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        response_format=body.response_format,
        speed=body.speed,
        stream_format=body.stream_format,
        seed=body.seed,
        fault=request.headers.get(FAULT_HEADER) if svc.settings.fault_injection else None,
    )
    if body.stream_format is None:
        audio, media_type = await svc.speech.speak(spec)
        return Response(audio, media_type=media_type)
    chunks, media_type = await svc.speech.stream(spec)
    return StreamingResponse(chunks, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/v1/models", response_model=ModelList, summary="Models this pod serves")
async def list_models(svc: Svc) -> ModelList:
    return ModelList(data=[ModelCard(id=svc.runtime.model_name, created=_STARTED)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
async def get_model(model_id: str, svc: Svc) -> Response | ModelCard:
    if not svc.runtime.serves(model_id):
        return error_response(
            404,
            f"model {model_id!r} is not served here",
            "invalid_request_error",
            "model_not_found",
        )
    return ModelCard(id=svc.runtime.model_name, created=_STARTED)


@router.get(
    "/v1/audio/voices",
    response_model=VoiceList,
    responses=_ERRORS,
    summary="Voices of the loaded model, built-in and uploaded",
)
async def list_voices(svc: Svc) -> VoiceList:
    return VoiceList(data=[VoiceCard.model_validate(v) for v in await svc.runtime.catalogue()])


@router.post(
    "/v1/audio/voices",
    response_model=VoiceCard,
    responses={**_ERRORS, 422: {"model": ErrorResponse}},
    dependencies=[Limited],
    summary="Make a voice from reference audio (SpeechT5 models): wav, flac, mp3 or ogg",
)
async def upload_voice(
    svc: Svc,
    name: Annotated[str, Form(min_length=1, max_length=128, description="display name")],
    file: Annotated[UploadFile, File(description="reference audio, up to 30 s / 10 MB")],
) -> VoiceCard:
    # Read one byte past the limit so an oversized file is refused without reading it all.
    data = await file.read(svc.settings.voice_max_upload_bytes + 1)
    return VoiceCard.model_validate(await svc.runtime.upload_voice(name, data))


@router.delete(
    "/v1/audio/voices/{voice_id}",
    response_model=VoiceDeleted,
    responses=_ERRORS,
    summary="Delete an uploaded voice",
)
async def delete_voice(
    voice_id: Annotated[str, PathParam(min_length=1, max_length=64)], svc: Svc
) -> VoiceDeleted:
    await svc.runtime.delete_voice(voice_id)
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
async def create_job(body: JobRequest, svc: Svc) -> JobStatus:
    spec = JobSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        voices=dict(body.voices),
        response_format=body.response_format,
        speed=body.speed,
        seed=body.seed,
    )
    return _job_status(await svc.jobs.create(spec))


@router.get(
    "/v1/audio/jobs/{job_id}",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="A job's status, progress and finished chunks",
)
async def get_job(job_id: JobId, svc: Svc) -> JobStatus:
    return _job_status(await svc.jobs.status(job_id))


@router.delete(
    "/v1/audio/jobs/{job_id}",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="Cancel a job and delete its audio",
)
async def cancel_job(job_id: JobId, svc: Svc) -> JobStatus:
    return _job_status(await svc.jobs.cancel(job_id))


@router.get(
    "/v1/audio/jobs/{job_id}/chunks/{index}",
    responses={200: {"content": {"audio/wav": {}, "audio/mpeg": {}}}, **_JOB_ERRORS},
    summary="One finished chunk, as a complete file (served while later chunks render)",
)
async def get_job_chunk(job_id: JobId, index: int, svc: Svc) -> Response:
    body, media_type = await svc.jobs.chunk(job_id, index)
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
async def get_job_audio(job_id: JobId, svc: Svc) -> Response:
    audio = await svc.jobs.audio(job_id)
    if audio.url is not None:
        return RedirectResponse(audio.url, status_code=307)
    assert audio.body is not None
    return StreamingResponse(audio.body, media_type=audio.media_type)
