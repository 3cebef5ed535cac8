"""``slimspeech loadtest``: latency and throughput of served models under load, side by side, over HTTP.

    slimspeech loadtest --url http://127.0.0.1:8000 --models pruned,base --data data/bench/test-clean.jsonl \\
        --rates 1,2,4 --concurrency 1,8 --duration-s 20 --stream --out runs/loadtest

Load levels (each run for every model, one after the other):
  --rates R1,R2      open loop: Poisson arrivals at R req/s *per model*, sent whether or not earlier ones
                     have answered (latency grows without bound past capacity: the queue shows up)
  --concurrency C1   closed loop: C requests in flight *per model*, each sent when the previous answers
The models are interleaved within a level (``--mix``): ``alternate`` (default) cuts each level into
short windows, one model at a time, in the order A B B A A B ..., so slow drift of a noisy machine hits
both models alike and neither competes with the other for the server; ``concurrent`` loads all models
at once (what a shared server sees). Every level is bounded by ``--duration-s`` of load per model and
``--max-requests`` per model, every request by ``--timeout-s``; the run stops by itself.

Writes to ``--out``: ``records.jsonl`` (one line per request), ``summary.json`` (all statistics,
ratios against ``--reference`` and the ideal ratios from the decoder layer counts), ``report.md``,
``latency_cdf.png`` and ``load.png``. Statistics are defined in ``loadtests.stats``. The load
generator talks to the server through the HTTP API only (httpx), never in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from . import report, stats
from .client import Record, make_client, send
from .errors import LoadTestError
from .workload import Workload, load_clips, parse_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Level:
    mode: str  # "open" (Poisson arrivals) | "closed" (fixed concurrency)
    value: float  # req/s per model | requests in flight per model

    @property
    def name(self) -> str:
        return f"rate={self.value:g}" if self.mode == "open" else f"concurrency={int(self.value)}"

    @property
    def unit(self) -> str:
        return "req/s per model" if self.mode == "open" else "concurrent requests per model"


@dataclass
class Plan:
    models: list[str]
    levels: list[Level]
    duration_s: float = 10.0
    window_s: float = 2.5
    mix: str = "alternate"
    max_requests: int = 200
    warmup: int = 2
    stream: bool = False
    response_format: str = "json"
    timeout_s: float = 60.0
    seed: int = 0

    def windows(self) -> list[list[str]]:
        """The models of each window of one level, in order."""
        if self.mix == "concurrent":
            return [list(self.models)]
        n = max(1, round(self.duration_s / self.window_s))
        out = []
        for r in range(n):  # A B, B A, A B, ...: a linear drift costs every model the same
            order = self.models if r % 2 == 0 else self.models[::-1]
            out += [[m] for m in order]
        return out

    def window_seconds(self) -> float:
        if self.mix == "concurrent":
            return self.duration_s
        return self.duration_s / max(1, round(self.duration_s / self.window_s))

    def worst_case_s(self) -> float:
        """An upper bound of the run's duration: load time plus one request timeout per window drain."""
        per_level = len(self.windows()) * (self.window_seconds() + self.timeout_s)
        return len(self.levels) * per_level + len(self.models) * self.warmup * self.timeout_s


