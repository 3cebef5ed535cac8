"""scripts/bench_server.py's judgements on synthetic measurements: when an open-loop run kept up with
its rate, the capacity bisection, and the bound batching puts on the scaling goal.

    .venv/bin/python -m pytest -q tests/test_bench_server.py
"""

from __future__ import annotations

import pytest
from fastapi import (  # module level: the test app's annotations resolve here
    FastAPI,
    Form,
    UploadFile,
)

from tests.conftest import ROOT, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "scripts" / "bench_server.py")


def test_a_run_is_sustained_only_when_it_served_the_rate_and_its_queue_did_not_grow(bench):
    flat = {"latencies": [0.1] * 90, "wall": 9.2}  # 90 requests at 10 req/s, served 9.8 req/s
    growing = {"latencies": [0.1 + 0.02 * i for i in range(90)], "wall": 9.2}  # each waits longer
    slow = {"latencies": [0.1] * 90, "wall": 12.0}  # served 7.5 of 10 req/s
    assert bench.sustained(flat, 10.0)
    assert not bench.sustained(growing, 10.0)
    assert not bench.sustained(slow, 10.0)


def test_capacity_bisection_converges_on_the_rate_where_the_queue_starts_growing(bench, monkeypatch):
    """A fake server that keeps up below 23 req/s: five probes between 10 and 40 end near it."""
    def fake_open_loop(url, audio, arrivals):
        async def run():
            rate = len(arrivals) / arrivals[-1]
            lat = [0.1] * len(arrivals) if rate < 23 else [0.1 + 0.05 * i for i in range(len(arrivals))]
            return {"latencies": lat, "wall": arrivals[-1] + 0.1}
        return run()

    monkeypatch.setattr(bench, "open_loop", fake_open_loop)
    rate, probes = bench.sustained_capacity("http://x", b"", 10.0, 40.0, requests=2000, probes=5)
    assert len(probes) == 5 and 22.0 <= rate < 24.0
    # the fake judges by the arrivals' own rate, within about 2% of the nominal one
    assert all(ok == (r < 23) for r, ok in probes if abs(r - 23) > 0.5)


def test_poisson_pieces_keep_the_gaps_of_the_whole_process(bench):
    whole = bench.poisson_arrivals(20.0, 603)
    pieces = bench.poisson_pieces(20.0, 603, 4)
    assert [len(p) for p in pieces] == [150, 301 - 150, 452 - 301, 603 - 452]
    gaps = [b - a for a, b in zip([0.0, *whole], whole)]
    assert [b - a for p in pieces for a, b in zip([0.0, *p], p)] == pytest.approx(gaps)


def test_batching_bound_is_a_clip_alone_over_its_share_of_a_full_batch(bench):
    stages = {1: {"features": 0.001, "encoder": 0.015, "prefill": 0.012, "steps": 0.050},
              32: {"features": 0.016, "encoder": 0.360, "prefill": 0.096, "steps": 0.160}}
    assert bench.batching_bound(stages, 32) == pytest.approx(0.078 / (0.632 / 32))


def test_the_mixed_load_sends_each_spoken_clip_in_turn_over_http(bench):
    """``mixed_clips``: different spoken clips, the same for the same seed; ``open_loop`` sends request i
    clip i mod n, to a real uvicorn server that records what it received."""
    import asyncio
    import threading
    import time
    from collections import Counter

    import uvicorn

    from tests.conftest import require_tools

    require_tools("espeak-ng", "sox", fix="apt-get install -y espeak-ng sox")
    clips = bench.mixed_clips(3)
    assert len(set(clips)) == 3 and bench.mixed_clips(3, seed=0) == clips
    assert bench.mixed_clips(3, seed=1) != clips

    received: list[bytes] = []
    app = FastAPI()

    @app.post("/v1/audio/transcriptions")
    async def transcribe(file: UploadFile, model: str = Form(...)):
        received.append(await file.read())
        return {"text": model}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=bench.free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.config.port}"
        out = asyncio.run(bench.open_loop(url, clips, [0.05 * i for i in range(7)]))
    finally:
        server.should_exit = True
        thread.join(10)
    assert len(out["latencies"]) == 7 and all(x > 0 for x in out["latencies"])
    assert Counter(received) == Counter(clips[i % 3] for i in range(7))


def test_every_path_of_the_bench_loads_the_dtype_asked_for(bench, tiny_slam_dir, capsys):
    """``--dtype``: the in-process paths load it as ``slimspeech serve --dtype`` does (auto: float32 on a
    CPU); an unknown name is one line and exit code 2, before any server starts."""
    import torch

    assert bench.load_bench_model(str(tiny_slam_dir), "cpu", "bfloat16").dtype == torch.bfloat16
    assert bench.load_bench_model(str(tiny_slam_dir), "cpu", "auto").dtype == torch.float32
    capsys.readouterr()  # the loads' progress bars
    assert bench.main(["--model", str(tiny_slam_dir), "--dtype", "half"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dtype 'half'" in err[0] and "bfloat16" in err[0]
