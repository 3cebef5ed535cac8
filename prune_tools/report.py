"""``slimspeech compare``: one report of what pruning bought, base vs pruned, offline (no server).

    slimspeech compare --base runs/base --pruned runs/export --data data/bench/test-clean.jsonl \\
        [--tasks transcribe,translate:fr,translate:de] [--limit 64] [--batch-size 8] [--out runs/compare]

For each model: parameters, weight bytes and decoder layers (from the model), peak memory
(measured: each model is loaded and run on one batch in its own process, ``memprobe`` below),
WER / BLEU / chrF per split and task (``prune_tools.evaluate``), and latency and throughput of
in-process runs (batch 1 per clip, and batches of ``--batch-size``), the two models interleaved
A B B A over ``--repeats`` rounds so a noisy machine biases neither. Each pruned/base ratio is
printed next to its ideal from the layer count (L_pruned / L_base for size, memory and time,
the inverse for throughput; 1.0 for quality, the paper's tolerance being a relative WER
degradation <= 0.25). Writes ``compare.json``, ``compare.md`` and ``compare.png`` to ``--out``.

The memory probe of one model, which ``compare`` runs in a fresh process per model:

    python -m prune_tools.report memprobe MODEL_DIR --audio a.wav --audio b.wav [--device cpu] [--threads 1]

It loads the model, runs the clips as one batch and prints one JSON line: ``rss_after_imports_bytes``,
``peak_rss_after_load_bytes``, ``peak_rss_after_inference_bytes``, ``model_peak_rss_bytes``,
``cuda_peak_bytes`` and the model's ``describe()``. Peak RSS is the process's high-water mark
(VmHWM), hence one process per model. After the imports (torch, transformers, the model's modules)
the mark is reset to the current RSS (``/proc/self/clear_refs``), so ``model_peak_rss_bytes`` =
peak after inference - RSS after the imports is what the model itself costs: weights +
activations + KV cache.

The same models served over HTTP, under load: ``slimspeech loadtest`` (``loadtests/``, which
reads sizes and layer counts from the server's ``GET /v1/models`` and imports nothing of ours).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from speechllm.errors import SlimError
from speechllm.provenance import stamp

log = logging.getLogger(__name__)
TASKS = "transcribe,translate:fr,translate:de"


def distribution(values) -> dict | None:
    """p50 / p90 / p99 (linear interpolation between order statistics), mean, min, max; None for none."""
    xs = np.asarray(list(values), dtype=float)
    if xs.size == 0:
        return None
    p50, p90, p99 = (float(v) for v in np.percentile(xs, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(xs.mean()), "min": float(xs.min()),
            "max": float(xs.max())}


# ---- memory: one model per process ------------------------------------------------------------
def peak_rss_bytes() -> int:
    """The high-water mark of resident memory (VmHWM; since the last ``reset_peak``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; never reset


def reset_peak() -> bool:
    """Lower the high-water mark to the current RSS (Linux >= 4.0: clear_refs 5), so that what imports
    peaked at does not hide what the model needs; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def warm_imports(model_dir: str) -> None:
    """Import what loading will import (the family, the decoder's modeling module, the tokenizer) and run
    one small matmul, so that the baseline holds the libraries and the peak less the baseline is the model."""
    import torch

    from speechllm.modeldir import family_class, read_spec

    family_class(read_spec(model_dir)["family"])
    (torch.ones(64, 64) @ torch.ones(64, 64)).sum().item()
    decoder = Path(model_dir) / "decoder"
    if (decoder / "config.json").is_file():  # slam: a plain HF causal-LM dir
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        try:
            MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(decoder))]
            AutoTokenizer.from_pretrained(decoder)
        except (KeyError, OSError, ValueError):
            pass


def probe(model_dir: str, audio: list[str], device: str = "cpu", threads: int | None = None) -> dict:
    """Load ``model_dir`` in this process and run ``audio`` as one batch; -> the memory figures (module doc)."""
    import torch

    from speechllm.audio import load_audio
    from speechllm.generate import greedy_generate
    from speechllm.modeldir import load_model
    from speechllm.tasks import Task

    if threads:
        torch.set_num_threads(threads)
    wavs = [load_audio(a) for a in audio]
    warm_imports(model_dir)
    peak_reset = reset_peak()
    baseline = current_rss_bytes()
    model = load_model(model_dir, device=device)
    after_load = peak_rss_bytes()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if wavs:
        wavs = [w[: int(model.max_audio_seconds * 16000)] for w in wavs]
        greedy_generate(model, model.embed([Task()] * len(wavs), wavs))
    after = peak_rss_bytes()
    layer_params = sum(p.numel() for p in model.decoder_stack().layers.parameters())
    return {
        "dir": str(model_dir), **model.describe(), "device": device,
        "decoder_layer_parameters": layer_params,
        "rss_after_imports_bytes": baseline,
        "peak_rss_after_load_bytes": after_load,
        "peak_rss_after_inference_bytes": after,
        "model_peak_rss_bytes": after - baseline,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None,
        "batch": len(wavs),
        "peak_reset": peak_reset,
    }


def memprobe_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m prune_tools.report memprobe",
                                description="peak memory of one model in this process, as one JSON line")
    p.add_argument("model_dir")
    p.add_argument("--audio", action="append", default=[], help="clip(s) run as one batch after loading")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    print(json.dumps(probe(args.model_dir, args.audio, args.device, args.threads)))
    return 0


def peak_memory(model_dir: str, audio: list[str], device: str, threads: int | None) -> dict:
    """Run ``memprobe`` (``python -m prune_tools.report memprobe``) in a fresh process; -> its JSON."""
    cmd = [sys.executable, "-m", "prune_tools.report", "memprobe", str(model_dir), "--device", device]
    for a in audio:
        cmd += ["--audio", a]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SlimError(f"measuring the memory of {model_dir} failed: {tail[0]}", param="--base/--pruned")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- speed: both models in this process, interleaved ------------------------------------------
def _timed_generate(model, wavs, task, batch_size: int) -> tuple[float, int]:
    from speechllm.generate import greedy_generate

    t0 = time.perf_counter()
    tokens = 0
    for s in range(0, len(wavs), batch_size):
        chunk = wavs[s:s + batch_size]
        tokens += sum(len(ids) for ids in greedy_generate(model, model.embed([task] * len(chunk), chunk)))
    return time.perf_counter() - t0, tokens


def speed(models: dict, wavs: list, task, batch_size: int, repeats: int) -> dict:
    """Latency (batch 1, per clip) and throughput (batches of ``batch_size``) of each model, interleaved."""
    names = list(models)
    audio_s = sum(len(w) for w in wavs) / 16000
    lat = {m: [] for m in names}
    runs = {m: [] for m in names}
    for name in names:  # warm-up: first calls allocate and pick kernels
        _timed_generate(models[name], wavs[:1], task, 1)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            model = models[name]
            for w in wavs:
                lat[name].append(_timed_generate(model, [w], task, 1)[0])
            seconds, tokens = _timed_generate(model, wavs, task, batch_size)
            runs[name].append({"seconds": seconds, "tokens": tokens})
    out = {}
    for name in names:
        secs = [x["seconds"] for x in runs[name]]
        med = float(np.median(secs))
        tokens = runs[name][0]["tokens"]
        out[name] = {"task": str(task), "clips": len(wavs), "audio_s": audio_s, "batch_size": batch_size,
                     "repeats": repeats, "latency_s": distribution(lat[name]),
                     "batched_seconds": secs, "throughput_clips_per_s": len(wavs) / med,
                     "tokens_per_s": tokens / med, "rtfx": audio_s / med, "latencies_s": lat[name]}
    return out


# ---- the report -----------------------------------------------------------------------------
def _ratio(a, b):
    return a / b if a is not None and b else None


def build_rows(report: dict) -> list[dict]:
    """The side-by-side table: one row per quantity, base, pruned, ratio, ideal."""
    b, p = report["models"]["base"], report["models"]["pruned"]
    f = p["decoder_layers"] / b["decoder_layers"]
    rows = [
        ("decoder layers", b["decoder_layers"], p["decoder_layers"], f, "count"),
        ("parameters", b["parameters"], p["parameters"], f, "count"),
        ("weight bytes", b["weight_bytes"], p["weight_bytes"], f, "bytes"),
        ("peak RSS of the model (bytes)", b["memory"]["model_peak_rss_bytes"], p["memory"]["model_peak_rss_bytes"],
         f, "bytes"),
        ("peak RSS of the process (bytes)", b["memory"]["peak_rss_after_inference_bytes"],
         p["memory"]["peak_rss_after_inference_bytes"], f, "bytes"),
    ]
    if b["memory"].get("cuda_peak_bytes") is not None:
        rows.append(("peak CUDA memory (bytes)", b["memory"]["cuda_peak_bytes"], p["memory"]["cuda_peak_bytes"],
                     f, "bytes"))
    bs, ps = b["speed"], p["speed"]
    rows += [
        ("latency p50, batch 1 (s)", bs["latency_s"]["p50"], ps["latency_s"]["p50"], f, "s"),
        ("latency p90, batch 1 (s)", bs["latency_s"]["p90"], ps["latency_s"]["p90"], f, "s"),
        (f"throughput, batch {bs['batch_size']} (clips/s)", bs["throughput_clips_per_s"],
         ps["throughput_clips_per_s"], 1 / f, "rate"),
        (f"tokens/s, batch {bs['batch_size']}", bs["tokens_per_s"], ps["tokens_per_s"], 1 / f, "rate"),
        (f"RTFx, batch {bs['batch_size']}", bs["rtfx"], ps["rtfx"], 1 / f, "rate"),
    ]
    for split, tasks in b.get("scores", {}).items():
        for label, s in tasks.items():
            q = p["scores"][split][label]
            for metric in ("wer", "bleu", "chrf"):
                if metric in s:
                    rows.append((f"{metric.upper()} {split} {label}", s[metric], q[metric], 1.0, "quality"))
    return [{"quantity": name, "base": bv, "pruned": pv, "ratio": _ratio(pv, bv), "ideal": ideal, "kind": kind}
            for name, bv, pv, ideal, kind in rows]


def _fmt(x, kind: str) -> str:
    if x is None:
        return "-"
    if kind == "ratio":
        return f"{x:.3f}"
    if kind == "bytes":
        return f"{x / 2**20:,.2f} MiB"
    if kind == "count":
        return f"{int(x):,}"
    if kind == "s":
        return f"{x * 1000:.1f} ms"
    return f"{x:.4g}"


def markdown(report: dict) -> str:
    b, p = report["models"]["base"], report["models"]["pruned"]
    lines = [
        "# Base vs pruned", "",
        f"- base: `{b['dir']}` ({b['decoder_layers']} decoder layers); pruned: `{p['dir']}` "
        f"({p['decoder_layers']} decoder layers)",
        f"- data: {', '.join(f'`{d}`' for d in report['data'])}, first {report['limit']} clips per split; "
        f"tasks {', '.join(report['tasks'])}",
        f"- speed: {report['speed_task']} on {b['speed']['clips']} clips ({b['speed']['audio_s']:.1f} s of audio), "
        f"{report['repeats']} rounds A B B A, device {report['device']}, {report['threads'] or 'default'} threads; "
        f"machine: {report['machine']}",
        f"- memory: each model loaded in its own process and run on one batch of {b['memory']['batch']}; "
        "'of the model' = peak RSS less the RSS after importing torch",
        "", "| quantity | base | pruned | pruned / base | ideal |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        ideal = "1 (no loss)" if r["kind"] == "quality" else f"{r['ideal']:.3g}"
        lines.append(f"| {r['quantity']} | {_fmt(r['base'], r['kind'])} | {_fmt(r['pruned'], r['kind'])} | "
                     f"{_fmt(r['ratio'], 'ratio')} | {ideal} |")
    deg = report.get("relative_degradation") or {}
    if deg:
        lines += ["", f"Relative degradation (WER_pruned / WER_base - 1 for transcription, 1 - BLEU ratio for "
                      f"translation); the paper tolerates <= {report.get('tolerance', 0.25)}:", ""]
        for split, tasks in deg.items():
            cells = (f"{t} {'-' if v is None else f'{v:+.3f}'}" for t, v in tasks.items())
            lines.append(f"- {split}: " + ", ".join(cells))
    lines += ["", "Ideal: the ratio if the quantity scaled with the decoder layer count alone. The encoder, projector "
              "and embeddings do not shrink, so size, memory and time ratios lie between the ideal and 1.",
              "", "![ratios against their ideal](compare.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["ratio"] is not None and r["kind"] != "quality"
            and r["quantity"] != "decoder layers"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r["ratio"] for r in rows], height=0.4, label="measured", color="C0")
    ax.barh([y - 0.2 for y in ys], [r["ideal"] for r in rows], height=0.4, label="ideal (layer count)",
            color="C7", alpha=0.6)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(list(ys), [r["quantity"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("pruned / base")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    for name, color in (("base", "C1"), ("pruned", "C0")):
        xs = sorted(x * 1000 for x in report["models"][name]["speed"]["latencies_s"])
        ax2.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", color=color, label=name)
    ax2.set(xlabel="latency, batch 1 (ms)", ylabel="fraction of clips", title="in-process latency CDF")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(base: str, pruned: str, data: list[str], *, tasks: str = TASKS, limit: int = 32, batch_size: int = 8,
            repeats: int = 3, speed_task: str = "transcribe", device: str = "cpu", threads: int | None = None,
            memory_batch: int = 4) -> dict:
    import platform

    import torch

    from prune_tools.evaluate import evaluate, read_rows
    from speechllm.audio import load_audio
    from speechllm.modeldir import load_model, read_spec
    from speechllm.tasks import parse_task

    for flag, d in (("--base", base), ("--pruned", pruned)):
        try:
            read_spec(d)  # a missing or broken model dir fails here, with one line naming the flag
        except SlimError as exc:
            raise SlimError(f"{flag}: {exc}", param=flag) from None
    if threads:
        torch.set_num_threads(threads)
    task_list = [parse_task(t) for t in tasks.split(",") if t.strip()]
    if not task_list:
        raise SlimError("--tasks is empty: pass e.g. transcribe,translate:fr", param="--tasks")
    rows = read_rows(data[0])[:limit]
    if not rows:
        raise SlimError(f"{data[0]} has no rows", param="--data")
    log.info("quality: %s on %s", tasks, ", ".join(data))
    quality = evaluate(pruned, data, task_list, base_dir=base, limit=limit, batch_size=batch_size, device=device)
    log.info("memory: one process per model")
    clips = [r["audio"] for r in rows[:memory_batch]]
    memory = {name: peak_memory(d, clips, device, threads) for name, d in (("base", base), ("pruned", pruned))}
    log.info("speed: %s, %d rounds", speed_task, repeats)
    models = {"base": load_model(base, device=device), "pruned": load_model(pruned, device=device)}
    wavs = [load_audio(r["audio"], max_seconds=models["base"].max_audio_seconds) for r in rows]
    t = parse_task(speed_task)
    task = models["base"].prompts.resolve(t.name, t.target_lang)
    timing = speed(models, wavs, task, batch_size, repeats)
    report = {
        **stamp("slimspeech compare"), "data": [str(d) for d in data], "limit": limit,
        "tasks": [str(t) for t in task_list], "speed_task": speed_task, "repeats": repeats, "device": device,
        "threads": threads or torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "models": {}, "relative_degradation": quality.get("relative_degradation"),
        "tolerance": quality.get("tolerance"),
    }
    for name, d, q in (("base", base, quality["base"]), ("pruned", pruned, quality["model"])):
        report["models"][name] = {"dir": str(d), **models[name].describe(), "memory": memory[name],
                                  "speed": timing[name], "scores": q["scores"]}
    report["rows"] = build_rows(report)
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "compare.png")
    (out / "compare.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "compare.md").write_text(markdown(report))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech compare", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--base", required=True, help="the unpruned model dir")
    p.add_argument("--pruned", required=True, help="the pruned (and healed) model dir")
    p.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help="JSONL manifests (one split each)")
    p.add_argument("--tasks", default=TASKS, help=f"quality tasks (default {TASKS})")
    p.add_argument("--limit", type=int, default=32, help="first N utterances of each split (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help="batch of the throughput runs (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="A B B A rounds of the speed runs (default 3)")
    p.add_argument("--speed-task", default="transcribe", help="task of the speed runs (default transcribe)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="runs/compare", help="report folder (default runs/compare)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    for flag, v in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--repeats", args.repeats)):
        if v <= 0:
            raise SlimError(f"{flag} must be > 0 (got {v})", param=flag)
    report = compare(args.base, args.pruned, args.data, tasks=args.tasks, limit=args.limit,
                     batch_size=args.batch_size, repeats=args.repeats, speed_task=args.speed_task,
                     device=args.device, threads=args.threads)
    out = Path(args.out)
    write(report, out)
    for r in report["rows"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(f"{r['quantity']:<40} base {_fmt(r['base'], r['kind']):>14}  pruned {_fmt(r['pruned'], r['kind']):>14}"
              f"  ratio {ratio:>7}  ideal {r['ideal']:.3g}")
    print(f"report: {out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    # the memory probe's entry point: ``compare`` runs it once per model, each in a fresh process
    if sys.argv[1:2] != ["memprobe"]:
        sys.exit("usage: python -m prune_tools.report memprobe MODEL_DIR [--audio CLIP ...] "
                 "(the report itself: slimspeech compare)")
    sys.exit(memprobe_main(sys.argv[2:]))
