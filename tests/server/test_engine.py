"""The torch engine without HTTP, under both schedulers (continuous: the default; static: the
dynamic batcher): batching, equality with one-by-one decoding, per-clip failures, cancel, drain.
Joins and leaves mid-decode: tests/server/test_continuous.py."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server.engines import EngineRequest
from server.engines.torch_engine import TorchEngine
from server.errors import ApiError
from server.settings import Settings
from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.tasks import Task
from tests.conftest import engine_batches_like_one_by_one

TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]


def _clips(speech_files, noise_wavs):
    return [sf.read(f, dtype="float32")[0] for f in speech_files] + list(noise_wavs)


SCHEDULERS = ["continuous", "static"]


@pytest.fixture(params=SCHEDULERS)
def scheduler(request) -> str:
    return request.param


def _engine(model_pair, **kw) -> TorchEngine:
    return TorchEngine(Settings(models=model_pair, **kw), {k: Path(v) for k, v in model_pair.items()})


def _block(engine: TorchEngine):
    """Occupy the engine's worker thread until the returned event is set (nothing decodes meanwhile)."""
    gate = threading.Event()
    engine._executor.submit(gate.wait)
    return gate


def test_batched_equals_one_by_one(model_pair, speech_files, noise_wavs, scheduler):
    clips = _clips(speech_files, noise_wavs)
    jobs = [(name, TASKS[i % 3], clip) for name in model_pair for i, clip in enumerate(clips)]

    async def run():
        engine = _engine(model_pair, max_batch_size=16, max_wait_ms=200, scheduler=scheduler)
        await engine.start()
        gate = _block(engine)  # everything queues up, then leaves in full batches
        handles = [engine.submit(EngineRequest(m, t, c, stream=i % 2 == 0)) for i, (m, t, c) in enumerate(jobs)]
        await asyncio.sleep(0.05)
        gate.set()
        results = [await h.result() for h in handles]
        deltas = []
        for h in handles:
            deltas.append("".join([d async for d in h.deltas()]))
        await engine.stop()
        return results, deltas

    results, deltas = asyncio.run(run())
    assert max(r.batch_size for r in results) == len(speech_files) + len(noise_wavs)  # one batch per model
    expected = []
    for name, path in model_pair.items():
        model = load_model(path)
        mine = [(t, c) for m, t, c in jobs if m == name]
        expected += [transcribe(model, [c], [t])[0] for t, c in mine]  # one by one
    assert [r.text for r in results] == expected
    for i, (r, streamed) in enumerate(zip(results, deltas)):
        assert r.text and len(r.token_ids) > 0
        assert r.encoder_seconds > 0 and r.decode_seconds > 0 and r.time_to_first_token > 0
        assert r.avg_logprob is not None and r.avg_logprob <= 0
        assert streamed == (r.text if i % 2 == 0 else "")  # only streamed requests get deltas


def test_cancel_queued_and_running(model_pair, noise_wavs):
    """Static: a dispatched batch waits for the worker; continuous: tests/server/test_continuous.py."""
    async def run():
        engine = _engine(model_pair, max_batch_size=2, max_wait_ms=0, scheduler="static")
        await engine.start()
        gate = _block(engine)
        running = engine.submit(EngineRequest("base", Task(), noise_wavs[0]))
        await asyncio.sleep(0.05)  # dispatched: waiting for the worker thread
        queued = engine.submit(EngineRequest("base", Task(), noise_wavs[1]))
        assert engine.queue_depth() == 1
        queued.cancel()
        assert engine.queue_depth() == 0
        running.cancel()
        gate.set()
        errors = []
        for h in (running, queued):
            with pytest.raises(ApiError) as e:
                await h.result()
            errors.append(e.value.status)
        ok = await engine.submit(EngineRequest("base", Task(), noise_wavs[0])).result()  # still serving
        await engine.stop()
        return errors, ok

    errors, ok = asyncio.run(run())
    assert errors == [499, 499]
    assert ok.text


