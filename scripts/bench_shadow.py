"""What shadow mode costs the client: demo-pruned's p50 latency with ``--shadow demo-pruned=demo:1.0``
against the same server without it, requests one at a time 0.5 s apart (issue 16's setting).

    python scripts/bench_shadow.py [--requests 100] [--spacing 0.5] [--audio CLIP] [--threads 1]

Both servers run at once and take turns (request i goes to one, then the other), so the machine's
drift over the run falls on both alike. Prints each p50/p90 and the ratio, and (when given --out)
writes them as JSON with what produced them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_server import free_port, start, stop

from prune_tools.data.synth import TRAIN_VOICES, synthesize

from speechllm.modeldir import DEMO_DIR
from speechllm.provenance import stamp


def serve_cmd(port: int, threads: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "speechllm.cli", "serve", "--port", str(port), "--threads", str(threads),
            "--log-level", "warning", "--model", f"demo-pruned={DEMO_DIR}-pruned", "--model", f"demo={DEMO_DIR}",
            *extra]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100, help="requests to each server (default 100)")
    p.add_argument("--spacing", type=float, default=0.5, help="seconds between request starts (default 0.5)")
    p.add_argument("--audio", default=None, help="the clip (default: a spoken sentence, espeak-ng)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per server (default 1)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.audio:
        audio = Path(args.audio).read_bytes()
    else:
        with tempfile.TemporaryDirectory() as d:
            synthesize("the small dog sees the red ball in the garden", TRAIN_VOICES[0], 160, 50, Path(d) / "s.flac")
            audio = (Path(d) / "s.flac").read_bytes()
    servers = {}
    try:
        for name, extra in (("plain", ()), ("shadow", ("--shadow", "demo-pruned=demo:1.0"))):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            servers[name] = (url, start(serve_cmd(port, args.threads, *extra), url))
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        with httpx.Client(timeout=600) as client:
            for i in range(2 * args.requests):
                name = ("plain", "shadow")[i % 2]
                t0 = time.perf_counter()
                client.post(f"{servers[name][0]}/v1/audio/transcriptions", files={"file": ("clip.wav", audio)},
                            data={"model": "demo-pruned"}).raise_for_status()
                latencies[name].append(time.perf_counter() - t0)
                time.sleep(max(0.0, args.spacing - (time.perf_counter() - t0)))
            shadow = client.get(f"{servers['shadow'][0]}/v1/shadow").json()
    finally:
        for _, proc in servers.values():
            stop(proc)
    figures = {name: {"p50_ms": round(1000 * statistics.median(v), 1),
                      "p90_ms": round(1000 * statistics.quantiles(v, n=10)[-1], 1)} for name, v in latencies.items()}
    compared = sum(pair["count"] for pair in shadow["pairs"])
    ratio = figures["shadow"]["p50_ms"] / figures["plain"]["p50_ms"]
    print(f"{'server':<8} {'p50 ms':>8} {'p90 ms':>8}")
    for name, f in figures.items():
        print(f"{name:<8} {f['p50_ms']:>8} {f['p90_ms']:>8}")
    print(f"p50 with shadow / without: {ratio:.3f} (goal <= 1.10); shadows compared: {compared} of {args.requests}")
    if args.out:
        Path(args.out).write_text(json.dumps({**stamp("scripts/bench_shadow.py"), "requests": args.requests,
                                              "spacing_s": args.spacing, "figures": figures,
                                              "p50_ratio": round(ratio, 4), "shadows_compared": compared},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