@dataclass
class Runner:
    client: httpx.AsyncClient
    workload: Workload
    plan: Plan
    clock: float = field(default_factory=time.perf_counter)
    records: list[Record] = field(default_factory=list)

    def __post_init__(self):
        self.counters = {m: 0 for m in self.plan.models}
        self.rng = random.Random(self.plan.seed)

    def now(self) -> float:
        return time.perf_counter() - self.clock

    async def request(self, model: str, **fields) -> Record:
        j = self.counters[model]
        self.counters[model] += 1
        clip, task = self.workload.item(j)
        rec = await send(self.client, clip, task, model, stream=self.plan.stream,
                         response_format=self.plan.response_format, clock=self.clock,
                         timeout_s=self.plan.timeout_s, **fields)
        self.records.append(rec)
        return rec

    async def warm_up(self) -> None:
        for model in self.plan.models:
            for _ in range(self.plan.warmup):
                rec = await self.request(model, level="warmup", warmup=True)
                if not rec.ok:
                    log.warning("warm-up request to %s failed: %s %s", model, rec.status, rec.error)

    async def open_window(self, models: list[str], rate: float, seconds: float, left: dict[str, int],
                          **fields) -> None:
        """Poisson arrivals at ``rate`` per model (merged: rate * len(models)), models taken in turn."""
        start = self.now()
        t = start
        tasks: list[asyncio.Task] = []
        turn = 0
        while True:
            t += self.rng.expovariate(rate * len(models))
            if t - start >= seconds:
                break
            open_models = [m for m in models if left[m] > 0]
            if not open_models:
                break
            model = open_models[turn % len(open_models)]
            turn += 1
            left[model] -= 1
            delay = t - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.request(model, scheduled=t, **fields)))
        if tasks:
            await asyncio.gather(*tasks)

    async def closed_window(self, models: list[str], concurrency: int, seconds: float, left: dict[str, int],
                            **fields) -> None:
        """``concurrency`` workers per model, each sending its next request when the last one answers."""
        deadline = self.now() + seconds

        async def worker(model: str) -> None:
            while self.now() < deadline and left[model] > 0:
                left[model] -= 1
                await self.request(model, **fields)

        await asyncio.gather(*(worker(m) for m in models for _ in range(concurrency)))

    async def run_level(self, level: Level) -> dict[str, float]:
        """Run one level over its windows; -> busy seconds per model."""
        left = {m: self.plan.max_requests for m in self.plan.models}
        busy = {m: 0.0 for m in self.plan.models}
        seconds = self.plan.window_seconds()
        for w, models in enumerate(self.plan.windows()):
            if not any(left[m] > 0 for m in models):
                continue
            t0 = self.now()
            if level.mode == "open":
                await self.open_window(models, level.value, seconds, left, level=level.name, window=w)
            else:
                await self.closed_window(models, int(level.value), seconds, left, level=level.name, window=w)
            for m in models:
                busy[m] += self.now() - t0
        return busy


