"""Shadow mode: a sampled fraction of one model's requests also runs on a reference model, off the
critical path, and the two outputs are compared: the live version of the pruning tolerance.

    slimspeech serve --model demo-pruned=... --model demo=... --shadow demo-pruned=demo:0.1
    SLIMSPEECH_SHADOW='demo-pruned=demo:0.1'          # MODEL=REFERENCE[:fraction], comma-separated

When a request to MODEL has been answered (status 200), it is sampled with probability ``fraction``
(default 1) and its audio and task are sent to REFERENCE in the background: the client's answer
never waits for it. Shadow work is dropped first under load: a sampled request is dropped (and
counted) while clients' requests wait in the engine's queue or when ``shadow_max_pending`` shadows
are already running. The texts are compared with ``speechllm.scoring``, as ``slimspeech evaluate``
compares a pruned model with its base: the WER of MODEL's text against REFERENCE's (a fraction, per
request) for transcription, sentence chrF (0-100) for translation.

Exported (labels model, reference, task): ``slimspeech_shadow_wer`` and ``slimspeech_shadow_chrf``
(histograms; the series exist from start-up, so a rule with fraction 0 lights up a dashboard
without shadowing anything) and ``slimspeech_shadow_requests_total`` (label outcome: compared,
dropped_load, failed, unsupported_task). ``GET /v1/shadow`` summarises each pair: count, mean, p90
(over the last 10,000), and the worst examples with their request ids and both texts. Audio is
never kept, unless ``shadow_audio_dir`` is set: then each worst example's audio is written there
as ``<request id>.wav`` (and removed when it leaves the list).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechllm.audio import SAMPLE_RATE
from speechllm.errors import SlimError, TaskError

from .engines.base import Engine, EngineRequest
from .longform import TextJoiner
from .metrics import ServerMetrics

log = logging.getLogger(__name__)

_RULE = re.compile(r"^\s*([^=:,\s]+)\s*=\s*([^=:,\s]+)\s*(?::\s*([0-9.eE+-]+))?\s*$")
#: values kept per pair for the p90 (count and mean are exact over all)
WINDOW = 10_000


@dataclass(frozen=True)
class ShadowRule:
    model: str
    reference: str
    fraction: float = 1.0


def parse_shadow(value) -> dict[str, ShadowRule]:
    """``"a=b:0.5,c=d"`` or a list of such strings -> {model: rule} (fraction default 1)."""
    if value is None or value == "":
        return {}
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    out: dict[str, ShadowRule] = {}
    for part in (p for p in parts if p.strip()):
        m = _RULE.match(part)
        if not m:
            raise ValueError(f"shadow rule {part.strip()!r}: write MODEL=REFERENCE or MODEL=REFERENCE:FRACTION")
        fraction = float(m.group(3)) if m.group(3) is not None else 1.0
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"shadow rule {part.strip()!r}: the fraction must be between 0 and 1")
        if m.group(1) == m.group(2):
            raise ValueError(f"shadow rule {part.strip()!r}: a model cannot shadow itself")
        if m.group(1) in out:
            raise ValueError(f"shadow rule {part.strip()!r}: {m.group(1)!r} has a rule already")
        out[m.group(1)] = ShadowRule(m.group(1), m.group(2), fraction)
    return out


@dataclass(order=True)
class _Example:
    badness: float  # higher is worse: WER, or 100 - chrF
    request_id: str = field(compare=False)
    record: dict = field(compare=False)


@dataclass
class _Pair:
    metric: str  # wer | chrf
    count: int = 0
    total: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    worst: list = field(default_factory=list)  # min-heap of _Example: the least bad of the kept is first


class Shadow:
    """The shadow rules of one server: sampling, the background runs, the comparison, the summary."""

    def __init__(self, rules: dict[str, ShadowRule], engine: Engine, metrics: ServerMetrics, *,
                 max_pending: int = 4, keep_worst: int = 10, audio_dir: Path | None = None,
                 rng: random.Random | None = None):
        self.rules, self.engine, self.metrics = rules, engine, metrics
        self.max_pending, self.keep_worst = max_pending, keep_worst
        self.audio_dir = Path(audio_dir) if audio_dir else None
        self.rng = rng or random.Random()
        self.pending: set[asyncio.Task] = set()
        self.pairs: dict[tuple[str, str, str], _Pair] = {}

    @staticmethod
    def check(rules: dict[str, ShadowRule], served: list[str]) -> None:
        """Both names of every rule must be served (at start-up: one line naming the fix)."""
        for rule in rules.values():
            for name in (rule.model, rule.reference):
                if name not in served:
                    raise SlimError(f"--shadow {rule.model}={rule.reference}: {name!r} is not served "
                                    f"(served: {', '.join(served)}); add --model {name}=DIR", param="--shadow")

    def start(self) -> None:
        """Once the models are loaded: the series of every pair exist from now on (zero until observed)."""
        models = self.engine.models()
        for rule in self.rules.values():
            ref = models[rule.reference].prompts
            for label in models[rule.model].prompts.supported():
                name, _, lang = label.partition(":")
                try:
                    task = ref.resolve(name, lang or None)
                except TaskError:
                    continue
                self.metrics.shadow_series(rule.model, rule.reference, task.label)

    # ---- the request path ---------------------------------------------------------------------
    def offer(self, job) -> None:
        """Called once a request to ``job.info.name`` has been answered with 200."""
        rule = self.rules.get(job.info.name) if job.info else None
        if rule is None or job.audio is None or job.text is None or self.rng.random() >= rule.fraction:
            return
        if len(self.pending) >= self.max_pending or self.engine.queue_depth() > 0:
            self.metrics.shadow_outcome(rule.model, rule.reference, "dropped_load")
            return
        task = asyncio.get_running_loop().create_task(self._run(rule, job), name=f"shadow-{job.request_id}")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _run(self, rule: ShadowRule, job) -> None:
        try:
            ref_info = self.engine.models()[rule.reference]
            task = ref_info.prompts.resolve(job.task.name, job.task.target_lang)
        except (KeyError, TaskError):
            self.metrics.shadow_outcome(rule.model, rule.reference, "unsupported_task")
            return
        handles = []
        try:
            for i, chunk in enumerate(job.chunks):
                req = EngineRequest(rule.reference, task, job.audio[chunk.start:chunk.end],
                                    request_id=f"{job.request_id}-shadow-{i}")
                handles.append(self.engine.submit(req))
            joiner = TextJoiner.for_chunks(job.chunks)
            for handle in handles:
                joiner.finish_chunk((await handle.result()).text)
        except asyncio.CancelledError:
            for h in handles:
                h.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised
            for h in handles:
                h.cancel()
            log.warning("shadow of request %s on %r failed: %s", job.request_id, rule.reference, exc)
            self.metrics.shadow_outcome(rule.model, rule.reference, "failed")
            return
        await self._compare(rule, job, task.label, joiner.joined)

    async def _compare(self, rule: ShadowRule, job, task_label: str, reference_text: str) -> None:
        from speechllm import scoring

        if task_label.startswith("translate"):
            metric, score = "chrf", scoring.sentence_chrf(reference_text, job.text)
            badness = 100.0 - score
        else:
            metric, score = "wer", scoring.agreement_wer(reference_text, job.text)
            badness = score
        self.metrics.shadow_observe(rule.model, rule.reference, task_label, metric, score)
        pair = self.pairs.setdefault((rule.model, rule.reference, task_label), _Pair(metric))
        pair.count += 1
        pair.total += score
        pair.recent.append(score)
        example = _Example(badness, job.request_id, {
            "request_id": job.request_id, metric: round(score, 4), "text": job.text,
            "reference_text": reference_text, "audio_seconds": round(job.duration, 3)})
        if len(pair.worst) < self.keep_worst:
            heapq.heappush(pair.worst, example)
            await self._keep_audio(example, job.audio)
        elif badness > pair.worst[0].badness:
            dropped = heapq.heapreplace(pair.worst, example)
            await self._keep_audio(example, job.audio, dropped)

    async def _keep_audio(self, example: _Example, audio: np.ndarray, dropped: _Example | None = None) -> None:
        if self.audio_dir is None:
            return

        def write() -> None:
            import soundfile as sf

            self.audio_dir.mkdir(parents=True, exist_ok=True)
            path = self.audio_dir / f"{example.request_id}.wav"
            sf.write(str(path), audio, SAMPLE_RATE)
            example.record["audio"] = path.name
            if dropped is not None:
                (self.audio_dir / f"{dropped.request_id}.wav").unlink(missing_ok=True)

        await asyncio.to_thread(write)

    async def drain(self) -> None:
        """Shutdown: wait for the running shadows (they are short; the engine is still up)."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    # ---- GET /v1/shadow -------------------------------------------------------------------------
    def summary(self) -> dict:
        pairs = []
        for (model, reference, task), p in sorted(self.pairs.items()):
            pairs.append({
                "model": model, "reference": reference, "task": task, "metric": p.metric, "count": p.count,
                "mean": round(p.total / p.count, 4) if p.count else None,
                "p90": round(float(np.percentile(list(p.recent), 90)), 4) if p.recent else None,
                "worst": [e.record for e in sorted(p.worst, reverse=True)],
            })
        return {"object": "shadow.summary",
                "rules": [{"model": r.model, "reference": r.reference, "fraction": r.fraction}
                          for r in self.rules.values()],
                "pending": len(self.pending), "pairs": pairs}
