"""Benchmark the slimspeech server's engines side by side, and against the naive server people write by hand.

    .venv/bin/python scripts/bench_server.py                       # the embedded demo model, engine torch
    .venv/bin/python scripts/bench_server.py --audio clip.wav      # a real clip (default: a synthetic one)
    .venv/bin/python scripts/bench_server.py --engines torch,vllm  # + engine vllm (needs the vllm extra)
    .venv/bin/python scripts/bench_server.py --profile /tmp/prof   # + where the server's CPU time goes (py-spy)
    .venv/bin/python scripts/bench_server.py --model DIR [--threads 1] [--device cuda]
    .venv/bin/python scripts/bench_server.py --continuous-args "--waiting-served-ratio 0"  # another admission rule

One run measures, for one model and one clip, every server as its own process on 127.0.0.1 (same
model, device and threads; one after another):
  * one request: in-process ``speechllm.generate.transcribe`` (HF generate, no server), in-process
    ``greedy_decode`` (the engine's row-batching loop, no server), and over HTTP for each server,
    with the server's own split of that time (from /metrics: queue, encoder, decode, the rest);
  * closed-loop throughput (requests/s, p50/p95 latency) at 1, 8 and 32 concurrent clients, the servers
    in turn, in ``--load-rounds`` rounds;
  * each torch scheduler's sustained capacity: the highest open-loop Poisson rate its queue keeps up
    with (bisection between 0.8x its 1-client and its peak closed-loop req/s);
  * open-loop Poisson arrivals at 80% of the static batcher's sustained capacity, the same arrival
    times for both torch schedulers: p50 / p99 latency;
  * the capacity search and the Poisson run again on a mixed load (``--mix N``: N sentences of the
    demo's grammar spoken by espeak-ng, different lengths, voices and speeds, request i sending clip
    i mod N), since one clip repeated is the one load where a static batch wastes nothing: every row
    ends at the same step;
  * in-process stage times at batch 1 and at the highest concurrency (features, encoder + projector,
    prefill, decode steps), and from them the bound on the scaling goal: a clip's time alone over its
    share of a full batch decoding in lockstep;
  * then one table of the goals' ratios (docs/performance.md records a run).
Servers: ``slimspeech serve --engine torch --scheduler continuous`` (iteration-level batching),
``--scheduler static`` (the dynamic batcher: a batch runs to its end), ``--engine vllm`` when
asked, and a naive FastAPI server that calls ``transcribe`` per request, one at a time.
Ratios within one run are the result: these machines are shared and noisy, absolute numbers drift.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from fastapi import (  # module level: the naive app's annotations resolve here
    FastAPI,
    File,
    Form,
    UploadFile,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTINUOUS, STATIC, NAIVE = "torch continuous", "torch static", "naive (1 at a time)"
#: the torch servers whose goals are printed, in column order
TORCH = (CONTINUOUS, STATIC)
#: the goals of the continuous scheduler: (label, target, higher is better)
GOALS = {
    "http": ("one request: HTTP / in-process transcribe()", 1.10, False),
    "scale": ("req/s at {hi} concurrent / at 1", 8.0, True),
    "naive_hi": ("req/s vs naive server at {hi} concurrent", 6.0, True),
    "naive_1": ("req/s vs naive server at 1 concurrent", 1.0, True),
    "p99": ("p99, Poisson at 80% of static capacity: / static", 0.70, False),
    "p99_mix": ("p99, the same on the mixed load ({mix} clips)", 0.70, False),
}
#: the open-loop loads: one clip repeated, and the mixed load (--mix)
SAME, MIXED = "same clip", "mixed"


# ---- the naive baseline: one request at a time ----------------------------------------------
def load_bench_model(model_dir: str, device: str, dtype: str):
    """The model as ``slimspeech serve --device D --dtype T`` loads it (what every path of the bench runs)."""
    from speechllm.devices import resolve_dtype
    from speechllm.modeldir import load_model

    return load_model(model_dir, device=device, dtype=resolve_dtype(dtype, device))


def naive_app(model_dir: str, device: str, dtype: str):
    """What people write by hand: load the model, call transcribe in the endpoint (blocks the loop)."""
    from speechllm.audio import load_audio
    from speechllm.generate import transcribe

    app = FastAPI()
    model = load_bench_model(model_dir, device, dtype)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model_name: str = Form("", alias="model")):
        wav = load_audio(await file.read(), max_seconds=model.max_audio_seconds)
        return {"text": transcribe(model, [wav])[0]}

    @app.get("/ready")
    async def ready():
        return {"status": "ready"}

    return app


def serve_naive(args) -> int:
    import torch
    import uvicorn

    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(naive_app(args.model, args.device, args.dtype), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


# ---- servers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    """Start a server (its output into ``log``) and wait until it is ready."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: server exited with {proc.returncode}: {' '.join(cmd)} (its output: {log})")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("error: server did not become ready in 300 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- load generation ---------------------------------------------------------------------------
def _post(client, url: str, audio: bytes):
    return client.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", audio)}, data={"model": "bench"})


#: transport errors retried (a keep-alive connection the server closed as the client reused it: the request
#: never reached the application); how many, per server URL, is printed with the results
RETRIED: Counter = Counter()
RETRYABLE = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError, httpx.WriteError)


