"""HTTP routes: thin functions that take the services from `app.state` and delegate."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_server.api.errors import error_response
from voicefleet_server.api.schemas import (
    ErrorResponse,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceCard,
    VoiceList,
)
from voicefleet_server.serving.speech import OPENAI_MODEL_ALIASES, SpeechService, SpeechSpec

router = APIRouter()
_STARTED = int(time.time())
_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 429, 500, 503)
}


def speech_service(request: Request) -> SpeechService:
    service: SpeechService = request.app.state.speech
    return service


Service = Annotated[SpeechService, Depends(speech_service)]


@router.post(
    "/v1/audio/speech",
    responses={
        200: {"content": {"audio/wav": {}, "audio/mpeg": {}, "text/event-stream": {}}},
        **_ERRORS,
    },
    summary="Generate audio from text (OpenAI-compatible)",
)
async def create_speech(body: SpeechRequest, service: Service) -> Response:
    spec = SpeechSpec(
        model=body.model,
        input=body.input,
        voice=body.voice,
        response_format=body.response_format,
        speed=body.speed,
        stream_format=body.stream_format,
        seed=body.seed,
    )
    if body.stream_format is None:
        audio, media_type = await service.speak(spec)
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
    summary="Voices of the loaded model",
)
async def list_voices(service: Service) -> VoiceList:
    return VoiceList(data=[VoiceCard.model_validate(v) for v in service.voices()])


@router.get("/healthz", summary="Liveness: the process serves HTTP and the model has not failed")
async def healthz(service: Service) -> JSONResponse:
    _, detail = service.readiness()
    status = 500 if detail["state"] == "failed" else 200
    return JSONResponse(
        {"status": "ok" if status == 200 else "failed", **detail}, status_code=status
    )


@router.get("/readyz", summary="Readiness: loaded, warmed up, not draining, memory under watermark")
async def readyz(service: Service) -> JSONResponse:
    ready, detail = service.readiness()
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
