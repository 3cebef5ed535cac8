"""POST /v1/audio/transcriptions and /v1/audio/translations: OpenAI's multipart contract.

    curl -F file=@clip.wav -F model=pruned http://127.0.0.1:8000/v1/audio/transcriptions
    curl -F file=@clip.wav -F model=pruned -F target_language=de -F response_format=srt \\
         http://127.0.0.1:8000/v1/audio/translations
    curl -N -F file=@clip.wav -F model=pruned -F stream=true http://127.0.0.1:8000/v1/audio/transcriptions

Fields, and what each does here:
- file: the audio (wav, flac, ogg, webm, mp4/m4a, mp3, aac; limits in the README); model: a served name, never a path
  (default: the first served model);
- language: the spoken language; must be the model's;
- response_format json|text|verbose_json|srt|vtt; stream (SSE, json or text formats);
  stream_include_usage (vLLM's field: the stream takes vLLM's chunk shape and ends with ``[DONE]``);
- chunking_strategy: ``auto`` or a JSON object ``{"type": "server_vad", "threshold": 0.5,
  "silence_duration_ms": 300, "prefix_padding_ms": 0}``: cut the audio into speech pieces with
  the voice-activity detector even when it fits the model's window (longer audio always is);
- translations: target_language, or vLLM's name for it, to_language (default: the model's
  first target language);
- timestamp_granularities[]=word (transcriptions, response_format verbose_json, srt or vtt): each
  word's start and end from the CTC alignment of the transcript (server/words.py); a model without a
  CTC head is a 400 saying why; segment is always given;
- accepted and without effect: prompt (the task prompt comes from the model dir), temperature
  (0-1; decoding is always greedy);
- refused with a 400 naming them: include[] (no per-token log-probabilities), target_language /
  to_language on /transcriptions (use /translations).
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from ..errors import CLIENT_CLOSED, ApiError, as_api_error
from ..formats import STREAM_FORMATS, VllmChunks, render, sse
from ..schemas import AUDIO_RESPONSES
from ..service import Chunking, Job, SpeechService

router = APIRouter(prefix="/v1/audio", tags=["audio"])

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
_DESCRIPTIONS = {
    "file": "audio file (wav, flac, ogg, webm, mp4/m4a, mp3, aac)",
    "model": "served model name (GET /v1/models)",
    "timestamp_granularities": "segment (always given), word: verbose_json words / one srt or vtt cue per word, on "
                               "/transcriptions, for models with a CTC head (the demo models)",
    "stream_include_usage": "vLLM's field: stream vLLM's chunk shape (ends with [DONE]); true adds a usage chunk",
    "chunking_strategy": 'auto, or {"type": "server_vad", "threshold", "silence_duration_ms", "prefix_padding_ms"}: '
                         "cut at pauses found by voice activity detection (always done for audio longer than the "
                         "model's window)",
}
# OpenAI fields this server refuses with a 400 that names them: the document says so (only empty
# values pass), so a client or a schema-driven fuzzer is not invited to send them
_REFUSED = {"description": "refused on /transcriptions (use /translations): empty or absent",
            "json_schema_extra": {"maxLength": 0}}
_REFUSED_LIST = {"description": "OpenAI's include[]: not supported (no per-token log-probabilities)",
                 "json_schema_extra": {"items": {"type": "string", "maxLength": 0}}}


#: response formats that can carry word timestamps (verbose_json's words, one srt/vtt cue per word)
WORD_FORMATS = ("verbose_json", "srt", "vtt")


def _check_fields(response_format: str, granularities: list[str], stream: bool, include: list[str],
                  task: str = "transcribe") -> None:
    for g in granularities:
        if g not in ("segment", "word"):
            raise ApiError(400, f"timestamp granularity {g[:20]!r}: use segment or word",
                           param="timestamp_granularities", code="invalid_value")
    if "word" in granularities:
        if task != "transcribe":
            raise ApiError(400, "word timestamps are for /v1/audio/transcriptions: a translation's words are not "
                                "the words spoken in the audio", param="timestamp_granularities",
                           code="unsupported_value")
        if stream or response_format not in WORD_FORMATS:
            raise ApiError(400, "word timestamps come in response_format verbose_json (words), srt or vtt (one cue "
                                f"per word), not {'a stream' if stream else response_format}",
                           param="timestamp_granularities", code="invalid_value")
    if any(include):
        raise ApiError(400, f"include[]={next(i for i in include if i)[:20]!r} is not supported: this server returns no per-token "
                            "log-probabilities (verbose_json has each segment's avg_logprob)",
                       param="include", code="unsupported_value")
    if stream and response_format not in STREAM_FORMATS:
        raise ApiError(400, f"stream=true answers server-sent text events: use response_format json or text, "
                            f"not {response_format}", param="stream", code="invalid_value")


def parse_chunking(value: str | None) -> Chunking | None:
    """``chunking_strategy``: absent -> None; ``auto`` -> defaults; a server_vad JSON object -> its settings."""
    if value is None or value == "":
        return None
    if value.strip() == "auto":
        return Chunking()
    try:
        spec = json.loads(value)
    except json.JSONDecodeError:
        spec = None
    if not isinstance(spec, dict) or spec.get("type") != "server_vad":
        raise ApiError(400, 'chunking_strategy must be "auto" or a JSON object {"type": "server_vad", ...}',
                       param="chunking_strategy", code="invalid_value")
    fields = {"threshold": (float, 0.0, 1.0), "silence_duration_ms": (int, 0, 10_000),
              "prefix_padding_ms": (int, 0, 10_000)}
    values = {}
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in fields:
            raise ApiError(400, f"chunking_strategy: unknown field {key[:40]!r} (known: {', '.join(fields)})",
                           param="chunking_strategy", code="invalid_value")
        kind, lo, hi = fields[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ApiError(400, f"chunking_strategy.{key} must be a number in [{lo}, {hi}]",
                           param="chunking_strategy", code="invalid_value")
        values[key] = kind(value)
    return Chunking(threshold=values.get("threshold"), silence_ms=values.get("silence_duration_ms"),
                    padding_ms=values.get("prefix_padding_ms"))


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


async def _run(request: Request, task: str, form: "AudioForm", target_language: str | None):
    service: SpeechService = request.app.state.service
    file, stream, response_format = form.file, form.stream, form.response_format
    # admitted (a slot held) by AdmissionMiddleware before the body was read
    job = Job(ticket=getattr(request.state, "ticket", None))
    if getattr(request.state, "request_id", None):  # RequestIdMiddleware's (the client's, when sane)
        job.request_id = request.state.request_id
    try:
        _check_fields(response_format, form.granularities, stream, form.include, task)
        chunking = parse_chunking(form.chunking_strategy)
        limit = service.settings.max_upload_bytes
        if file.size is not None and file.size > limit:
            raise ApiError(413, f"upload too large: the limit is {limit / 2**20:g} MiB (max_upload_mb): "
                                "send a shorter or compressed (flac, ogg) file", param="file", code="file_too_large")
        # the upload's spooled file (on disk past 1 MB) is decoded in place, never copied into memory
        await service.prepare(job, model=form.model or None, task=task, upload=file.file,
                              target_language=target_language or None, language=form.language or None,
                              filename=file.filename, chunking=chunking, words="word" in form.granularities)
        service.submit(job, stream=stream)
    except Exception as exc:
        err = as_api_error(exc)
        service.finish(job, err.status, err.message)
        raise err from None

    if stream:
        # vLLM's own stream fields ask for vLLM's chunk shape (its benchmark client sends them)
        vllm = VllmChunks(job.info.name, bool(form.include_usage)) if form.include_usage is not None else None
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
        service.finish(job, err.status, err.message)
        raise err from None
    service.finish(job, 200)
    return render(transcript, response_format)


def _no_target_on_transcriptions(target_language: str | None, to_language: str | None) -> None:
    if target_language or to_language:
        param = "target_language" if target_language else "to_language"
        raise ApiError(400, f"{param}: /v1/audio/transcriptions writes the spoken language; "
                            "for a translation POST to /v1/audio/translations", param=param, code="invalid_value")


class AudioForm:
    """The form fields both audio endpoints take (one dependency: one declaration, one schema)."""

    def __init__(
        self,
        file: UploadFile = File(..., description=_DESCRIPTIONS["file"]),
        model: str | None = Form(None, description=_DESCRIPTIONS["model"], max_length=200),
        language: str | None = Form(None, max_length=20),
        prompt: str | None = Form(None, max_length=4096, description="accepted, unused"),
        response_format: ResponseFormat = Form("json"),
        temperature: float = Form(0.0, ge=0.0, le=1.0, description="accepted; decoding is greedy"),
        timestamp_granularities: list[str] = Form([], alias="timestamp_granularities[]",
                                                  description=_DESCRIPTIONS["timestamp_granularities"]),
        stream: bool = Form(False),
        stream_include_usage: bool | None = Form(None, description=_DESCRIPTIONS["stream_include_usage"]),
        chunking_strategy: str | None = Form(None, max_length=500, description=_DESCRIPTIONS["chunking_strategy"]),
        include: list[str] = Form([], alias="include[]", **_REFUSED_LIST),
    ):
        self.file, self.model, self.language, self.response_format = file, model, language, response_format
        self.granularities, self.stream, self.include_usage = timestamp_granularities, stream, stream_include_usage
        self.chunking_strategy, self.include = chunking_strategy, include


@router.post("/transcriptions", summary="Transcribe audio into text in its language", responses=AUDIO_RESPONSES)
async def transcriptions(
    request: Request,
    form: AudioForm = Depends(),
    target_language: str | None = Form(None, **_REFUSED),
    to_language: str | None = Form(None, **_REFUSED),
):
    _no_target_on_transcriptions(target_language, to_language)
    return await _run(request, "transcribe", form, None)


@router.post("/translations", summary="Translate speech into the target language", responses=AUDIO_RESPONSES)
async def translations(
    request: Request,
    form: AudioForm = Depends(),
    target_language: str | None = Form(None, max_length=20,
                                       description="language code of the translation (default: the model's first)"),
    to_language: str | None = Form(None, max_length=20, description="vLLM's name for target_language"),
):
    if target_language and to_language and target_language != to_language:
        raise ApiError(400, f"target_language {target_language!r} and to_language {to_language!r} disagree: "
                            "send one of them", param="to_language", code="invalid_value")
    return await _run(request, "translate", form, target_language or to_language)