async def _apost(client, url: str, audio: bytes):
    """``_post`` with up to two retries on a stale connection; the retry's time counts in the latency."""
    for attempt in range(3):
        try:
            return await _post(client, url, audio)
        except RETRYABLE:
            if attempt == 2:
                raise
            RETRIED[url] += 1


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def load(url: str, audio: bytes, concurrency: int, requests: int) -> dict:
    """Closed loop: ``requests`` transcriptions by ``concurrency`` clients; -> each latency (s) and the wall time."""
    latencies: list[float] = []
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker():
            for _ in todo:
                t = time.perf_counter()
                (await _apost(client, url, audio)).raise_for_status()
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"latencies": latencies, "wall": wall}


def pool_closed_loop(parts: list[dict]) -> dict:
    """Rounds of one level pooled: req/s over their summed wall time, latency percentiles over all requests."""
    lat = [x for p in parts for x in p["latencies"]]
    return {"rps": len(lat) / sum(p["wall"] for p in parts), "p50": 1000 * statistics.median(lat),
            "p95": 1000 * percentile(lat, 0.95)}


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> list[float]:
    """Send times (s from the start) of an open-loop Poisson process of ``rate`` requests/s."""
    return list(np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n)))


#: pieces of each Poisson run, the schedulers in turn: drift lands on both alike
POISSON_PIECES = 4
#: a Poisson piece during which the client's event loop woke this late (s) ran while the machine
#: froze (seen here: 1.7 s, which delays every request arriving meanwhile and decides a p99 on its
#: own); it runs again, at most STALL_RETRIES times; STALLS lists them for the report
STALL_S, STALL_RETRIES = 0.5, 2
STALLS: list[str] = []


def poisson_pieces(rate: float, n: int, pieces: int) -> list[list[float]]:
    """One Poisson process of ``n`` arrivals cut into ``pieces`` runs, each re-based to start at its
    first gap (the gaps, hence the bursts, are those of the whole process)."""
    arrivals = poisson_arrivals(rate, n)
    out, start, prev = [], 0, 0.0
    for k in range(1, pieces + 1):
        end = k * n // pieces
        out.append([t - prev for t in arrivals[start:end]])
        start, prev = end, arrivals[end - 1] if end else 0.0
    return out


async def open_loop(url: str, clips: list[bytes], arrivals: list[float]) -> dict:
    """Each request is sent at its arrival time whatever the server's state (open loop); its latency
    counts from that time, so a client that falls behind still charges the wait to the server.
    Request i sends ``clips[i % len(clips)]``. ``stall``: the longest the client's own event loop
    was late waking from a 10 ms sleep meanwhile (a machine that froze, not the server's doing)."""
    latencies: list[float] = [0.0] * len(arrivals)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    stall = 0.0
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(i: int, at: float):
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            (await _apost(client, url, clips[i % len(clips)])).raise_for_status()
            latencies[i] = time.perf_counter() - (t0 + at)

        async def watch():
            nonlocal stall
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                stall = max(stall, time.perf_counter() - t - 0.01)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(one(i, at) for i, at in enumerate(arrivals)))
        wall = time.perf_counter() - t0
        watcher.cancel()
    return {"latencies": latencies, "wall": wall, "stall": stall}  # latencies in send order


