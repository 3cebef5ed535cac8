"""One request's way through the server, without HTTP and without torch.

    job = await service.prepare(model="pruned", task="translate", target_language="fr", data=upload)
    service.submit(job, stream=False)          # one engine request per chunk (ApiError 429 when full)
    transcript = await service.collect(job)    # joined text, segments with timestamps
    async for event in service.events(job): ... # or: SSE events (stream=True)

``prepare`` checks the fields against the chosen model (unknown model 404, unknown task or
language 400), decodes the upload in a thread (400 for undecodable, empty, NaN or over-long
audio) and splits audio longer than the model's window (longform.py). Metrics are recorded
here, once per request, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

import numpy as np

from speechllm.audio import SAMPLE_RATE, load_audio
from speechllm.errors import AudioError
from speechllm.tasks import Task

from .engines.base import Engine, EngineRequest, EngineResult, ModelInfo, RequestHandle
from .errors import CLIENT_CLOSED, ApiError, as_api_error
from .formats import Segment, Transcript, language_name
from .longform import Chunk, TextJoiner, plan_chunks
from .metrics import UNKNOWN, ServerMetrics
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One HTTP request; filled in as its fields are checked (labels stay ``unknown`` until then)."""

    started: float = field(default_factory=time.perf_counter)
    info: ModelInfo | None = None
    task: Task | None = None
    audio: np.ndarray | None = None
    chunks: list[Chunk] = field(default_factory=list)
    handles: list[RequestHandle] = field(default_factory=list)
    results: list[EngineResult] = field(default_factory=list)
    finished: bool = False

    @property
    def labels(self) -> tuple[str, str]:
        return (self.info.name if self.info else UNKNOWN), (self.task.label if self.task else UNKNOWN)

    @property
    def duration(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


def decode_upload(data: bytes, max_seconds: float, name: str = "file") -> np.ndarray:
    """Upload bytes -> (S,) float32 16 kHz; over-long audio is refused from its header before decoding."""
    import soundfile as sf

    if not isinstance(data, (bytes, bytearray)):  # never a path: load_audio would open one
        raise AudioError("file must be uploaded audio bytes")
    try:
        info = sf.info(io.BytesIO(data))
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
    except Exception:
        seconds = 0.0  # undecodable: load_audio says why
    if seconds > max_seconds:
        raise AudioError(f"{name} is {seconds:.1f} s long, over the server's {max_seconds:.0f} s limit: "
                         "split it into shorter files")
    return load_audio(bytes(data), max_seconds=max_seconds, name=name)


class SpeechService:
    def __init__(self, engine: Engine, metrics: ServerMetrics, settings: Settings):
        self.engine = engine
        self.metrics = metrics
        self.settings = settings

    # ---- checks -------------------------------------------------------------------------
    def model(self, name: str | None) -> ModelInfo:
        if not self.engine.ready:
            raise ApiError(503, "models are still loading (or the server is stopping): retry when /ready answers 200",
                           code="not_ready")
        models = self.engine.models()
        if not name:
            return next(iter(models.values()))
        if name not in models:
            raise ApiError(404, f"model {name[:80]!r} is not served here: choose one of {', '.join(models)} "
                                "(GET /v1/models)", param="model", code="model_not_found")
        return models[name]

    async def prepare(self, job: Job, *, model: str | None, task: str, data: bytes,
                      target_language: str | None = None, language: str | None = None,
                      filename: str | None = None) -> Job:
        job.info = info = self.model(model)
        job.task = info.prompts.resolve(task, target_language or None)
        if language and language.lower() != info.source_language.lower():
            raise ApiError(400, f"language {language[:20]!r}: model {info.name!r} takes {info.source_language} "
                                f"speech only (leave language out or send {info.source_language!r})",
                           param="language", code="unsupported_language")
        name = f"uploaded file {filename[:100]!r}" if filename else "uploaded file"
        job.audio = await asyncio.to_thread(decode_upload, data, self.settings.max_audio_seconds, name)
        job.chunks = plan_chunks(job.audio, info.max_audio_seconds, self.settings.chunk_overlap_seconds)
        return job

    # ---- running ------------------------------------------------------------------------
    def submit(self, job: Job, stream: bool = False) -> None:
        """One engine request per chunk; all or none are queued."""
        request_id = uuid.uuid4().hex[:16]
        try:
            for i, chunk in enumerate(job.chunks):
                req = EngineRequest(job.info.name, job.task, job.audio[chunk.start:chunk.end], stream=stream,
                                    request_id=f"{request_id}-{i}")
                job.handles.append(self.engine.submit(req))
        except BaseException:
            self.cancel(job)
            raise

    def cancel(self, job: Job) -> None:
        for h in job.handles:
            h.cancel()

    async def collect(self, job: Job) -> Transcript:
        joiner = TextJoiner()
        for handle in job.handles:
            result = await handle.result()
            self._clip_done(job, result)
            joiner.finish_chunk(result.text)
        return self._transcript(job, joiner)

    async def events(self, job: Job) -> AsyncIterator[dict]:
        """SSE events: transcript.text.delta ..., transcript.text.done (or an error envelope)."""
        joiner = TextJoiner()
        status = 200
        try:
            for handle in job.handles:
                async for delta in handle.deltas():
                    out = joiner.feed(delta)
                    if out:
                        yield {"type": "transcript.text.delta", "delta": out}
                result = await handle.result()
                self._clip_done(job, result)
                out = joiner.finish_chunk(result.text)
                if out:
                    yield {"type": "transcript.text.delta", "delta": out}
            transcript = self._transcript(job, joiner)
            yield {"type": "transcript.text.done", "text": transcript.text, "usage": transcript.usage_tokens()}
        except (asyncio.CancelledError, GeneratorExit):
            status = CLIENT_CLOSED
            raise
        except Exception as exc:
            err = as_api_error(exc)
            status = err.status
            yield err.body()
        finally:
            self.cancel(job)
            self.finish(job, status)

    def _clip_done(self, job: Job, result: EngineResult) -> None:
        job.results.append(result)
        self.metrics.observe_clip(*job.labels, result)

    def _transcript(self, job: Job, joiner: TextJoiner) -> Transcript:
        segments = []
        for chunk, part, result in zip(job.chunks, joiner.parts, job.results):
            if part:
                start, end = chunk.seconds()
                segments.append(Segment(len(segments), start, end, part, result.token_ids, result.avg_logprob))
        out_lang = job.task.target_lang or job.info.source_language
        return Transcript(
            task=job.task.name, language=language_name(out_lang, job.info.prompts.languages),
            duration=job.duration, text=joiner.joined, segments=segments,
            input_tokens=sum(r.prompt_tokens for r in job.results),
            output_tokens=sum(len(r.token_ids) for r in job.results))

    # ---- accounting ---------------------------------------------------------------------
    def finish(self, job: Job, status: int) -> None:
        """Record one request (once), successful or not."""
        if job.finished:
            return
        job.finished = True
        if status != 200:
            self.metrics.observe_request(*job.labels, status)
            return
        first = job.handles[0].first_token_at if job.handles else None
        self.metrics.observe_request(*job.labels, status, time.perf_counter() - job.started, job.duration,
                                     None if first is None else first - job.started)
