"""Benchmark the slimspeech server's engines side by side, and against the naive server people write by hand.

    .venv/bin/python scripts/bench_server.py                       # the embedded demo model, engine torch
    .venv/bin/python scripts/bench_server.py --engines torch,vllm  # both engines (needs the vllm extra)
    .venv/bin/python scripts/bench_server.py --model DIR [--audio clip.wav] [--threads 1] [--device cuda]

Prints, for one model and one clip:
  * latency of one request in-process (``speechllm.generate.transcribe``, no server) and over
    HTTP through each server, and the difference (HTTP + scheduling overhead);
  * throughput (requests/s, p50/p95 latency) at 1, 8 and 32 concurrent clients, for
    ``slimspeech serve --engine E`` for each engine (torch: dynamic batching; vllm: continuous
    batching), and for a naive FastAPI server that calls ``transcribe`` per request, one at a time.
Every server runs as its own process on 127.0.0.1 with the same model, device and threads, one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Form, UploadFile  # module level: the naive app's annotations resolve here

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- the naive baseline: one request at a time ----------------------------------------------
def naive_app(model_dir: str, device: str):
    """What people write by hand: load the model, call transcribe in the endpoint (blocks the loop)."""
    from speechllm.audio import load_audio
    from speechllm.generate import transcribe
    from speechllm.modeldir import load_model

    app = FastAPI()
    model = load_model(model_dir, device=device)

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
    uvicorn.run(naive_app(args.model, args.device), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


# ---- load generation ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: server exited with {proc.returncode}: {' '.join(cmd)}")
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


async def load(url: str, audio: bytes, concurrency: int, requests: int) -> dict:
    """``requests`` transcriptions by ``concurrency`` clients; -> req/s and latency percentiles."""
    latencies: list[float] = []
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker():
            for _ in todo:
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", audio)},
                                      data={"model": "bench"})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"rps": requests / wall, "p50": 1000 * statistics.median(latencies),
            "p95": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def sequential_latency(url: str, audio: bytes, n: int) -> float:
    with httpx.Client(timeout=600) as client:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            client.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", audio)},
                        data={"model": "bench"}).raise_for_status()
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def in_process_latency(model_dir: str, wav: np.ndarray, n: int, device: str, threads: int | None) -> tuple:
    import torch

    from speechllm.generate import transcribe
    from speechllm.modeldir import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_dir, device=device)
    transcribe(model, [wav])  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        transcribe(model, [wav])
        times.append(time.perf_counter() - t)
    info = f"{model.family}, {model.num_decoder_layers} decoder layers, {model.num_parameters() / 1e6:.2f} M parameters"
    del model
    return 1000 * statistics.median(times), info


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model dir (default: the embedded demo model)")
    p.add_argument("--audio", default=None, help="clip to send (default: a synthetic voiced clip)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the synthetic clip")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--requests", type=int, default=32, help="requests per level (at least 4 per client)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in every process")
    p.add_argument("--engines", default="torch", help="comma-separated server engines to compare (torch,vllm)")
    p.add_argument("--vllm-args", default="", help="engine vllm: AsyncEngineArgs JSON passed to the server")
    p.add_argument("--serve-naive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_naive:
        return serve_naive(args)

    from speechllm.errors import SlimError
    from speechllm.modeldir import default_model_dir

    try:
        args.model = str(args.model or default_model_dir())
    except SlimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    wav, audio = test_clip(args.audio, args.seconds)
    threads = ["--threads", str(args.threads)] if args.threads else []

    inproc, info = in_process_latency(args.model, wav, 20, args.device, args.threads)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    base = ["--port", "{port}", "--device", args.device, *threads]
    servers = {}
    for engine in engines:
        extra = ["--vllm-args", args.vllm_args] if engine == "vllm" and args.vllm_args else []
        servers[f"serve --engine {engine}"] = [
            sys.executable, "-m", "speechllm.cli", "serve", "--model", f"bench={args.model}", "--engine", engine,
            "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
            "--log-level", "warning", *base, *extra]
    naive = "naive (1 at a time)"
    servers[naive] = [sys.executable, str(Path(__file__).resolve()), "--serve-naive", "--model", args.model, *base]
    rows: dict[str, dict[int, dict]] = {}
    one: dict[str, float] = {}
    for label, cmd in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start([a.replace("{port}", str(port)) for a in cmd], url)
        try:
            one[label] = sequential_latency(url, audio, 20)
            rows[label] = {c: asyncio.run(load(url, audio, c, max(args.requests, 4 * c))) for c in levels}
        finally:
            stop(proc)

    print(f"model: {args.model} ({info}), device {args.device}, torch threads {args.threads or 'default'}")
    print(f"clip: {len(wav) / 16000:.1f} s; servers: max_batch_size {args.max_batch_size}, "
          f"max_wait_ms {args.max_wait_ms:g}")
    print()
    print("one request, median of 20:")
    print(f"  {'in-process transcribe()':28} {inproc:8.1f} ms")
    for label, ms in one.items():
        print(f"  {'HTTP, ' + label:28} {ms:8.1f} ms   overhead {ms - inproc:+.1f} ms")
    print()
    print("throughput (req/s) and latency (p50 / p95 ms) by concurrent clients:")
    print(f"{'concurrency':>11} | " + " | ".join(f"{label:>30}" for label in rows) + " | req/s vs naive")
    for c in levels:
        cells = [f"{r[c]['rps']:8.1f} {r[c]['p50']:9.1f} {r[c]['p95']:9.1f}  " for r in rows.values()]
        ratios = ", ".join(f"{label.split()[-1]} {rows[label][c]['rps'] / rows[naive][c]['rps']:.2f}x"
                           for label in rows if label != naive)
        print(f"{c:>11} | " + " | ".join(f"{cell:>30}" for cell in cells) + f" | {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