def test_a_failing_clip_fails_alone(model_pair, speech_files, noise_wavs, scheduler):
    """One clip that breaks the encoder (longer than its window) is batched with good ones: it fails
    alone, and every other request gets the text it gets alone."""
    clips = _clips(speech_files, noise_wavs)

    async def run():
        engine = _engine(model_pair, max_batch_size=16, max_wait_ms=200, scheduler=scheduler)
        await engine.start()
        window = engine.models()["base"].max_audio_seconds
        bad = np.zeros(int(3 * window * 16000), dtype=np.float32)
        gate = _block(engine)  # all of them leave in one batch
        handles = [engine.submit(EngineRequest("base", TASKS[i % 3], c, stream=True)) for i, c in enumerate(clips)]
        handles.insert(2, engine.submit(EngineRequest("base", Task(), bad)))
        await asyncio.sleep(0.05)
        gate.set()
        outcomes = []
        for h in handles:
            try:
                outcomes.append(await h.result())
            except ApiError as e:
                outcomes.append(e)
        ok = await engine.submit(EngineRequest("base", Task(), clips[0])).result()  # still serving
        await engine.stop()
        return outcomes, ok

    outcomes, ok = asyncio.run(run())
    bad = outcomes.pop(2)
    assert isinstance(bad, ApiError) and bad.status == 500 and "ValueError" in bad.message
    model = load_model(model_pair["base"])
    assert [r.text for r in outcomes] == [transcribe(model, [c], [TASKS[i % 3]])[0] for i, c in enumerate(clips)]
    assert max(r.batch_size for r in outcomes) == len(clips)  # the good ones still decoded together
    assert ok.text == outcomes[0].text


def test_stop_finishes_accepted_requests_then_refuses(model_pair, noise_wavs, scheduler):
    async def run():
        engine = _engine(model_pair, max_batch_size=2, max_wait_ms=0, scheduler=scheduler)
        await engine.start()
        gate = _block(engine)
        handles = [engine.submit(EngineRequest("base", TASKS[i % 3], noise_wavs[i])) for i in range(4)]
        stopping = asyncio.ensure_future(engine.stop())
        await asyncio.sleep(0.05)
        assert not engine.ready
        with pytest.raises(ApiError) as refused:
            engine.submit(EngineRequest("base", Task(), noise_wavs[0]))
        gate.set()
        await stopping
        return [await h.result() for h in handles], refused.value

    results, refused = asyncio.run(run())
    assert all(r.text for r in results)
    assert refused.status == 503 and refused.code == "shutting_down"


def test_long_window_clip_fits_model(model_pair, scheduler):
    """The runner gets chunks at most the model's window long: a full 10 s window still decodes."""
    async def run():
        engine = _engine(model_pair, scheduler=scheduler)
        await engine.start()
        window = engine.models()["base"].max_audio_seconds
        wav = (0.05 * np.random.default_rng(1).standard_normal(int(window * 16000))).astype(np.float32)
        r = await engine.submit(EngineRequest("base", Task(), wav)).result()
        await engine.stop()
        return r

    assert asyncio.run(run()).text


def test_qwen2_audio_family_batches_like_one_by_one(tmp_path, noise_wavs, scheduler):
    """The engine is family-agnostic: a Qwen2-Audio model dir batches exactly like slam."""
    from speechllm.builders import tiny_qwen2_audio

    path = tiny_qwen2_audio().save(tmp_path / "qwen2-audio")
    engine_batches_like_one_by_one(path, [w[:16000] for w in noise_wavs], TASKS, scheduler)  # within its 2 s window


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_cpu_bfloat16_hint(model_pair, caplog, dtype):
    """Loading with --dtype auto on a CPU that computes bfloat16 in hardware says that --dtype bfloat16 is
    faster; an explicit dtype, or a CPU without it, loads quietly in float32."""
    import logging

    import torch

    from server.engines.runner import TorchRunner
    from speechllm.devices import cpu_has_native_bf16

    with caplog.at_level(logging.INFO, logger="server.engines.runner"):
        runner = TorchRunner.load("base", Path(model_pair["base"]), device="cpu", dtype=dtype)
    assert runner.model.dtype == torch.float32
    hinted = any("--dtype bfloat16" in r.getMessage() for r in caplog.records)
    assert hinted == (dtype == "auto" and cpu_has_native_bf16())