def sustained(result: dict, rate: float) -> bool:
    """Whether an open-loop run kept up with its offered ``rate``: it served at least 90% of it and its
    queue did not grow (the last third of the requests, by send time, waited at most twice the first's)."""
    lat = result["latencies"]  # in send order
    third = max(1, len(lat) // 3)
    served = len(lat) / result["wall"]
    return served >= 0.9 * rate and statistics.median(lat[-third:]) <= 2 * statistics.median(lat[:third])


def sustained_capacity(url: str, clips: list[bytes], lo: float, hi: float, requests: int, probes: int) -> tuple[float, list]:
    """The highest open-loop Poisson rate (req/s) the server sustains, by bisection between ``lo``
    (assumed sustained: e.g. its 1-client throughput x 0.8) and ``hi`` (e.g. its peak closed-loop
    throughput, which a server fed by randomly spaced arrivals seldom reaches); -> rate, the probes
    as (rate, sustained)."""
    tried = []
    for i in range(probes):
        rate = (lo + hi) / 2
        result = asyncio.run(open_loop(url, clips, poisson_arrivals(rate, requests, seed=100 + i)))
        ok = sustained(result, rate)
        tried.append((rate, ok))
        print(f"[bench] capacity probe {rate:.1f} req/s: {'sustained' if ok else 'queue grows'}", file=sys.stderr,
              flush=True)
        lo, hi = (rate, hi) if ok else (lo, rate)
    return lo, tried


def sequential_times(url: str, audio: bytes, n: int, warmup: int = 0) -> list[float]:
    """Seconds of each of ``n`` requests sent one after another (after ``warmup`` unmeasured ones)."""
    with httpx.Client(timeout=600) as client:
        for _ in range(warmup):  # connection, first-call allocations
            _post(client, url, audio).raise_for_status()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            _post(client, url, audio).raise_for_status()
            times.append(time.perf_counter() - t)
    return times


def histogram_sums(url: str) -> Counter:
    """(metric, "sum" | "count") -> total over the model's series, from the server's /metrics."""
    sums: Counter = Counter()
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return sums
    for kind in ("sum", "count"):
        for name, value in re.findall(rf'^slimspeech_(\w+?)_{kind}\{{[^}}]*model="bench"[^}}]*\}} (\S+)$', text, re.MULTILINE):
            sums[(name, kind)] += float(value)
    return sums


# ---- in-process ----------------------------------------------------------------------------------
class InProcess:
    """The model in this process: seconds of one clip through ``transcribe`` (HF generate) or through
    ``greedy_decode`` (the engine's row batcher), no server."""

    def __init__(self, model_dir: str, wav: np.ndarray, device: str, dtype: str, threads: int | None):
        import torch

        from speechllm.generate import decode, greedy_decode, transcribe
        from speechllm.tasks import Task

        if threads:
            torch.set_num_threads(threads)
        self.model = model = load_bench_model(model_dir, device, dtype)

        def rows():
            prompts, _ = model.embed_prompts(model.resolve_tasks([Task()]), [wav])
            return decode(model, greedy_decode(model, prompts)[0])

        self.fns = {"transcribe": lambda: transcribe(model, [wav])[0], "rows": rows}
        self.text = {k: fn() for k, fn in self.fns.items()}  # warm-up
        self.info = (f"{model.family}, {model.num_decoder_layers} decoder layers, {model.num_parameters() / 1e6:.2f} M "
                     f"parameters; the clip decodes to {self.text['transcribe']!r}")

    def times(self, kind: str, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            self.fns[kind]()
            out.append(time.perf_counter() - t)
        return out


def test_clip(path: str | None, seconds: float) -> tuple[np.ndarray, bytes]:
    from speechllm.audio import load_audio

    if path:
        data = Path(path).read_bytes()
        return load_audio(data), data
    t = np.arange(int(seconds * 16000)) / 16000
    # a voiced-speech-like signal: 120-220 Hz glide with harmonics, syllable-rate amplitude modulation
    f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 0.2
    wav = wav.astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, 16000, format="WAV")
    return wav, buf.getvalue()


def mixed_clips(n: int, seed: int = 0) -> list[bytes]:
    """``n`` different spoken clips: sentences of the demo data's grammar (a few words to a long clause),
    espeak-ng voices, speeds and pitches of its training range, FLAC bytes; the same for the same seed.
    Raises SynthError without espeak-ng or sox."""
    import random

    from prune_tools.data.grammar import Grammar
    from prune_tools.data.synth import (
        PITCH_RANGE,
        SPEED_RANGE,
        TRAIN_VOICES,
        synthesize,
    )

    rng = random.Random(seed)
    grammar = Grammar()
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = Path(tmp) / f"{i}.flac"
            synthesize(grammar.sample(rng).en, TRAIN_VOICES[i % len(TRAIN_VOICES)], rng.randint(*SPEED_RANGE),
                       rng.randint(*PITCH_RANGE), path)
            clips.append(path.read_bytes())
    return clips


# ---- profiling ------------------------------------------------------------------------------------
#: py-spy frame -> category: a sampled stack goes to the category of its innermost frame that matches a
#: rule (rules in order within one frame), so time in HF modules or torch counts for our caller
PROFILE_RULES = [
    ("upload decoding (probe + load_audio)", ("load_audio (", "probe_audio (")),
    ("features (log-mel)", ("speechllm/audio.py",)),
    ("encoder + projector", ("speechllm/encoder.py", "speechllm/projector.py", "embed_features (", "embed_prompts (")),
    ("decoder prefill", ("add (speechllm/generate.py",)),
    ("decoder steps", ("step (speechllm/generate.py", "greedy_generate (", "generate (transformers")),
    ("decode loop bookkeeping (tokens, text, results)", ("server/engines/decode.py", "server/engines/runner.py",
                                                         "TextDeltas", "decode (speechllm/generate.py")),
    ("service + formats + metrics", ("server/service.py", "server/formats.py", "server/metrics.py",
                                     "server/longform.py", "server/routers/", "server/middleware.py",
                                     "server/admission.py", "prometheus_client")),
    ("HTTP (uvicorn, h11, starlette, fastapi, multipart)", ("uvicorn", "h11", "starlette", "fastapi", "multipart",
                                                            "httptools", "anyio", "pydantic")),
    ("scheduling (scheduler, asyncio, threads)", ("server/engines/scheduler.py", "server/engines/base.py",
                                                  "server/engines/batched.py", "server/engines/torch_engine.py",
                                                  "asyncio", "concurrent/futures", "threading.py")),
]
#: innermost frames of a thread that waits (py-spy counts some waits in C as running, e.g. here in a VM)
IDLE_LEAVES = ("Condition.wait", "Event.wait", "Queue.get", "_worker", "Runner.run", "run_forever", "_run_once",
               "select", "main_loop", "sleep")


def categorize(stack: str) -> str | None:
    """The category of one sampled stack (outermost frame first), or None when the thread was waiting."""
    frames = stack.split(";")
    if frames[-1].split(" (")[0] in IDLE_LEAVES:
        return None
    for frame in reversed(frames):
        for label, patterns in PROFILE_RULES:
            if any(p in frame for p in patterns):
                return label
    return "other (interpreter, logging, GC)"


def summarize_pyspy(path: Path) -> dict[str, float]:
    """Collapsed py-spy stacks -> share of the sampled (non-idle) CPU time per category."""
    counts: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit() and (label := categorize(stack)):
            counts[label] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


class PySpy:
    """py-spy attached to a server process while a phase runs (``with PySpy(pid, out):``); off without py-spy."""

    def __init__(self, pid: int, out: Path | None):
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.cmd = None if out is None or not Path(exe).exists() else \
            [exe, "record", "--format", "raw", "--threads", "-r", "200", "-o", str(out), "-p", str(pid)]
        self.out, self.proc = out, None

    def __enter__(self):
        if self.cmd:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached before the phase starts
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self.proc.wait(60)


def stage_breakdown(model_dir: str, wav: np.ndarray, device: str, dtype: str, threads: int | None,
                    batch: int) -> dict:
    """ms of each stage of ``batch`` copies of the clip in-process: features, encoder + projector, prefill,
    the decode steps; and, from torch.profiler, how much of the decode steps' wall time is inside aten ops
    (the rest is Python: HF's module calls, mask building, our loop)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from speechllm.generate import GreedyBatch
    from speechllm.tasks import Task

    if threads:
        torch.set_num_threads(threads)
    model = load_bench_model(model_dir, device, dtype)
    tasks = model.resolve_tasks([Task()] * batch)
    wavs = [wav] * batch

    def run(prof=None):
        t = {}
        t0 = time.perf_counter()
        feats, lengths = model.features(wavs)
        t1 = time.perf_counter()
        prompts, _ = model.embed_features(tasks, feats, lengths)
        t2 = time.perf_counter()
        rows = GreedyBatch(model)
        tokens, _ = rows.add(prompts)
        t3 = time.perf_counter()
        steps = 0
        while tokens[0] != model.eos_token_id and steps < model.max_new_tokens - 1:
            tokens, _ = rows.step()
            steps += 1
        t4 = time.perf_counter()
        t.update(features=t1 - t0, encoder=t2 - t1, prefill=t3 - t2, steps=t4 - t3, n_steps=steps)
        return t

    with torch.inference_mode():
        run()
        runs = [run() for _ in range(3)]
        best = {k: min(r[k] for r in runs) for k in runs[0]}
        prompts, _ = model.embed_prompts(tasks, wavs)
        rows = GreedyBatch(model)
        rows.add(prompts)
        n = 8
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for _ in range(n):
                rows.step()
            wall = time.perf_counter() - t
    ops = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6  # aten ops, all threads
    best["op_share"] = min(1.0, ops / wall)
    best["step_ms"] = 1000 * wall / n
    return best


def batching_bound(stages: dict, hi: int) -> float:
    """The most any scheduler can gain from batching ``hi`` clips, from the in-process stages: one clip's
    time alone (features, encoder + projector, prefill, its decode steps) over its share of a batch of
    ``hi`` identical clips decoding in lockstep (no HTTP, no queueing: a full batch that arrived at once)."""
    def total(s):
        return s["features"] + s["encoder"] + s["prefill"] + s["steps"]
    return total(stages[1]) / (total(stages[hi]) / hi)


def measure_one(args, inproc: InProcess, procs: dict, urls: dict, audio: bytes, profile_dir: Path | None):
    """One request at a time, ``args.rounds`` rounds of ``args.one`` requests each for in-process and every
    server in turn; -> median ms per path, the servers' own split (mean ms), py-spy summaries (empty here)."""
    times: dict[str, list[float]] = {"in-process transcribe": [], "in-process rows": []}
    spent: dict[str, Counter] = {label: Counter() for label in urls}
    raw = profile_dir / "one-request.txt" if profile_dir and CONTINUOUS in procs else None
    with PySpy(procs[CONTINUOUS].pid if raw else 0, raw):
        for r in range(args.rounds):
            print(f"[bench] one request, round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
            times["in-process transcribe"] += inproc.times("transcribe", args.one)
            times["in-process rows"] += inproc.times("rows", args.one)
            for label, url in urls.items():
                before = histogram_sums(url)
                took = sequential_times(url, audio, args.one)
                times.setdefault(label, []).extend(took)
                after = histogram_sums(url)
                after.subtract(before)
                after[("client", "sum")] += sum(took)
                after[("client", "count")] += len(took)
                spent[label].update(after)
    one = {label: 1000 * statistics.median(t) for label, t in times.items()}
    split = {label: {name: 1000 * c[(name, "sum")] / c[(name, "count")] for name, kind in list(c)
                     if kind == "count" and c[(name, kind)]} for label, c in spent.items()}
    return one, split, {}


def pool_open_loop(parts: list[dict]) -> dict:
    lat = [x for p in parts for x in p["latencies"]]
    return {"rps": sum(len(p["latencies"]) for p in parts) / sum(p["wall"] for p in parts),
            "p50": 1000 * statistics.median(lat), "p99": 1000 * percentile(lat, 0.99), "max": 1000 * max(lat)}


# ---- the run ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model dir (default: the embedded demo model)")
    p.add_argument("--audio", default=None, help="clip to send (default: a synthetic voiced clip)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of the synthetic clip")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--requests", type=int, default=32,
                   help="requests per level and round (at least 4 per client)")
    p.add_argument("--load-rounds", type=int, default=2,
                   help="rounds of each closed-loop level (servers in turn, so drift hits all alike)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the one-request phase (all paths in turn)")
    p.add_argument("--one", type=int, default=5, help="requests per path per round of the one-request phase")
    p.add_argument("--poisson-requests", type=int, default=600,
                   help=f"requests of each open-loop Poisson run (sent in {POISSON_PIECES} pieces, the servers in turn)")
    p.add_argument("--capacity-requests", type=int, default=150,
                   help="requests of each open-loop probe of the capacity search")
    p.add_argument("--capacity-probes", type=int, default=5, help="probes (bisection steps) of the capacity search")
    p.add_argument("--mix", type=int, default=24,
                   help="clips of the mixed open-loop load (spoken by espeak-ng; 0: the one clip only)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto",
                   help="every path's weights and activations, as `slimspeech serve --dtype`: auto (default), "
                        "float32, bfloat16, float16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in every process")
    p.add_argument("--engines", default="torch", help="comma-separated: torch (both schedulers), vllm")
    p.add_argument("--continuous-args", default="",
                   help="more flags for the continuous server, e.g. '--waiting-served-ratio 0' (join at the next step)")
    p.add_argument("--vllm-args", default="", help="engine vllm: AsyncEngineArgs JSON passed to the server")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also profile: py-spy stacks of the continuous server at 1 and at the highest "
                        "concurrency, summarized; raw stacks saved in DIR")
    p.add_argument("--serve-naive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_naive:
        return serve_naive(args)

    from speechllm.devices import resolve_dtype
    from speechllm.errors import SlimError
    from speechllm.modeldir import default_model_dir

    try:
        args.model = str(args.model or default_model_dir())
        resolve_dtype(args.dtype, args.device)  # an unknown name: one line, before any server starts
    except SlimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    hi = max(levels)
    wav, audio = test_clip(args.audio, args.seconds)
    threads = ["--threads", str(args.threads)] if args.threads else []
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)

    mixed: list[bytes] = []
    if args.mix:
        from prune_tools.data.synth import SynthError

        try:
            mixed = mixed_clips(args.mix)
        except SynthError as exc:
            print(f"[bench] no mixed load: {exc}", file=sys.stderr, flush=True)
    inproc = InProcess(args.model, wav, args.device, args.dtype, args.threads)
    # in-process stages at batch 1 and at the highest concurrency: what bounds the scaling goal (report)
    stages = {b: stage_breakdown(args.model, wav, args.device, args.dtype, args.threads, b) for b in sorted({1, hi})}

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    base = ["--port", "{port}", "--device", args.device, "--dtype", args.dtype, *threads]
    serve = [sys.executable, "-m", "speechllm.cli", "serve", "--model", f"bench={args.model}",
             "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
             "--log-level", "warning", *base]
    servers: dict[str, list[str]] = {}
    if "torch" in engines:
        servers[CONTINUOUS] = [*serve, "--engine", "torch", "--scheduler", "continuous",
                               *shlex.split(args.continuous_args)]
        servers[STATIC] = [*serve, "--engine", "torch", "--scheduler", "static"]
    if "vllm" in engines:
        servers["vllm"] = [*serve, "--engine", "vllm", *(["--vllm-args", args.vllm_args] if args.vllm_args else [])]
    servers[NAIVE] = [sys.executable, str(Path(__file__).resolve()), "--serve-naive", "--model", args.model, *base]

    # Every server is up at once (idle ones cost no CPU) and each phase measures them in turn, in
    # rounds, so that a shared machine's drift lands on all of them alike rather than on whichever ran last.
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    logs = Path(tempfile.mkdtemp(prefix="bench_server-"))
    print(f"[bench] server logs in {logs}", file=sys.stderr, flush=True)
    try:
        for label, cmd in servers.items():
            print(f"[bench] starting {label}", file=sys.stderr, flush=True)
            port = free_port()
            urls[label] = f"http://127.0.0.1:{port}"
            procs[label] = start([a.replace("{port}", str(port)) for a in cmd], urls[label],
                                 logs / f"{label.split(' (')[0].replace(' ', '-')}.log")
            sequential_times(urls[label], audio, 0, warmup=3)
        one, split, spy = measure_one(args, inproc, procs, urls, audio, profile_dir)
        rows: dict[str, dict[int, dict]] = {label: {} for label in servers}
        for c in levels:
            parts: dict[str, list[dict]] = {label: [] for label in urls}
            n = max(args.requests, 4 * c)
            for r in range(args.load_rounds):  # servers in turn, the order reversed every other round
                for label in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
                    print(f"[bench] {c} concurrent, round {r + 1} of {args.load_rounds}: {label}", file=sys.stderr,
                          flush=True)
                    raw = profile_dir / f"concurrency-{c}.txt" if profile_dir and label == CONTINUOUS and c == hi \
                        and r == 0 else None
                    with PySpy(procs[label].pid, raw):
                        parts[label].append(asyncio.run(load(urls[label], audio, c, n)))
            for label, done in parts.items():
                rows[label][c] = pool_closed_loop(done)
        # per open-loop load: each scheduler's sustained capacity (bisection between 0.8x its 1-client
        # and its peak closed-loop throughput on the one clip; up to 1.5x that peak on the mixed load,
        # whose clips are shorter on average), then Poisson arrivals at 80% of the static batcher's
        poisson, rate, capacity, probes = {}, {}, {}, {}
        if STATIC in rows and CONTINUOUS in rows:
            for load_name, clips, headroom in ((SAME, [audio], 1.0), (MIXED, mixed, 1.5)):
                if not clips:
                    continue
                capacity[load_name], probes[load_name], parts = {}, {}, {label: [] for label in TORCH}
                for label in TORCH:
                    print(f"[bench] capacity search, {load_name}: {label}", file=sys.stderr, flush=True)
                    capacity[load_name][label], probes[load_name][label] = sustained_capacity(
                        urls[label], clips, 0.8 * rows[label][min(levels)]["rps"], headroom * rows[label][hi]["rps"],
                        args.capacity_requests, args.capacity_probes)
                rate[load_name] = 0.8 * capacity[load_name][STATIC]
                for r, piece in enumerate(poisson_pieces(rate[load_name], args.poisson_requests, POISSON_PIECES)):
                    for label in (TORCH if r % 2 == 0 else TORCH[::-1]):  # in turn, the order reversed every other
                        done = parts[label]
                        print(f"[bench] Poisson at {rate[load_name]:.1f} req/s, {load_name}: {label}", file=sys.stderr,
                              flush=True)
                        for attempt in range(STALL_RETRIES + 1):  # a piece the machine froze in runs again
                            result = asyncio.run(open_loop(urls[label], clips, piece))
                            if result["stall"] < STALL_S or attempt == STALL_RETRIES:
                                break
                            STALLS.append(f"{load_name}, {label}: {result['stall']:.2f} s")
                            print(f"[bench] the machine stalled {result['stall']:.2f} s: that piece again",
                                  file=sys.stderr, flush=True)
                        done.append(result)
                poisson[load_name] = {label: pool_open_loop(p) for label, p in parts.items()}
    finally:
        for proc in procs.values():
            stop(proc)
    for name in ("one-request", f"concurrency-{hi}"):
        if profile_dir and (profile_dir / f"{name}.txt").is_file():
            spy[name] = summarize_pyspy(profile_dir / f"{name}.txt")

    args.urls = urls
    report(args, inproc.info, wav, one, split, rows, levels, poisson, rate, capacity, probes, stages, spy)
    return 0


