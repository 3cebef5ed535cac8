"""Response bodies of the OpenAI audio contract: json, text, verbose_json, srt, vtt, and SSE events.

    render(transcript, "srt")      # -> a starlette Response
    sse({"type": "transcript.text.delta", "delta": "the"})   # -> b'data: {...}\\n\\n'
    VllmChunks("pruned", include_usage=True).convert(event)  # the same events in vLLM's stream shape
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse, PlainTextResponse, Response

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
STREAM_FORMATS = ("json", "text")
#: ISO 639-1 -> the English name verbose_json reports (OpenAI writes e.g. "english")
LANGUAGE_NAMES = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian",
                  "pt": "portuguese", "nl": "dutch", "zh": "chinese", "ja": "japanese", "ru": "russian"}


def language_name(code: str, names: dict[str, str] | None = None) -> str:
    if names and code in names:
        return names[code].lower()
    return LANGUAGE_NAMES.get(code, code)


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float | None
    #: 1 - the voice-activity detector's mean speech probability over the chunk (0.0: not measured,
    #: the clip was decoded whole)
    no_speech_prob: float = 0.0

    def to_openai(self) -> dict:
        data = self.text.encode()
        return {
            "id": self.id, "seek": int(round(self.start * 100)), "start": round(self.start, 3),
            "end": round(self.end, 3), "text": self.text, "tokens": self.tokens, "temperature": 0.0,
            "avg_logprob": self.avg_logprob if self.avg_logprob is not None else 0.0,
            "compression_ratio": round(len(data) / len(zlib.compress(data)), 4) if data else 0.0,
            "no_speech_prob": round(self.no_speech_prob, 4),
        }


@dataclass
class Transcript:
    task: str  # transcribe | translate
    language: str  # name of the text's language (verbose_json)
    duration: float
    text: str
    segments: list[Segment] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    #: timestamp_granularities[]=word: each word with start/end (speechllm.align.Word); None: not asked
    words: list | None = None

    def usage_tokens(self) -> dict:
        return {"type": "tokens", "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens}


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(t: Transcript) -> list[tuple[float, float, str]]:
    """(start, end, text) per cue: one per word when words were asked for, else one per segment."""
    if t.words is not None:
        return [(w.start, w.end, w.word) for w in t.words]
    return [(s.start, s.end, s.text) for s in t.segments if s.text]


def to_srt(t: Transcript) -> str:
    cues = [f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n" for i, (a, b, text) in enumerate(_cues(t), 1)]
    return "\n".join(cues)


def to_vtt(t: Transcript) -> str:
    cues = [f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n" for a, b, text in _cues(t)]
    return "WEBVTT\n\n" + "\n".join(cues)


def verbose(t: Transcript) -> dict:
    out = {"task": t.task, "language": t.language, "duration": round(t.duration, 3), "text": t.text,
           "segments": [s.to_openai() for s in t.segments]}
    if t.words is not None:
        out["words"] = [w.to_openai() for w in t.words]
    if t.task == "transcribe":
        out["usage"] = {"type": "duration", "seconds": round(t.duration, 3)}
    return out


def render(t: Transcript, fmt: str) -> Response:
    if fmt == "json":
        body = {"text": t.text}
        if t.task == "transcribe":
            body["usage"] = t.usage_tokens()
        return JSONResponse(body)
    if fmt == "text":
        return PlainTextResponse(t.text)
    if fmt == "verbose_json":
        return JSONResponse(verbose(t))
    if fmt == "srt":
        return PlainTextResponse(to_srt(t), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt")
    raise ValueError(f"unknown response_format {fmt!r}")


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


class VllmChunks:
    """OpenAI transcription SSE events -> the chunks vLLM's server streams for audio (what vLLM's
    benchmark client reads text, time to first token and token counts from): each delta as
    ``choices[0].delta.content``, a final chunk with ``finish_reason``, with ``include_usage`` a
    usage chunk (prompt/completion tokens), then ``data: [DONE]`` (``DONE``). Error envelopes pass."""

    DONE = b"data: [DONE]\n\n"

    def __init__(self, model: str, include_usage: bool):
        self.model, self.include_usage = model, include_usage
        self.id = f"trsc-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _chunk(self, **body) -> dict:
        return {"id": self.id, "object": "transcription.chunk", "created": self.created, "model": self.model, **body}

    def convert(self, event: dict) -> list[dict]:
        kind = event.get("type")
        if kind == "transcript.text.delta":
            return [self._chunk(choices=[{"delta": {"content": event["delta"]}, "finish_reason": None,
                                          "stop_reason": None}])]
        if kind == "transcript.text.done":
            out = [self._chunk(choices=[{"delta": {}, "finish_reason": "stop", "stop_reason": None}])]
            if self.include_usage:
                u = event["usage"]
                out.append(self._chunk(choices=[], usage={"prompt_tokens": u["input_tokens"],
                                                          "completion_tokens": u["output_tokens"],
                                                          "total_tokens": u["total_tokens"]}))
            return out
        return [event]
