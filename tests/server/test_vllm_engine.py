"""The vllm engine without HTTP: both families (slam, and a pruned qwen2_audio served through its
language model as a plain Qwen2 dir) give the torch reference's greedy text, stream it, expose
vLLM's scheduler figures, and cancelling a request aborts it inside vLLM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.engines import EngineRequest, make_engine
from server.engines.vllm_engine import CPU_KV_CACHE_FRACTION, ram_bytes, vllm_engine_args
from server.errors import ApiError
from server.settings import Settings
from speechllm.errors import SlimError
from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.tasks import Task

from .conftest import VLLM_TEST_SETTINGS, long_clip, require_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # an engine start takes about a minute here
TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]


@pytest.fixture(scope="module", autouse=True)
def _vllm():
    require_vllm()


def test_cpu_kv_cache_is_an_explicit_size_unless_memory_is_set(tmp_path):
    """vLLM's CPU rule (fraction of RAM minus the worker's RSS) fails to start on small-RAM machines:
    the default is an explicit KV-cache size; the user's fraction or size wins when given."""
    args = vllm_engine_args(Settings(), tmp_path, n_models=2, on_gpu=False)
    assert args["kv_cache_memory_bytes"] == int(CPU_KV_CACHE_FRACTION * ram_bytes()) > 256 << 20
    assert "gpu_memory_utilization" not in args
    args = vllm_engine_args(Settings(vllm_gpu_memory_utilization=0.3), tmp_path, n_models=2, on_gpu=False)
    assert args["gpu_memory_utilization"] == 0.3 and "kv_cache_memory_bytes" not in args
    args = vllm_engine_args(Settings(vllm_args={"kv_cache_memory_bytes": 1 << 28}), tmp_path, 1, on_gpu=False)
    assert args["kv_cache_memory_bytes"] == 1 << 28
    args = vllm_engine_args(Settings(), tmp_path, n_models=2, on_gpu=True)
    assert args["gpu_memory_utilization"] == 0.45 and "kv_cache_memory_bytes" not in args


def test_bad_vllm_args_fail_before_anything_loads(model_pair):
    with pytest.raises(SlimError, match="no_such_field is not a field of vLLM's AsyncEngineArgs"):
        make_engine(Settings(models=model_pair, engine="vllm", vllm_args={"no_such_field": 1}),
                    {k: Path(v) for k, v in model_pair.items()})


def test_both_families_equal_torch_stream_and_cancel(model_pair, tmp_path, speech_files, noise_wavs):
    import soundfile as sf

    from speechllm.builders import tiny_qwen2_audio
    from speechllm.surgery import remove_decoder_layers

    qa = tiny_qwen2_audio(hidden=64, heads=2, kv_heads=1, sliding_window=False, seed=4)
    remove_decoder_layers(qa, [1])  # vLLM loads the pruned language model (3 layers)
    dirs = {"slam": Path(model_pair["pruned"]), "qa": qa.save(tmp_path / "qa-pruned")}
    clips = [sf.read(f, dtype="float32")[0] for f in speech_files] + list(noise_wavs)
    clips = [c[:32000] for c in clips]  # within qwen2_audio's 2 s window
    jobs = [(name, TASKS[i % 3], c) for name in dirs for i, c in enumerate(clips)]
    long_audio = long_clip(speech_files, 10.0)

    async def run():
        engine = make_engine(Settings(models={k: str(v) for k, v in dirs.items()}, engine="vllm",
                                      max_batch_size=4, **VLLM_TEST_SETTINGS), dirs)
        await engine.start()
        try:
            handles = [engine.submit(EngineRequest(m, t, c, stream=i % 2 == 0)) for i, (m, t, c) in enumerate(jobs)]
            results = [await h.result() for h in handles]
            deltas = ["".join([d async for d in h.deltas()]) for h in handles]
            figures = engine.engine_stats()
            # cancel a long decode after its first delta: the handle fails with 499, vLLM drops it
            victim = engine.submit(EngineRequest("slam", Task(), long_audio, stream=True))
            async for _ in victim.deltas():
                victim.cancel()
            with pytest.raises(ApiError) as cancelled:
                await victim.result()
            for _ in range(100):
                await asyncio.sleep(0.05)
                if engine.engine_stats()["slam"]["running"] == 0:
                    break
            after_cancel = engine.engine_stats()["slam"]
            still = await engine.submit(EngineRequest("slam", Task(), clips[0])).result()
        finally:
            await engine.stop()
        return handles, results, deltas, figures, cancelled.value, after_cancel, still

    handles, results, deltas, figures, cancelled, after_cancel, still = asyncio.run(run())
    models = {name: load_model(path) for name, path in dirs.items()}
    expected = [transcribe(models[m], [c], [t])[0] for m, t, c in jobs]
    assert [r.text for r in results] == expected
    assert any(expected) and len(set(expected)) > 2
    for h, r, d in zip(handles, results, deltas):
        assert d == (r.text if h.request.stream else "")
        assert r.prompt_tokens > 0 and r.encoder_seconds > 0 and r.decode_seconds > 0
        assert (r.time_to_first_token is None) == (not r.token_ids)
    assert set(figures) == {"slam", "qa"} and all(0 <= f["kv_cache_usage"] <= 1 for f in figures.values())
    assert cancelled.status == 499 and after_cancel["running"] == 0
    assert still.text == expected[0]