def report(args, info, wav, one, split, rows, levels, poisson, rate, capacity, probes, stages, spy) -> None:
    hi = max(levels)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"model: {args.model} ({info}), device {args.device}, torch threads {args.threads or 'default'}")
    print(f"clip: {len(wav) / 16000:.1f} s; servers: max_batch_size {args.max_batch_size}, "
          f"max_wait_ms {args.max_wait_ms:g}" + (f"; continuous server: {args.continuous_args}" if args.continuous_args else ""))
    print()
    ref = one["in-process transcribe"]
    print(f"one request, median of {args.rounds} x {args.one} per path, paths in turn; the servers' split is a mean:")
    for label, ms in one.items():
        parts = split.get(label, {})
        detail = ""
        if "request_duration_seconds" in parts:
            engine = {k: parts.get(f"{k}_seconds", 0.0) for k in ("queue", "encoder", "decode")}
            service = parts["request_duration_seconds"] - sum(engine.values())
            http = parts["client"] - parts["request_duration_seconds"]
            detail = ("   (" + ", ".join(f"{k} {v:.1f}" for k, v in engine.items())
                      + f", service {service:.1f}, HTTP {http:.1f} ms)")
        name = label if label.startswith("in-process") else f"HTTP, {label}"
        print(f"  {name:32} {ms:8.1f} ms  {ms / ref:5.2f}x{detail}")
    print()
    print("closed loop: req/s, p50 / p95 ms, by concurrent clients:")
    print(f"{'concurrency':>11} | " + " | ".join(f"{label:>26}" for label in rows))
    for c in levels:
        cells = [f"{r[c]['rps']:6.1f} {r[c]['p50']:8.1f} {r[c]['p95']:8.1f}" for r in rows.values()]
        print(f"{c:>11} | " + " | ".join(f"{cell:>26}" for cell in cells))
    for load_name, caps in capacity.items():
        what = "the one clip" if load_name == SAME else f"the mixed load ({args.mix} spoken clips)"
        print()
        print(f"{what}: sustained capacity, the highest Poisson rate whose queue does not grow "
              f"({args.capacity_probes} probes of {args.capacity_requests} requests, bisection):")
        for label, rps in caps.items():
            tried = ", ".join(f"{r:.1f}{'+' if ok else '-'}" for r, ok in probes[load_name][label])
            print(f"  {label:18} {rps:6.1f} req/s   (probes: {tried})")
        print(f"{what}: open loop, Poisson arrivals at {rate[load_name]:.1f} req/s (80% of the static batcher's "
              f"sustained capacity), {args.poisson_requests} requests:")
        for label, r in poisson[load_name].items():
            print(f"  {label:18} served {r['rps']:6.1f} req/s   p50 {r['p50']:8.1f} ms   p99 {r['p99']:8.1f} ms   "
                  f"max {r['max']:8.1f} ms")
    print()
    print("in-process stages of one clip (ms, best of 3) and of the decode steps' time inside aten ops:")
    for b, s in stages.items():
        print(f"  batch {b:3}: features {1000 * s['features']:7.1f}  encoder+projector {1000 * s['encoder']:7.1f}  "
              f"prefill {1000 * s['prefill']:7.1f}  {s['n_steps']} steps {1000 * s['steps']:7.1f} "
              f"({s['step_ms']:.2f} ms/step, {100 * s['op_share']:.0f}% in ops, "
              f"{100 * (1 - s['op_share']):.0f}% Python)")
    for name, shares in spy.items():
        print()
        print(f"py-spy, {CONTINUOUS} server, {name} (share of sampled CPU time, all threads):")
        for label, share in shares.items():
            print(f"  {100 * share:5.1f}%  {label}")

    if STALLS:
        print()
        print("Poisson pieces run again after the machine stalled (the client's event loop woke that late): "
              + "; ".join(STALLS))
    if RETRIED:
        print()
        print("requests resent after a stale keep-alive connection (counted in their latency): "
              + ", ".join(f"{label} {RETRIED[url]}" for label, url in args.urls.items() if RETRIED[url]))
    print()
    print("goals (met: the servers that meet it; static for comparison):")
    naive = rows.get(NAIVE, {})

    def ratios(label):
        r = rows.get(label)
        if not r:
            return {}
        out = {"http": one[label] / ref, "scale": r[hi]["rps"] / r[min(levels)]["rps"]}
        if naive:
            out["naive_hi"] = r[hi]["rps"] / naive[hi]["rps"]
            out["naive_1"] = r[min(levels)]["rps"] / naive[min(levels)]["rps"]
        for key, load_name in (("p99", SAME), ("p99_mix", MIXED)):
            if load_name in poisson:
                out[key] = poisson[load_name][label]["p99"] / poisson[load_name][STATIC]["p99"]
        return out

    shown = [label for label in TORCH if label in rows]
    if CONTINUOUS not in shown:  # e.g. --engines vllm: no torch goals to judge
        return
    got = {label: ratios(label) for label in shown}
    print(f"  {'':52} " + " ".join(f"{label.removeprefix('torch '):>10}" for label in shown) + f" {'target':>8}  met")
    for key, (label, target, higher) in GOALS.items():
        if key not in got[CONTINUOUS]:
            continue
        met = [srv.removeprefix("torch ") for srv in shown if srv != STATIC and key in got[srv]
               and (got[srv][key] >= target if higher else got[srv][key] <= target)]
        print(f"  {label.format(hi=hi, mix=args.mix):52} " + " ".join(f"{got[s].get(key, float('nan')):9.2f}x" for s in shown)
              + f" {('>= ' if higher else '<= ') + f'{target:g}x':>8}  {', '.join(met) or 'NO'}")
    if hi > 1:
        bound = batching_bound(stages, hi)
        print(f"  {f'bound on req/s at {hi} / at 1 (in-process stages)':52} {bound:9.2f}x "
              f"{'':>10} {'-':>8}  continuous reaches {got[CONTINUOUS]['scale'] / bound:.2f} of it")
    for load_name, caps in capacity.items():
        print(f"  {f'sustained capacity / static, {load_name}':52} "
              + " ".join(f"{caps[s] / caps[STATIC]:9.2f}x" for s in shown) + f" {'-':>8}  (recorded)")


if __name__ == "__main__":
    sys.exit(main())
