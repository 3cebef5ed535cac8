"""POST /v1/audio/transcriptions and /v1/audio/translations: OpenAI's multipart contract.

    curl -F file=@clip.wav -F model=pruned http://127.0.0.1:8000/v1/audio/transcriptions
    curl -F file=@clip.wav -F model=pruned -F target_language=de -F response_format=srt \\
         http://127.0.0.1:8000/v1/audio/translations
    curl -N -F file=@clip.wav -F model=pruned -F stream=true http://127.0.0.1:8000/v1/audio/transcriptions

Fields: file, model (a served name, never a path; default the first model), language (the
spoken language; must be the model's), prompt (accepted, unused: the task prompt comes from
the model dir), response_format json|text|verbose_json|srt|vtt, temperature (0-1; decoding is
always greedy), timestamp_granularities[] (segment), stream (SSE, json or text formats),
stream_include_usage (vLLM's field: when sent, the stream takes vLLM's chunk shape and ends
with ``[DONE]``, for vLLM's benchmark client), and for translations target_language (default:
the model's first language).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from ..errors import CLIENT_CLOSED, ApiError, as_api_error
from ..formats import STREAM_FORMATS, VllmChunks, render, sse
from ..service import Job, SpeechService

router = APIRouter(prefix="/v1/audio", tags=["audio"])

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
_DESCRIPTIONS = {
    "file": "audio file (wav, flac, ogg)",
    "model": "served model name (GET /v1/models)",
    "stream_include_usage": "vLLM's field: stream vLLM's chunk shape (ends with [DONE]); true adds a usage chunk",
}


def _check_fields(response_format: str, granularities: list[str], stream: bool) -> None:
    for g in granularities:
        if g == "word":
            raise ApiError(400, "word timestamps are not available: use timestamp_granularities[]=segment",
                           param="timestamp_granularities", code="unsupported_value")
        if g != "segment":
            raise ApiError(400, f"timestamp granularity {g[:20]!r}: use segment",
                           param="timestamp_granularities", code="invalid_value")
    if stream and response_format not in STREAM_FORMATS:
        raise ApiError(400, f"stream=true answers server-sent text events: use response_format json or text, "
                            f"not {response_format}", param="stream", code="invalid_value")


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read()
    if len(data) > limit:
        raise ApiError(413, f"upload too large: the limit is {limit / 2**20:g} MiB (max_upload_mb): "
                            "send a shorter or compressed (flac, ogg) file", param="file", code="file_too_large")
    return data


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read: receive() now only reports that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _sse_body(service: SpeechService, job: Job, vllm: VllmChunks | None):
    async for event in service.events(job):
        for out in vllm.convert(event) if vllm else [event]:
            yield sse(out)
    if vllm:
        yield VllmChunks.DONE


async def _run(request: Request, task: str, *, file: UploadFile, model: str | None, language: str | None,
               target_language: str | None, response_format: str, granularities: list[str], stream: bool,
               include_usage: bool | None = None):
    service: SpeechService = request.app.state.service
    job = Job()
    try:
        _check_fields(response_format, granularities, stream)
        data = await _read_upload(file, service.settings.max_upload_bytes)
        await service.prepare(job, model=model or None, task=task, data=data, target_language=target_language or None,
                              language=language or None, filename=file.filename)
        service.submit(job, stream=stream)
    except Exception as exc:
        err = as_api_error(exc)
        service.finish(job, err.status)
        raise err from None

    if stream:
        # vLLM's own stream fields ask for vLLM's chunk shape (its benchmark client sends them)
        vllm = VllmChunks(job.info.name, bool(include_usage)) if include_usage is not None else None
        return StreamingResponse(_sse_body(service, job, vllm), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    collect = asyncio.ensure_future(service.collect(job))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is cancelling this request
        collect.cancel()
        service.cancel(job)
        service.finish(job, CLIENT_CLOSED)
        raise
    finally:
        gone.cancel()
    if not collect.done():  # the client went away: stop its decoding, answer nobody
        collect.cancel()
        service.cancel(job)
        service.finish(job, CLIENT_CLOSED)
        return Response(status_code=CLIENT_CLOSED)
    try:
        transcript = collect.result()
    except Exception as exc:
        service.cancel(job)
        err = as_api_error(exc)
        service.finish(job, err.status)
        raise err from None
    service.finish(job, 200)
    return render(transcript, response_format)


@router.post("/transcriptions", summary="Transcribe audio into text in its language")
async def transcriptions(
    request: Request,
    file: UploadFile = File(..., description=_DESCRIPTIONS["file"]),
    model: str | None = Form(None, description=_DESCRIPTIONS["model"], max_length=200),
    language: str | None = Form(None, max_length=20),
    prompt: str | None = Form(None, max_length=4096),
    response_format: ResponseFormat = Form("json"),
    temperature: float = Form(0.0, ge=0.0, le=1.0),
    timestamp_granularities: list[str] = Form([], alias="timestamp_granularities[]"),
    stream: bool = Form(False),
    stream_include_usage: bool | None = Form(None, description=_DESCRIPTIONS["stream_include_usage"]),
):
    return await _run(request, "transcribe", file=file, model=model, language=language, target_language=None,
                      response_format=response_format, granularities=timestamp_granularities, stream=stream,
                      include_usage=stream_include_usage)


@router.post("/translations", summary="Translate speech into the target language")
async def translations(
    request: Request,
    file: UploadFile = File(..., description=_DESCRIPTIONS["file"]),
    model: str | None = Form(None, description=_DESCRIPTIONS["model"], max_length=200),
    target_language: str | None = Form(None, max_length=20,
                                       description="language code of the translation (default: the model's first)"),
    language: str | None = Form(None, max_length=20),
    prompt: str | None = Form(None, max_length=4096),
    response_format: ResponseFormat = Form("json"),
    temperature: float = Form(0.0, ge=0.0, le=1.0),
    timestamp_granularities: list[str] = Form([], alias="timestamp_granularities[]"),
    stream: bool = Form(False),
    stream_include_usage: bool | None = Form(None, description=_DESCRIPTIONS["stream_include_usage"]),
):
    return await _run(request, "translate", file=file, model=model, language=language,
                      target_language=target_language, response_format=response_format,
                      granularities=timestamp_granularities, stream=stream, include_usage=stream_include_usage)
