"""Iteration-level batching: requests join a running decode at the next step and leave when they
finish, and every request still gets the greedy text it gets alone.

    .venv/bin/python -m pytest -q tests/server/test_continuous.py

The row batcher (speechllm.generate.GreedyBatch) is checked step by step against
``greedy_generate`` one by one; the engine (the real TorchEngine, the demo model, whose answers end
at EOS after 3 to 15 tokens) with requests arriving while others decode, cancels mid-decode, a
clip that fails while others decode, an idle server that does not wait, and a burst that does.
Where a request must still be decoding when the next one arrives, a forward pre-hook makes every
decoder forward take a little longer (the model itself is unchanged).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server.engines import EngineRequest
from server.engines.torch_engine import TorchEngine
from server.errors import ApiError
from server.settings import Settings
from speechllm.generate import GreedyBatch, greedy_decode, greedy_generate, record_tokens, transcribe
from speechllm.modeldir import default_model_dir, load_model
from speechllm.tasks import Task

TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]


@pytest.fixture(scope="module")
def demo_dir() -> Path:
    return default_model_dir()


@pytest.fixture(scope="module")
def demo(demo_dir):
    return load_model(demo_dir)


@pytest.fixture(scope="module")
def clips(speech_files, noise_wavs) -> list[np.ndarray]:
    """Speech (3 to 8 tokens of text), a two-sentence clip (the longest answer) and noise."""
    speech = [sf.read(f, dtype="float32")[0] for f in speech_files]
    pause = np.zeros(4000, dtype=np.float32)
    return speech + [np.concatenate([speech[0], pause, speech[1]])] + list(noise_wavs[:2])


def _alone(model, clip, task) -> str:
    return transcribe(model, [clip], [task])[0]


def _engine(path: Path, **kw) -> TorchEngine:
    return TorchEngine(Settings(models={"demo": str(path)}, **kw), {"demo": path})


def _slow_down(engine: TorchEngine, seconds: float):
    """Every decoder forward (prefill or step) takes ``seconds`` longer: requests overlap for sure."""
    return engine._runners["demo"].model.lm.register_forward_pre_hook(lambda *_: time.sleep(seconds))


async def _first_delta(handle) -> str:
    async for delta in handle.deltas():
        return delta
    raise AssertionError("the request ended before its first token")


async def _outcome(handle):
    try:
        return await handle.result()
    except ApiError as e:
        return e


# ---- the row batcher ---------------------------------------------------------------------------


def _decode_with_joins(model, prompts, join_at: list[int]) -> tuple[list[list[int]], list[int]]:
    """Prompt i joins the batch at step join_at[i]; rows leave at EOS or their budget.
    -> token ids per prompt, and the cache width after each step."""
    eos, budget = model.eos_token_id, model.max_new_tokens
    batch = GreedyBatch(model)
    out: list[list[int]] = [[] for _ in prompts]
    rows: list[int] = []
    widths = []
    step = 0
    while step <= max(join_at) or rows:
        tokens = batch.step()[0] if rows else []
        new = [i for i, s in enumerate(join_at) if s == step]
        if new:
            tokens += batch.add([prompts[i] for i in new])[0]
        rows = record_tokens(batch, rows + new, tokens, out, eos, budget)
        if rows:
            widths.append(batch.mask.shape[1])
            assert batch.size == len(rows)
        step += 1
    return out, widths


@pytest.mark.parametrize("join_at", [[0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0],
                                     [0, 3, 3, 7, 1, 2], [0, 9, 0, 12, 2, 2]])
def test_rows_joining_and_leaving_decode_as_alone(demo, clips, join_at):
    tasks = demo.resolve_tasks([TASKS[i % 3] for i in range(len(clips))])
    prompts, _ = demo.embed_prompts(tasks, clips)
    alone = [greedy_generate(demo, demo.assemble([p]))[0] for p in prompts]
    assert len({len(a) for a in alone}) > 2  # answers of different lengths: rows leave at different steps
    got, widths = _decode_with_joins(demo, prompts, join_at)
    assert got == alone
    assert max(widths) > min(widths)  # the cache narrowed once the longest rows had left


def test_greedy_decode_equals_generate_on_a_batch(demo, clips):
    tasks = demo.resolve_tasks([TASKS[i % 3] for i in range(len(clips))])
    prompts, _ = demo.embed_prompts(tasks, clips)
    assert greedy_decode(demo, prompts) == greedy_generate(demo, demo.assemble(prompts))


def test_a_row_that_leaves_frees_its_cache_columns(demo, clips):
    """The longest prompt leaves: the cache keeps only as many columns as the longest remaining row."""
    prompts, _ = demo.embed_prompts(demo.resolve_tasks([Task()] * 2), [clips[3], clips[2]])
    batch = GreedyBatch(demo)
    batch.add(prompts)
    batch.step()
    assert batch.mask.shape[1] == prompts[0].shape[0] + 1
    batch.keep([1])
    assert batch.mask.shape[1] == prompts[1].shape[0] + 1 == int(batch.lengths[0])
    assert all(layer.length == batch.mask.shape[1] for layer in batch.cache.layers)


# ---- the engine --------------------------------------------------------------------------------


def test_requests_join_a_running_decode_and_leave_when_done(demo_dir, demo, clips):
    """A long request decodes; others arrive after its first token and join it at the next step;
    a short one that joined late finishes before the long one; every text is the text alone."""
    long_clip, short_clip = clips[3], clips[2]

    async def run():
        engine = _engine(demo_dir, max_batch_size=8, max_wait_ms=0)
        await engine.start()
        hook = _slow_down(engine, 0.02)
        first = engine.submit(EngineRequest("demo", Task(), long_clip, stream=True))
        await _first_delta(first)
        late = [engine.submit(EngineRequest("demo", TASKS[i % 3], c, stream=i % 2 == 0))
                for i, c in enumerate([short_clip, clips[0], clips[4]])]
        order = []

        async def track(name, h):
            r = await h.result()
            order.append(name)
            return r

        results = await asyncio.gather(track("first", first), *(track(f"late{i}", h) for i, h in enumerate(late)))
        deltas = ["".join([d async for d in h.deltas()]) for h in late]
        hook.remove()
        await engine.stop()
        return results, deltas, order

    results, deltas, order = asyncio.run(run())
    first, *late = results
    assert first.text == _alone(demo, long_clip, Task())
    assert [r.text for r in late] == [_alone(demo, c, TASKS[i % 3]) for i, c in enumerate([short_clip, clips[0], clips[4]])]
    assert first.batch_size >= 2  # the late ones decoded in steps with it
    assert order.index("late0") < order.index("first")  # the short one left without waiting for the long one
    assert deltas[0] == late[0].text and deltas[2] == late[2].text and deltas[1] == ""  # streamed: every piece
    for r in results:
        assert r.avg_logprob is not None and r.avg_logprob <= 0 and r.time_to_first_token > 0
        assert r.encoder_seconds > 0 and r.decode_seconds > 0 and r.prompt_tokens > 0


def test_cancel_mid_decode_leaves_the_other_rows_alone(demo_dir, demo, clips):
    async def run():
        engine = _engine(demo_dir, max_batch_size=8, max_wait_ms=0)
        await engine.start()
        hook = _slow_down(engine, 0.02)
        loop = engine._scheduler._steppers["demo"]
        a = engine.submit(EngineRequest("demo", Task(), clips[3], stream=True))
        b = engine.submit(EngineRequest("demo", Task("translate", "fr"), clips[3], stream=True))
        await _first_delta(a)
        await _first_delta(b)
        rows_before = loop.rows
        a.cancel()
        for _ in range(200):  # its row leaves at the next step
            if loop.rows < rows_before:
                break
            await asyncio.sleep(0.01)
        rows_after = loop.rows
        outcomes = [await _outcome(a), await _outcome(b)]
        hook.remove()
        again = await engine.submit(EngineRequest("demo", Task(), clips[0])).result()  # still serving
        await engine.stop()
        return rows_before, rows_after, outcomes, again

    rows_before, rows_after, (a, b), again = asyncio.run(run())
    assert rows_before == 2 and rows_after == 1
    assert isinstance(a, ApiError) and a.status == 499
    assert b.text == _alone(demo, clips[3], Task("translate", "fr"))
    assert again.text == _alone(demo, clips[0], Task())


def test_a_clip_that_fails_while_others_decode_fails_alone(demo_dir, demo, clips):
    async def run():
        engine = _engine(demo_dir, max_batch_size=8, max_wait_ms=0)
        await engine.start()
        window = engine.models()["demo"].max_audio_seconds
        hook = _slow_down(engine, 0.02)
        running = engine.submit(EngineRequest("demo", Task(), clips[3], stream=True))
        await _first_delta(running)
        bad = engine.submit(EngineRequest("demo", Task(), np.zeros(int(3 * window * 16000), np.float32)))
        good = engine.submit(EngineRequest("demo", Task("translate", "de"), clips[1]))
        outcomes = [await _outcome(h) for h in (running, bad, good)]
        hook.remove()
        await engine.stop()
        return outcomes

    running, bad, good = asyncio.run(run())
    assert isinstance(bad, ApiError) and bad.status == 500 and "ValueError" in bad.message
    assert running.text == _alone(demo, clips[3], Task())
    assert good.text == _alone(demo, clips[1], Task("translate", "de"))


@pytest.mark.parametrize("scheduler", ["continuous", "static"])
def test_a_lone_request_on_an_idle_server_does_not_wait(demo_dir, clips, scheduler):
    """max_wait_ms is 1 s: the static batcher waits it out for a batch that never fills; the
    continuous scheduler starts a lone request at once."""
    async def run():
        engine = _engine(demo_dir, max_batch_size=8, max_wait_ms=1000, scheduler=scheduler)
        await engine.start()
        r = await engine.submit(EngineRequest("demo", Task(), clips[0])).result()
        await engine.stop()
        return r

    r = asyncio.run(run())
    if scheduler == "continuous":
        assert r.queue_seconds < 0.5
    else:
        assert r.queue_seconds >= 1.0


def test_a_burst_on_an_idle_server_waits_to_share_its_encoder_batch(demo_dir, clips):
    """Once requests have been arriving close together, an idle server waits (at most max_wait_ms)
    for the rest of a burst: its requests are encoded and prefilled as one batch."""
    async def run():
        engine = _engine(demo_dir, max_batch_size=4, max_wait_ms=1000)
        await engine.start()
        first = [engine.submit(EngineRequest("demo", Task(), clips[i])) for i in range(4)]  # close arrivals
        for h in first:
            await h.result()
        burst = []
        for i in range(4):  # the device is idle again; 20 ms apart
            burst.append(engine.submit(EngineRequest("demo", TASKS[i % 3], clips[i])))
            await asyncio.sleep(0.02)
        results = [await h.result() for h in burst]
        await engine.stop()
        return results

    results = asyncio.run(run())
    assert len({r.encoder_seconds for r in results}) == 1  # one encoder batch
    assert all(r.batch_size == 4 for r in results)
    assert results[0].queue_seconds >= 0.05  # the first waited for the others (and at most max_wait_ms)


@pytest.mark.parametrize("ratio, steps, newcomers, waits", [
    (0.0, 6, 1, False),  # ratio 0: a newcomer joins at the next step
    (1.2, 6, 1, True),  # one newcomer beside one row: 1 < 1.2 x 1, it waits 6 steps
    (1.2, 1000, 2, False),  # two newcomers are 1.2 x one row: they join together at once
])
def test_newcomers_join_a_decoding_model_together(demo_dir, demo, clips, ratio, steps, newcomers, waits):
    """An admission pauses the running rows, so newcomers join a decoding model together: once they
    are waiting_served_ratio times its rows, or the oldest has waited max_waiting_steps steps."""
    step_s = 0.05

    async def run():
        engine = _engine(demo_dir, max_batch_size=8, max_wait_ms=0, waiting_served_ratio=ratio,
                         max_waiting_steps=steps)
        await engine.start()
        hook = _slow_down(engine, step_s)
        first = engine.submit(EngineRequest("demo", Task(), clips[3], stream=True))  # the longest answer
        await _first_delta(first)
        late = [engine.submit(EngineRequest("demo", Task(), clips[i])) for i in range(newcomers)]
        results = [await h.result() for h in late]
        long = await first.result()
        hook.remove()
        await engine.stop()
        return long, results

    long, late = asyncio.run(run())
    assert len(long.token_ids) >= 10 and long.text == _alone(demo, clips[3], Task())
    assert [r.text for r in late] == [_alone(demo, clips[i], Task()) for i in range(newcomers)]
    assert all(r.batch_size == 1 + newcomers for r in late)  # they joined the long one's decode
    queued = max(r.queue_seconds for r in late)
    if waits:
        assert queued >= steps * step_s
    else:
        assert queued < steps * step_s


def test_stop_during_decode_finishes_the_rows_then_refuses(demo_dir, demo, clips):
    async def run():
        engine = _engine(demo_dir, max_batch_size=8, max_wait_ms=0)
        await engine.start()
        hook = _slow_down(engine, 0.01)
        handles = [engine.submit(EngineRequest("demo", TASKS[i % 3], c)) for i, c in enumerate(clips)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(engine.stop())
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as refused:
            engine.submit(EngineRequest("demo", Task(), clips[0]))
        await stopping
        hook.remove()
        return [await h.result() for h in handles], refused.value

    results, refused = asyncio.run(run())
    assert [r.text for r in results] == [_alone(demo, c, TASKS[i % 3]) for i, c in enumerate(clips)]
    assert refused.status == 503


def test_sliding_window_layers_join_and_leave_as_alone(noise_wavs):
    """A Qwen2 decoder whose upper layers see an 8-token window: rows of other lengths join and leave
    while the window slides (prompts and answers are longer than the window)."""
    from speechllm.builders import tiny_slam

    model = tiny_slam("qwen2", seed=2)
    assert "sliding_attention" in model.text_config().layer_types
    tasks = model.resolve_tasks([TASKS[i % 3] for i in range(4)])
    prompts, _ = model.embed_prompts(tasks, noise_wavs)
    assert max(p.shape[0] for p in prompts) > model.text_config().sliding_window
    alone = [greedy_generate(model, model.assemble([p]))[0] for p in prompts]
    got, _ = _decode_with_joins(model, prompts, [0, 2, 2, 5])
    assert got == alone


def test_a_decoder_the_row_batcher_cannot_run_is_refused_with_the_fix(tmp_path):
    """Chunked attention masks depend on each row's left padding, which re-batching changes: the
    continuous engine refuses such a model at start and names --scheduler static."""
    import json

    from speechllm.builders import tiny_slam
    from speechllm.errors import SlimError
    from speechllm.generate import supports_row_batching

    path = tiny_slam("llama").save(tmp_path / "chunked")
    config = json.loads((path / "decoder" / "config.json").read_text())
    config["layer_types"] = ["full_attention", "chunked_attention"] * (config["num_hidden_layers"] // 2)
    (path / "decoder" / "config.json").write_text(json.dumps(config))
    assert "chunked_attention" in supports_row_batching(load_model(path))

    async def run():
        engine = TorchEngine(Settings(models={"c": str(path)}), {"c": path})
        with pytest.raises(SlimError, match="--scheduler static"):
            await engine.start()
        await engine.stop()

    asyncio.run(run())
