"""The API's bodies as pydantic models, so /openapi.json documents what the server really sends.

The audio endpoints answer with one of several bodies chosen by ``response_format`` (json,
verbose_json, or plain text / srt / vtt, or server-sent events when ``stream=true``); every error
is OpenAI's envelope (``ErrorResponse``). ``AUDIO_RESPONSES`` is the OpenAPI ``responses`` table of
both audio endpoints; ``errors(...)`` builds one for other routes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class TokenUsage(BaseModel):
    type: Literal["tokens"] = "tokens"
    input_tokens: int
    output_tokens: int
    total_tokens: int


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionJson(BaseModel):
    """response_format=json (transcriptions carry token usage; translations do not)."""

    text: str
    usage: TokenUsage | None = None


class VerboseSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float = Field(description="1 - the voice-activity detector's mean speech probability over "
                                              "the segment; 0.0 when the clip was decoded whole")


class TranscriptionVerbose(BaseModel):
    """response_format=verbose_json."""

    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    usage: DurationUsage | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    engine: str
    models: list[str]


_DESCRIPTIONS = {
    400: "Bad request: a field, the file or the audio (format, sample rate, channels, size, length)",
    401: "Missing or wrong API key (when the server has one)",
    404: "No such model (or endpoint)",
    413: "Upload over max_upload_mb",
    429: "The server is full: retry after the Retry-After header's seconds",
    503: "Models loading, failed to load (model_load_failed) or the server is stopping",
}


def errors(*statuses: int) -> dict:
    """OpenAPI ``responses`` entries for error statuses, each with the envelope's schema."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(s, "Error")} for s in statuses}


AUDIO_RESPONSES = {
    200: {
        "description": "json / verbose_json bodies; text, srt and vtt as text; server-sent events with stream=true",
        "model": TranscriptionJson | TranscriptionVerbose,
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/x-subrip": {"schema": {"type": "string"}},
            "text/vtt": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string", "description": "data: {json event} lines: "
                                             "transcript.text.delta, transcript.text.done, or an error envelope"}},
        },
    },
    **errors(400, 401, 404, 413, 429, 503),
}
