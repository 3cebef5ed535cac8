"""One request's way through the server, without HTTP and without torch.

    job = Job(ticket=admission.enter())       # admitted before its upload is read (admission.py)
    await service.prepare(job, model="pruned", task="translate", target_language="fr", upload=file)
    service.submit(job, stream=False)          # one engine request per chunk
    transcript = await service.collect(job)    # joined text, segments with timestamps
    async for event in service.events(job): ... # or: SSE events (stream=True)

``prepare`` checks the fields against the chosen model (unknown model 404, unknown task or
language 400), reads the upload's header (400 for an unreadable file, a sample rate, channel
count or size outside the limits, or over-long audio; 429 when its audio does not fit in the
audio budget now), decodes it in one of ``decode_workers`` threads (400 for NaN/inf samples),
and plans the chunks the model decodes: one when the audio fits the model's window, else speech
pieces cut at pauses by a voice-activity detector (``chunking_strategy`` asks for that on short
audio too); audio without speech gives no chunk and an empty text. Metrics are recorded here,
once per request, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator, BinaryIO

import numpy as np

from speechllm.audio import SAMPLE_RATE, AudioLimits, load_audio, probe_audio
from speechllm.tasks import Task

from .admission import Admission, EngineState, Ticket
from .engines.base import Engine, EngineRequest, EngineResult, ModelInfo, RequestHandle
from .errors import CLIENT_CLOSED, ApiError, as_api_error
from .formats import Segment, Transcript, language_name
from .logs import new_request_id
from .longform import Chunk, TextJoiner, VadParams, plan_chunks, plan_speech_chunks
from .metrics import UNKNOWN, ServerMetrics
from .settings import Settings
from .shadow import Shadow
from .words import WordTimes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunking:
    """How audio is cut into pieces (OpenAI's ``chunking_strategy``: ``auto`` or ``server_vad``)."""

    threshold: float | None = None  # speech probability above which a 32 ms window is speech
    silence_ms: int | None = None  # pauses at least this long separate pieces
    padding_ms: int | None = None  # context kept before each piece (OpenAI's prefix_padding_ms)


@dataclass
class Job:
    """One HTTP request; filled in as its fields are checked (labels stay ``unknown`` until then)."""

    ticket: Ticket | None = None
    #: the HTTP request's id (X-Request-Id; a fresh one without HTTP): engine requests are named
    #: ``<id>-<chunk>``, logs and shadow records carry it
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    info: ModelInfo | None = None
    task: Task | None = None
    audio: np.ndarray | None = None
    chunks: list[Chunk] = field(default_factory=list)
    handles: list[RequestHandle] = field(default_factory=list)
    #: timestamp_granularities[]=word: align the transcript's words (collect)
    words: bool = False
    results: list[EngineResult] = field(default_factory=list)
    finished: bool = False
    #: the answer's text, once there is one (shadow mode compares it)
    text: str | None = None

    @property
    def labels(self) -> tuple[str, str]:
        return (self.info.name if self.info else UNKNOWN), (self.task.label if self.task else UNKNOWN)

    @property
    def duration(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


class SpeechService:
    def __init__(self, engine: Engine, metrics: ServerMetrics, settings: Settings):
        self.engine = engine
        self.metrics = metrics
        self.settings = settings
        #: why loading failed (set by the app's loader); admission then answers 503 model_load_failed
        self.load_error: str | None = None
        self.admission = Admission(settings.max_queue, settings.max_audio_in_flight_seconds, self._engine_state)
        self.limits = AudioLimits(min_sample_rate=settings.min_sample_rate, max_sample_rate=settings.max_sample_rate,
                                  max_channels=settings.max_channels, max_samples=settings.max_decode_samples)
        self._decoders = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="slimspeech-decode")
        self.words = WordTimes()
        #: shadow mode (server/shadow.py), when the settings have rules
        self.shadow: Shadow | None = None

    def _engine_state(self) -> EngineState:
        return EngineState(ready=self.engine.ready, stopping=self.engine.stopping, load_error=self.load_error)

    def close(self) -> None:
        self._decoders.shutdown(wait=True, cancel_futures=True)

    # ---- checks -------------------------------------------------------------------------
    def model(self, name: str | None) -> ModelInfo:
        self.admission.check()
        models = self.engine.models()
        if not name:
            return next(iter(models.values()))
        if name not in models:
            raise ApiError(404, f"model {name[:80]!r} is not served here: choose one of {', '.join(models)} "
                                "(GET /v1/models)", param="model", code="model_not_found")
        return models[name]

    async def _off_loop(self, fn, *args, **kw):
        ctx = contextvars.copy_context()  # the decode thread's log lines carry the request's id
        return await asyncio.get_running_loop().run_in_executor(self._decoders, lambda: ctx.run(fn, *args, **kw))

    async def prepare(self, job: Job, *, model: str | None, task: str, upload: bytes | BinaryIO,
                      target_language: str | None = None, language: str | None = None,
                      filename: str | None = None, chunking: Chunking | None = None, words: bool = False) -> Job:
        job.info = info = self.model(model)
        job.task = info.prompts.resolve(task, target_language or None)
        if words:
            why = self.words.unavailable(info)
            if why:
                raise ApiError(400, f"model {info.name!r} gives no word timestamps: {why}; use "
                                    "timestamp_granularities[]=segment", param="timestamp_granularities",
                               code="unsupported_value")
            job.words = True
        if language and language.lower() != info.source_language.lower():
            raise ApiError(400, f"language {language[:20]!r}: model {info.name!r} takes {info.source_language} "
                                f"speech only (leave language out or send {info.source_language!r})",
                           param="language", code="unsupported_language")
        if not isinstance(upload, (bytes, bytearray)) and not hasattr(upload, "read"):
            raise ApiError(400, "file must be uploaded audio (a multipart file part)", param="file",
                           code="invalid_audio")  # never a path: load_audio would open one
        name = f"uploaded file {filename[:100]!r}" if filename else "uploaded file"
        limit = self.settings.max_audio_seconds
        header = await self._off_loop(probe_audio, upload, limits=self.limits, max_seconds=limit, name=name)
        if job.ticket is not None:
            self.admission.reserve_audio(job.ticket, header.seconds)
        job.audio = await self._off_loop(load_audio, upload, max_seconds=limit, name=name, limits=self.limits)
        job.chunks = await self._off_loop(self.plan, job.audio, info.max_audio_seconds, chunking)
        return job

    def plan(self, audio: np.ndarray, window_s: float, chunking: Chunking | None) -> list[Chunk]:
        """The chunks to decode: the whole clip when it fits the window and no chunking was asked for,
        else speech pieces from the VAD (the energy split alone when the VAD cannot run)."""
        if chunking is None and len(audio) <= window_s * SAMPLE_RATE:
            return [Chunk(0, len(audio), 0, len(audio))]
        chunking = chunking or Chunking()
        try:
            from speechllm.vad import speech_probabilities

            probs = speech_probabilities(audio)
        except Exception:  # noqa: BLE001 - a broken VAD must not lose the request: cut by energy
            log.exception("voice activity detection failed: splitting by energy instead")
            return plan_chunks(audio, window_s, self.settings.chunk_overlap_seconds)
        options = {k: v for k, v in (("threshold", chunking.threshold),
                                     ("min_silence_s", chunking.silence_ms and chunking.silence_ms / 1000),
                                     ("pad_before_s", chunking.padding_ms and chunking.padding_ms / 1000)) if v is not None}
        return plan_speech_chunks(audio, probs, window_s, merge_seconds=self.settings.vad_merge_seconds,
                                  overlap_s=self.settings.chunk_overlap_seconds, params=VadParams(**options))

    # ---- running ------------------------------------------------------------------------
    def submit(self, job: Job, stream: bool = False) -> None:
        """One engine request per chunk; all or none are queued."""
        try:
            for i, chunk in enumerate(job.chunks):
                req = EngineRequest(job.info.name, job.task, job.audio[chunk.start:chunk.end], stream=stream,
                                    request_id=f"{job.request_id}-{i}")
                job.handles.append(self.engine.submit(req))
        except BaseException:
            self.cancel(job)
            raise

    def cancel(self, job: Job) -> None:
        for h in job.handles:
            h.cancel()

    async def collect(self, job: Job) -> Transcript:
        joiner = TextJoiner.for_chunks(job.chunks)
        for handle in job.handles:
            result = await handle.result()
            self._clip_done(job, result)
            joiner.finish_chunk(result.text)
        transcript = self._transcript(job, joiner)
        if job.words:
            transcript.words = await self._off_loop(self.words.align, job.info, job.audio, job.chunks,
                                                    [r.text for r in job.results], joiner.parts)
        return transcript

    async def events(self, job: Job) -> AsyncIterator[dict]:
        """SSE events: transcript.text.delta ..., transcript.text.done (or an error envelope)."""
        joiner = TextJoiner.for_chunks(job.chunks)
        status, error = 200, None
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
            status, error = err.status, err.message
            yield err.body()
        finally:
            self.cancel(job)
            self.finish(job, status, error)

    def _clip_done(self, job: Job, result: EngineResult) -> None:
        job.results.append(result)
        self.metrics.observe_clip(*job.labels, result)

    def _transcript(self, job: Job, joiner: TextJoiner) -> Transcript:
        segments = []
        for chunk, part, result in zip(job.chunks, joiner.parts, job.results):
            if part:
                start, end = chunk.seconds()
                segments.append(Segment(len(segments), start, end, part, result.token_ids, result.avg_logprob,
                                        chunk.no_speech_prob))
        out_lang = job.task.target_lang or job.info.source_language
        job.text = joiner.joined
        return Transcript(
            task=job.task.name, language=language_name(out_lang, job.info.prompts.languages),
            duration=job.duration, text=joiner.joined, segments=segments,
            input_tokens=sum(r.prompt_tokens for r in job.results),
            output_tokens=sum(len(r.token_ids) for r in job.results))

    # ---- accounting ---------------------------------------------------------------------
    def finish(self, job: Job, status: int, error: str | None = None) -> None:
        """Record one request (once), successful or not, and log one line about it (``error``: why it failed)."""
        if job.finished:
            return
        job.finished = True
        elapsed = time.perf_counter() - job.started
        log.info("%s %s: %d, %.2f s of audio in %.3f s%s", *job.labels, status, job.duration, elapsed,
                 f": {error}" if error else "")
        if status != 200:
            self.metrics.observe_request(*job.labels, status)
            return
        first = job.handles[0].first_token_at if job.handles else None
        self.metrics.observe_request(*job.labels, status, elapsed, job.duration,
                                     None if first is None else first - job.started)
        if self.shadow is not None:
            self.shadow.offer(job)
