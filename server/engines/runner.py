"""The torch model runner: one loaded model, called from the engine's worker thread.

    runner = TorchRunner.load("pruned", Path("runs/export"), device="cpu", dtype="float32")
    results = runner.run_batch(handles)     # per handle: EngineResult, the Exception that failed it, or None (cancelled)
    prompts = runner.encode_prompts(handles)  # per handle: its (T_i, D) prompt embedding, or the Exception

``run_batch`` is the static batcher's unit of work (``--scheduler static``); the continuous
scheduler (the default) uses ``encode_prompts`` and decodes in ``decode.DecodeLoop`` instead.

In ``run_batch``, a batch (requests of one model, tasks may differ) runs the encoder + projector once
(``encode_prompts``: one (T_i, D) prompt per clip; a clip that fails there fails alone), left-pads
the prompts into (B, T, D) decoder inputs, then runs one batched greedy ``generate`` with KV cache. A streamer sees each step's (B,) tokens: it records
time to first token and the chosen tokens' log-probabilities, turns streamed requests' tokens
into text deltas for the event loop, and a stopping criterion drops cancelled requests.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from speechllm.devices import cpu_has_native_bf16, resolve_device, resolve_dtype
from speechllm.generate import decode, greedy_decode, greedy_generate, transcribe
from speechllm.modeldir import load_model
from speechllm.tasks import parse_task

from .base import EngineResult, ModelInfo, RequestHandle, TextDeltas

log = logging.getLogger(__name__)

class _CancelledRows(StoppingCriteria):
    """Marks rows whose client went away as finished, so generate stops once every row is."""

    def __init__(self, handles: list[RequestHandle]):
        self.handles = handles

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.tensor([h.cancelled for h in self.handles], dtype=torch.bool, device=input_ids.device)


class _BatchStreamer(BaseStreamer):
    """Per-step (B,) tokens -> per-row ids, log-probabilities, first-token times and text deltas."""

    def __init__(self, runner: "TorchRunner", handles: list[RequestHandle]):
        self.runner = runner
        self.handles = handles
        n = len(handles)
        self.texts = [TextDeltas(lambda ids: decode(runner.model, ids)) for _ in range(n)]
        self.logprob = [0.0] * n
        self.scored = [0] * n
        self.finished = [False] * n
        #: (B, V) logits of the step being decided, captured by a forward hook on the LM
        self.step_logits: torch.Tensor | None = None

    def capture(self, _module, _args, output) -> None:
        logits = getattr(output, "logits", None)
        if logits is not None:
            self.step_logits = logits[:, -1]

    def put(self, value: torch.Tensor) -> None:
        if value.dim() != 1:  # generate() first puts the (B, 0) prompt ids: no tokens yet
            return
        now = time.perf_counter()
        logprobs = None
        if self.step_logits is not None and self.step_logits.shape[0] == value.shape[0]:
            logits = self.step_logits.float()
            chosen = logits.gather(1, value.view(-1, 1).to(logits.device)).squeeze(1)
            logprobs = (chosen - logits.logsumexp(-1)).tolist()
        eos = self.runner.model.eos_token_id
        for i, tok in enumerate(value.tolist()):
            if self.finished[i]:
                continue
            handle = self.handles[i]
            if tok == eos or handle.cancelled:
                self.finished[i] = True
                continue
            if handle.first_token_at is None:
                handle.first_token_at = now
            if logprobs is not None:
                self.logprob[i] += logprobs[i]
                self.scored[i] += 1
            if handle.request.stream and (delta := self.texts[i].push([tok])):
                handle.loop.call_soon_threadsafe(handle.emit, delta)

    def end(self) -> None:
        pass


class TorchRunner:
    def __init__(self, name: str, model, path: Path):
        self.name = name
        self.model = model
        spec = model.spec
        self.info = ModelInfo(
            name=name, path=Path(path), family=model.family, decoder_layers=model.num_decoder_layers,
            parameters=model.num_parameters(), weight_bytes=model.weight_bytes(),
            max_audio_seconds=model.max_audio_seconds, max_new_tokens=model.max_new_tokens,
            prompts=model.prompts, provenance=dict(model.provenance or {}), device=str(model.device),
            dtype=str(model.dtype).replace("torch.", ""))
        self._cuda = model.device.type == "cuda"
        log.info("loaded model %r from %s: %s, %d decoder layers, %.1f M parameters on %s (%s)", name, path,
                 spec.get("family"), self.info.decoder_layers, self.info.parameters / 1e6, self.info.device,
                 self.info.dtype)

    @classmethod
    def load(cls, name: str, path: Path, device: str = "cpu", dtype: str = "float32") -> "TorchRunner":
        device = resolve_device(device)
        model = load_model(path, device=device, dtype=resolve_dtype(dtype, device))
        if dtype == "auto" and device == "cpu" and cpu_has_native_bf16():
            log.info("model %r: this CPU computes bfloat16 in hardware: --dtype bfloat16 runs faster than the "
                     "float32 that auto loads (the demo model: one request in 0.71x the time; docs/performance.md); "
                     "check the model's scores first (slimspeech evaluate --dtype bfloat16)", name)
        return cls(name, model, path)

    def sync(self) -> None:
        """Wait for the device (CUDA runs asynchronously): timings after it are true."""
        if self._cuda:
            torch.cuda.synchronize(self.model.device)

    @torch.inference_mode()
    def warmup(self, row_batching: bool = False) -> None:
        """One batch of every task on a second of quiet noise: first-call allocations happen here
        (through the row batcher too, when the engine decodes with it)."""
        rng = np.random.default_rng(0)
        wav = (0.01 * rng.standard_normal(16000)).astype(np.float32)
        tasks = [parse_task(t) for t in self.model.prompts.supported()]
        tasks = [self.model.prompts.resolve(t.name, t.target_lang) for t in tasks]
        transcribe(self.model, [wav] * len(tasks), tasks)
        if row_batching:
            prompts, _ = self.model.embed_prompts(tasks, [wav] * len(tasks))
            greedy_decode(self.model, prompts, max_new_tokens=4)

    @torch.inference_mode()
    def run_batch(self, handles: list[RequestHandle]) -> list[EngineResult | Exception | None]:
        """Encode and decode one batch; -> per handle its result, the exception that failed it alone,
        or None (cancelled)."""
        live = [h for h in handles if not h.cancelled]
        out: dict[int, EngineResult | Exception] = {}
        t0 = time.perf_counter()
        prompts = self.encode_prompts(live, to_cpu=False)
        self.sync()
        t1 = time.perf_counter()
        ok = []
        for h, p in zip(live, prompts):
            if isinstance(p, Exception):
                out[id(h)] = p
            else:
                ok.append((h, p))
        if ok:
            model = self.model
            live = [h for h, _ in ok]
            inputs = model.assemble([p for _, p in ok])
            streamer = _BatchStreamer(self, live)
            hook = model.lm.register_forward_hook(streamer.capture)
            try:
                ids = greedy_generate(model, inputs, streamer=streamer,
                                      stopping_criteria=StoppingCriteriaList([_CancelledRows(live)]))
            finally:
                hook.remove()
            self.sync()
            t2 = time.perf_counter()
            for i, h in enumerate(live):
                if h.cancelled:
                    continue
                text = decode(model, ids[i])
                if h.request.stream and (tail := streamer.texts[i].tail(text)):
                    h.loop.call_soon_threadsafe(h.emit, tail)  # held-back tail
                avg = streamer.logprob[i] / streamer.scored[i] if streamer.scored[i] else None
                out[id(h)] = EngineResult(
                    text=text, token_ids=list(ids[i]), avg_logprob=avg, prompt_tokens=int(inputs.prompt_lengths[i]),
                    queue_seconds=(h.dispatched_at or t0) - h.submitted_at, encoder_seconds=t1 - t0,
                    decode_seconds=t2 - t1,
                    time_to_first_token=None if h.first_token_at is None else h.first_token_at - h.submitted_at,
                    batch_size=len(live))
        return [out.get(id(h)) for h in handles]

    @torch.inference_mode()
    def encode_prompts(self, handles: list[RequestHandle], to_cpu: bool = True) -> list[torch.Tensor | Exception]:
        """Encoder + projector of one batch; -> per handle its (T_i, D) prompt embedding (the task prompt
        with the audio spliced in), or the exception its clip raised when encoded alone.

        The batch runs at once; only when it fails does each clip run alone, so one clip that breaks
        feature extraction or the encoder fails its own request and no other."""
        if not handles:
            return []
        try:
            prompts = self._embed(handles)
        except Exception as exc:  # noqa: BLE001 - find the clip(s) at fault, one by one
            if len(handles) == 1:
                log.warning("model %r: clip %s failed to encode: %r", self.name, handles[0].request.request_id, exc)
                return [exc]
            return [p for h in handles for p in self.encode_prompts([h], to_cpu)]
        return [p.cpu() for p in prompts] if to_cpu else prompts

    def _embed(self, handles: list[RequestHandle]) -> list[torch.Tensor]:
        # the tasks were resolved against this model once, by the service (EngineRequest.task)
        prompts, _ = self.model.embed_prompts([h.request.task for h in handles], [h.request.audio for h in handles])
        return prompts

    def release_decoder_layers(self) -> None:
        """Free the decoder layers once another engine runs them; the embeddings stay (prompts need them)."""
        self.model.decoder_stack().layers = torch.nn.ModuleList()
        if self._cuda:
            torch.cuda.empty_cache()

    def memory_stats(self) -> dict[str, float]:
        if not self._cuda:
            return {}
        dev = self.model.device
        return {"cuda_allocated_bytes": float(torch.cuda.memory_allocated(dev)),
                "cuda_peak_bytes": float(torch.cuda.max_memory_allocated(dev))}