# ---- server side -------------------------------------------------------------------------
async def server_info(client: httpx.AsyncClient, wait_s: float) -> tuple[dict, dict]:
    """-> (/ready body, {model id: /v1/models entry}); waits up to ``wait_s`` for readiness."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            r = await client.get("/ready")
            if r.status_code == 200:
                break
            why = f"/ready answered {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise LoadTestError(f"server {client.base_url} is not ready ({why}): start it with `slimspeech serve` "
                            "or raise --wait-s", param="--url")
        await asyncio.sleep(0.5)
    r = await client.get("/v1/models")
    if r.status_code != 200:
        raise LoadTestError(f"GET /v1/models answered {r.status_code}: {r.text[:200]}", param="--url")
    return r.json(), {m["id"]: m for m in r.json()["data"]}


async def scrape(client: httpx.AsyncClient) -> dict | None:
    """Server-side counters per model from /metrics (None if the server exports none)."""
    try:
        r = await client.get("/metrics")
        if r.status_code != 200:
            return None
        from prometheus_client.parser import text_string_to_metric_families

        out: dict = {}
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                model = s.labels.get("model")
                if model is not None and (s.name.endswith("_sum") or s.name.endswith("_count")):
                    key = (model, s.name)
                    out[key] = out.get(key, 0.0) + s.value
        return out
    except (httpx.HTTPError, ValueError):
        return None


def server_deltas(before: dict | None, after: dict | None, model: str) -> dict:
    """Mean batch size and queue wait the server saw for ``model`` between two scrapes."""
    if not before or not after:
        return {}

    def mean(name: str):
        n = after.get((model, f"{name}_count"), 0) - before.get((model, f"{name}_count"), 0)
        s = after.get((model, f"{name}_sum"), 0) - before.get((model, f"{name}_sum"), 0)
        return s / n if n > 0 else None

    return {"mean_batch_size": mean("slimspeech_batch_size"), "mean_queue_s": mean("slimspeech_queue_seconds"),
            "mean_server_latency_s": mean("slimspeech_request_duration_seconds")}


# ---- the run ------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"host_cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_1m_at_start": load}


async def run(url: str, data: str, plan: Plan, out: Path, *, tasks: str = "transcribe", limit: int | None = 32,
              reference: str | None = None, wait_s: float = 30.0, api_key: str | None = None,
              argv: list[str] | None = None) -> dict:
    """Run the plan against ``url``; write records, summary, report and plots to ``out``; -> the summary."""
    workload = Workload(load_clips(data, limit), parse_tasks(tasks))
    async with make_client(url, timeout_s=plan.timeout_s, api_key=api_key) as client:
        ready, served = await server_info(client, wait_s)
        plan.models = plan.models or list(served)
        missing = [m for m in plan.models if m not in served]
        if missing:
            raise LoadTestError(f"--models: {', '.join(missing)} not served at {url}: choose among {', '.join(served)}",
                            param="--models")
        reference = reference or ("base" if "base" in plan.models else plan.models[-1])
        if reference not in plan.models:
            raise LoadTestError(f"--reference {reference!r} is not one of --models {','.join(plan.models)}",
                            param="--reference")
        log.info("load test of %s at %s: %d levels, at most %.0f s", ",".join(plan.models), url,
                 len(plan.levels), plan.worst_case_s())
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        runner = Runner(client, workload, plan)
        await runner.warm_up()
        levels = []
        for level in plan.levels:
            before = await scrape(client)
            busy = await runner.run_level(level)
            after = await scrape(client)
            recs = [r for r in runner.records if r.level == level.name and not r.warmup]
            per_model = {}
            for m in plan.models:
                per_model[m] = stats.summarize([r for r in recs if r.model == m], busy[m])
                per_model[m]["server"] = server_deltas(before, after, m)
            levels.append({"level": level.name, "mode": level.mode, "offered": level.value, "unit": level.unit,
                           "models": per_model, "ratios": stats.ratios(per_model, reference)})
            log.info("%s: %s", level.name, "; ".join(
                f"{m} p50 {report.ms(s['latency_s'], 'p50')} ms, {report.num(s['throughput_rps'])} req/s, "
                f"{s['errors']} errors" for m, s in per_model.items()))
    layers = {m: served[m].get("decoder_layers") for m in plan.models}
    summary = {
        "produced_by": "slimspeech loadtest",
        "started": started,
        "command": None if argv is None else "slimspeech loadtest " + " ".join(_redacted(argv)),
        "url": url,
        "plan": {"models": plan.models, "levels": [lv.name for lv in plan.levels], "mix": plan.mix,
                 "duration_s_per_level_per_model": plan.duration_s, "window_s": plan.window_seconds(),
                 "max_requests_per_level_per_model": plan.max_requests, "warmup_per_model": plan.warmup,
                 "stream": plan.stream, "response_format": plan.response_format, "timeout_s": plan.timeout_s,
                 "seed": plan.seed, "tasks": [str(t) for t in workload.tasks], "clips": len(workload.clips),
                 "data": str(data), "clip_seconds_mean": sum(c.seconds for c in workload.clips) / len(workload.clips)},
        "reference": reference,
        "client_machine": machine(),
        "server": {"ready": ready, "models": {m: {k: served[m].get(k) for k in (
            "decoder_layers", "parameters", "weight_bytes", "device", "dtype", "family")} for m in plan.models}},
        "ideal_ratios": stats.ideal_ratios(layers, reference),
        "levels": levels,
        "warmup_requests": sum(1 for r in runner.records if r.warmup),
        "records": "records.jsonl",
    }
    out.mkdir(parents=True, exist_ok=True)
    with (out / "records.jsonl").open("w") as f:
        for r in runner.records:
            f.write(json.dumps(r.to_dict()) + "\n")
    report.write(summary, [r.to_dict() for r in runner.records], out)
    return summary


def _redacted(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--api-key" and i + 1 < len(out):
            out[i + 1] = "***"
        elif a.startswith("--api-key="):
            out[i] = "--api-key=***"
    return out


def _numbers(text: str | None, flag: str, integer: bool = False) -> list[float]:
    if not text:
        return []
    try:
        values = [int(x) if integer else float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LoadTestError(f"{flag} {text!r}: expected comma-separated {'integers' if integer else 'numbers'}",
                        param=flag) from None
    if any(v <= 0 for v in values):
        raise LoadTestError(f"{flag} {text!r}: every value must be > 0", param=flag)
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech loadtest", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default http://127.0.0.1:8000)")
    p.add_argument("--models", default=None, help="served model names, comma-separated (default: all served)")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="JSONL manifest of the clips to send")
    p.add_argument("--limit", type=int, default=32, help="first N clips of the manifest (default 32)")
    p.add_argument("--task", default="transcribe",
                   help="task(s) sent in turn: transcribe, translate:fr, ... comma-separated (default transcribe)")
    p.add_argument("--rates", default=None, help="open-loop levels, req/s per model, e.g. 1,2,4")
    p.add_argument("--concurrency", default=None, help="closed-loop levels, in flight per model, e.g. 1,8 "
                   "(default 1,4 when no --rates)")
    p.add_argument("--duration-s", type=float, default=10.0, help="load per level per model (default 10)")
    p.add_argument("--window-s", type=float, default=2.5, help="window length of --mix alternate (default 2.5)")
    p.add_argument("--mix", choices=("alternate", "concurrent"), default="alternate",
                   help="models one at a time in alternating windows (default), or all at once")
    p.add_argument("--max-requests", type=int, default=200, help="per level per model (default 200)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured requests per model first (default 2)")
    p.add_argument("--stream", action="store_true", help="stream=true (server-sent events): measures TTFT")
    p.add_argument("--response-format", choices=("json", "verbose_json", "text"), default="json",
                   help="response_format of every request (default json)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for one answer (default 60)")
    p.add_argument("--reference", default=None, help="model the others are divided by (default base, else the last)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    p.add_argument("--wait-s", type=float, default=30.0, help="wait this long for /ready (default 30)")
    p.add_argument("--api-key", default=os.environ.get("SLIMSPEECH_API_KEY"),
                   help="bearer key (default: $SLIMSPEECH_API_KEY)")
    p.add_argument("--out", required=True, help="report folder")
    return p


def main(argv: list[str]) -> int:
    """The verb: bad input (LoadTestError) is one ``error: ...`` line on stderr and exit code 2."""
    try:
        return _main(argv)
    except LoadTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    rates = _numbers(args.rates, "--rates")
    conc = _numbers(args.concurrency, "--concurrency", integer=True)
    if not rates and not conc:
        conc = [1, 4]
    for flag, v in (("--duration-s", args.duration_s), ("--window-s", args.window_s),
                    ("--timeout-s", args.timeout_s), ("--max-requests", args.max_requests),
                    ("--limit", args.limit)):
        if v <= 0:
            raise LoadTestError(f"{flag} must be > 0 (got {v})", param=flag)
    if args.warmup < 0:
        raise LoadTestError("--warmup must be >= 0", param="--warmup")
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if len(set(models)) != len(models):
        raise LoadTestError(f"--models {args.models!r} names a model twice", param="--models")
    plan = Plan(models=models, levels=[Level("open", r) for r in rates] + [Level("closed", c) for c in conc],
                duration_s=args.duration_s, window_s=args.window_s, mix=args.mix, max_requests=args.max_requests,
                warmup=args.warmup, stream=args.stream, response_format=args.response_format,
                timeout_s=args.timeout_s, seed=args.seed)
    if args.stream and args.response_format == "verbose_json":
        raise LoadTestError("--stream answers server-sent events: use --response-format json or text", param="--stream")
    out = Path(args.out)
    summary = asyncio.run(run(args.url, args.data, plan, out, tasks=args.task, limit=args.limit,
                              reference=args.reference, wait_s=args.wait_s, api_key=args.api_key, argv=argv))
    print(report.console(summary))
    print(f"report: {out / 'report.md'}")
    return 0
