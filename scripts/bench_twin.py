"""The pruning speed-up at a realistic shape: a shape twin (random weights, published shape) vs the same
twin with 40% of its decoder layers removed, decoding a fixed number of tokens (no early EOS: both do the
same work), each ratio beside its ideal.

    .venv/bin/python scripts/bench_twin.py                                  # builds runs/twin-1b (+ -pruned)
    .venv/bin/python scripts/bench_twin.py --tokens 16 --repeats 3 --json runs/bench_twin.json
    .venv/bin/python scripts/bench_twin.py --shape llama-3.1-8b-whisper-large-v3 --device cuda \\
        --work runs/twin-8b --tokens 64 --concurrency 1,8,32                # the GPU part (bfloat16)
    .venv/bin/python scripts/bench_twin.py --base DIR --pruned DIR          # dirs made elsewhere

What it measures, per model:
  * weight bytes (the dir's weights as loaded) and the bytes a generated token reads: the decoder layers,
    the final norm and the LM head (the embedding is a lookup of one row). The ideal speed-up is the ratio
    of those bytes (decoding one token at small batch is memory-bound: it reads every weight once). The
    parameter arithmetic (the base's parameters less the removed layers' parameters, from the config)
    checks the pruned dir's weight bytes;
  * peak memory: one fresh process per model loads it and decodes one batch at the highest concurrency
    (prune_tools.report's probe: peak RSS less the RSS after the imports; CUDA: max allocated);
  * speed, each model in a fresh process per repeat, interleaved (base, pruned, then pruned, base, ...;
    one process holding both models ran both slower and unevenly): at each concurrency c, c clips of ``--seconds`` are encoded as one batch, prefilled as one batch, then decoded
    ``--tokens - 1`` steps with the engine's row batcher (speechllm.generate.GreedyBatch; every row
    decodes exactly ``--tokens`` tokens). Reported: decode tokens/s (the steps alone: what the ideal
    describes), end-to-end tokens/s (encoder + prefill + steps), both from the best of ``--repeats``
    (other processes only ever add time), and the p50 latency of a request (end to end).
One table: base, pruned, pruned/base (speed: pruned over base; sizes: base over pruned, i.e. the
reduction), the ideal, and measured / ideal. Ratios within one run are the result (shared machines drift).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_SPEED = 0.9  # decode tokens/s ratio at 1 concurrent >= 0.9 x ideal
GOAL_BYTES = 0.02  # weight bytes ratio within 2% of the parameter arithmetic


# ---- the model dirs --------------------------------------------------------------------------------
def slimspeech(*args: str) -> None:
    """``slimspeech ARGS`` in a child process (building and pruning hold a model of their own)."""
    cmd = [sys.executable, "-m", "speechllm.cli", *args]
    print(f"[bench_twin] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if subprocess.run(cmd, env=env).returncode != 0:
        raise SystemExit(f"error: slimspeech {args[0]} failed (its output is above)")


def removed_block(layers: int, fraction: float) -> tuple[int, int]:
    """A contiguous block of round(fraction * layers) layers ending before the last layer (where the
    paper's analysis finds the redundant ones; with random weights any block costs the same)."""
    n = round(fraction * layers)
    if not 0 < n < layers:
        raise SystemExit(f"error: --fraction {fraction} removes {n} of {layers} layers: choose one that keeps some")
    return layers - 1 - n, layers - 2


# ---- bytes -----------------------------------------------------------------------------------------
def weight_figures(model) -> dict:
    """Parameters and bytes: all weights, and what one generated token reads (layers + final norm + LM head)."""
    def nbytes(params):
        return sum(p.numel() * p.element_size() for p in params)

    stack = model.decoder_stack()
    head = model.lm.get_output_embeddings()
    per_token = list(stack.layers.parameters()) + list(stack.norm.parameters()) + list(head.parameters())
    cfg = model.text_config()
    return {"parameters": model.num_parameters(), "weight_bytes": model.weight_bytes(),
            "decoder_layers": len(stack.layers), "per_token_bytes": nbytes(per_token),
            "layer_bytes": nbytes(stack.layers.parameters()), "dtype": str(model.dtype).replace("torch.", ""),
            "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False))}


def layer_parameters(cfg) -> int:
    """One Llama decoder layer's parameters from its config: q, k, v, o; gate, up, down; two RMSNorms."""
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = cfg.hidden_size * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    return attn + 3 * cfg.hidden_size * cfg.intermediate_size + 2 * cfg.hidden_size


# ---- memory: one process per model -------------------------------------------------------------------
def probe_main(args) -> int:
    """(child) load ``args.probe``, decode one batch of ``max(concurrency)`` clips; print the memory as JSON."""
    import torch

    from prune_tools.report import current_rss_bytes, peak_rss_bytes, reset_peak, warm_imports
    from speechllm.modeldir import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    warm_imports(args.probe)
    reset = reset_peak()
    baseline = current_rss_bytes()
    model = load_model(args.probe, device=args.device, dtype=getattr(torch, args.dtype))
    after_load = peak_rss_bytes()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    batch = max(int(c) for c in args.concurrency.split(","))
    run_batch(model, clip(args.seconds), batch, args.tokens)
    after = peak_rss_bytes()
    print(json.dumps({"rss_after_imports_bytes": baseline, "peak_rss_after_load_bytes": after_load,
                      "peak_rss_after_inference_bytes": after, "model_peak_rss_bytes": after - baseline,
                      "cuda_peak_bytes": torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None,
                      "batch": batch, "peak_reset": reset}))
    return 0


def peak_memory(model_dir: Path, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", str(model_dir), "--device", args.device,
           "--tokens", str(args.tokens), "--seconds", str(args.seconds), "--concurrency", args.concurrency]
    cmd += ["--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"error: the memory probe of {model_dir} failed: {(out.stderr or out.stdout)[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- speed -------------------------------------------------------------------------------------------
def clip(seconds: float):
    """A voiced-speech-like clip (a random model's output does not depend on what it hears)."""
    import numpy as np

    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    return (sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.1).astype(np.float32)


def run_batch(model, wav, batch: int, tokens: int) -> dict:
    """``batch`` requests of ``wav`` together: one encoder batch, one prefill, ``tokens - 1`` steps; -> seconds."""
    import torch

    from speechllm.generate import GreedyBatch

    sync = (lambda: torch.cuda.synchronize(model.device)) if model.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        prompts, _ = model.embed_prompts(model.resolve_tasks([model.prompts.resolve("transcribe")] * batch),
                                         [wav] * batch)
        rows = GreedyBatch(model)
        rows.add(prompts)
        sync()
        t1 = time.perf_counter()
        for _ in range(tokens - 1):
            rows.step()
        sync()
        t2 = time.perf_counter()
    return {"total": t2 - t0, "prefill": t1 - t0, "steps": t2 - t1, "prompt_tokens": int(prompts[0].shape[0])}


def speed_main(args) -> int:
    """(child) load ``args.speed_of``, warm up, then one request batch per concurrency; print the seconds as JSON."""
    import torch

    from speechllm.modeldir import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.speed_of, device=args.device, dtype=getattr(torch, args.dtype))
    wav = clip(args.seconds)
    run_batch(model, wav, 1, 2)  # first calls allocate and pick kernels
    levels = [int(c) for c in args.concurrency.split(",")]
    print(json.dumps({str(c): run_batch(model, wav, c, args.tokens) for c in levels}))
    return 0


def speed(dirs: dict, args, levels: list[int]) -> dict:
    """Each repeat: each model in a fresh process (so that one model's pages never compete with the other's
    in one process), the order alternating; -> per (model, concurrency): tokens/s and latency."""
    names = list(dirs)
    runs = {(m, c): [] for m in names for c in levels}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for r in range(args.repeats):
        for m in (names if r % 2 == 0 else names[::-1]):
            print(f"[bench_twin] repeat {r + 1}/{args.repeats}: {m}", file=sys.stderr, flush=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--speed-of", str(dirs[m]), "--device", args.device,
                   "--dtype", args.dtype, "--tokens", str(args.tokens), "--seconds", str(args.seconds),
                   "--concurrency", args.concurrency] + (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"error: timing {dirs[m]} failed: {(out.stderr or out.stdout)[-2000:]}")
            for c, res in json.loads(out.stdout.strip().splitlines()[-1]).items():
                runs[(m, int(c))].append(res)
    tokens = args.tokens
    out = {}
    for (m, c), rs in runs.items():
        # throughput: the best repeat (other processes on a shared machine only ever add time); latency: median
        steps = min(x["steps"] for x in rs)
        total = min(x["total"] for x in rs)
        out[(m, c)] = {"decode_tokens_per_s": c * (tokens - 1) / steps, "tokens_per_s": c * tokens / total,
                       "p50_latency_s": statistics.median(x["total"] for x in rs),
                       "prefill_s": statistics.median(x["prefill"] for x in rs),
                       "step_ms": 1000 * steps / (tokens - 1), "prompt_tokens": rs[0]["prompt_tokens"],
                       "runs": rs}
    return out


# ---- the run -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="llama-3.2-1b", help="the twin to build when --base is not given")
    p.add_argument("--work", default="runs/twin-1b", help="where the twin and its pruned copy are built (base/, pruned/)")
    p.add_argument("--base", default=None, help="base model dir (default: WORK/base, built when missing)")
    p.add_argument("--pruned", default=None, help="pruned model dir (default: WORK/pruned, pruned from the base)")
    p.add_argument("--fraction", type=float, default=0.4, help="share of the decoder layers removed (default 0.4)")
    p.add_argument("--tokens", type=int, default=16, help="tokens generated per request, fixed (default 16)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length (default 2 s)")
    p.add_argument("--concurrency", default="1,8", help="requests decoded together (default 1,8)")
    p.add_argument("--repeats", type=int, default=5,
                   help="measured repeats per model and concurrency (tokens/s: the best; latency: the median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="load dtype (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--speed-of", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tokens < 2:
        raise SystemExit("error: --tokens must be at least 2 (a prefill token and one decoding step)")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.probe:
        return probe_main(args)
    if args.speed_of:
        return speed_main(args)

    import torch

    from speechllm.modeldir import load_model
    from speechllm.provenance import stamp

    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(args.work)
    base = Path(args.base) if args.base else work / "base"
    if not (base / "speechllm.json").is_file():
        if args.base:
            raise SystemExit(f"error: --base {base} is not a model dir: pass one, or leave --base out to build a twin")
        slimspeech("twin", "--shape", args.shape, "--out", str(base), "--device", args.device)
    from speechllm.provenance import Provenance

    base_layers = Provenance.read(base).decoder_layers or load_model(base).num_decoder_layers
    first, last = removed_block(base_layers, args.fraction)
    pruned = Path(args.pruned) if args.pruned else work / "pruned"
    if not (pruned / "speechllm.json").is_file():
        if args.pruned:
            raise SystemExit(f"error: --pruned {pruned} is not a model dir: pass one, or leave --pruned out")
        slimspeech("prune", "--model", str(base), "--layers", f"{first}-{last}", "--out", str(pruned))

    print("[bench_twin] peak memory, one process per model", file=sys.stderr, flush=True)
    memory = {"base": peak_memory(base, args), "pruned": peak_memory(pruned, args)}
    weights = {}
    for m, d in (("base", base), ("pruned", pruned)):  # one at a time (the weights are not even touched)
        model = load_model(d, dtype=getattr(torch, args.dtype))
        weights[m] = weight_figures(model)
        if m == "base":
            cfg = model.text_config()
        del model
    removed = weights["base"]["decoder_layers"] - weights["pruned"]["decoder_layers"]
    arithmetic_params = weights["base"]["parameters"] - removed * layer_parameters(cfg)
    speeds = speed({"base": base, "pruned": pruned}, args, levels)
    result = {**stamp("scripts/bench_twin.py"), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
              "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "device": args.device,
                          "torch_threads": torch.get_num_threads()},
              "base": str(base), "pruned": str(pruned), "removed_layers": list(range(first, last + 1)),
              "tokens": args.tokens, "seconds": args.seconds, "repeats": args.repeats, "weights": weights,
              "arithmetic_pruned_parameters": arithmetic_params, "memory": memory,
              "speed": {f"{m}@{c}": v for (m, c), v in speeds.items()}}
    report(result, weights, memory, speeds, levels, arithmetic_params)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def report(result, weights, memory, speeds, levels, arithmetic_params) -> None:
    b, p = weights["base"], weights["pruned"]
    ideal = b["per_token_bytes"] / p["per_token_bytes"]
    print(f"{result['created']}, {result['machine']['cpus']} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in result['machine']['load_average'])}, device {result['machine']['device']}, "
          f"torch threads {result['machine']['torch_threads']}")
    print(f"base {result['base']} ({b['decoder_layers']} decoder layers, {b['parameters'] / 1e9:.3f} B parameters, "
          f"{b['dtype']}); pruned {result['pruned']} (layers {result['removed_layers'][0]}-"
          f"{result['removed_layers'][-1]} removed, {p['decoder_layers']} left)")
    print(f"{result['tokens']} tokens generated per request (no early EOS), {result['seconds']:g} s clip "
          f"({speeds[('base', levels[0])]['prompt_tokens']} prompt tokens), {result['repeats']} repeats, models "
          "interleaved; tokens/s: the best repeat, latency: the median")
    print()
    rows = []  # (label, base, pruned, ratio, ideal)
    bytes_ratio = b["weight_bytes"] / p["weight_bytes"]
    arithmetic_ratio = b["parameters"] / arithmetic_params
    rows.append(("weight bytes (GB)", b["weight_bytes"] / 1e9, p["weight_bytes"] / 1e9, bytes_ratio, arithmetic_ratio))
    rows.append(("bytes read per generated token (GB)", b["per_token_bytes"] / 1e9, p["per_token_bytes"] / 1e9,
                 ideal, None))
    mb, mp = memory["base"], memory["pruned"]
    key = "cuda_peak_bytes" if mb.get("cuda_peak_bytes") is not None else "model_peak_rss_bytes"
    rows.append((f"peak memory, batch {mb['batch']} ({'CUDA' if key.startswith('cuda') else 'RSS'}, GB)",
                 mb[key] / 1e9, mp[key] / 1e9, mb[key] / mp[key], None))
    for c in levels:
        sb, sp = speeds[("base", c)], speeds[("pruned", c)]
        rows.append((f"decode tokens/s, {c} concurrent", sb["decode_tokens_per_s"], sp["decode_tokens_per_s"],
                     sp["decode_tokens_per_s"] / sb["decode_tokens_per_s"], ideal))
        rows.append((f"end-to-end tokens/s, {c} concurrent", sb["tokens_per_s"], sp["tokens_per_s"],
                     sp["tokens_per_s"] / sb["tokens_per_s"], ideal))
        rows.append((f"p50 latency (s), {c} concurrent", sb["p50_latency_s"], sp["p50_latency_s"],
                     sb["p50_latency_s"] / sp["p50_latency_s"], ideal))
    print(f"  {'':40} {'base':>9} {'pruned':>9} {'ratio':>7} {'ideal':>7} {'/ideal':>7}")
    for label, vb, vp, ratio, ref in rows:
        tail = f"{ref:6.3f}x {ratio / ref:7.3f}" if ref else f"{'':7} {'':7}"
        print(f"  {label:40} {vb:9.3f} {vp:9.3f} {ratio:6.3f}x {tail}")
    print("  (ratio: base / pruned for sizes, memory and latency; pruned / base for tokens/s. ideal: the bytes a "
          "generated token reads, base / pruned; for weight bytes: the parameter arithmetic)")
    print()
    s1 = speeds[("pruned", levels[0])]["decode_tokens_per_s"] / speeds[("base", levels[0])]["decode_tokens_per_s"]
    print("goals:")
    print(f"  decode tokens/s ratio at {levels[0]} concurrent >= {GOAL_SPEED} x ideal: {s1 / ideal:.3f} x  "
          f"{'yes' if s1 >= GOAL_SPEED * ideal else 'NO'}")
    off = abs(bytes_ratio / arithmetic_ratio - 1)
    print(f"  weight bytes ratio within {100 * GOAL_BYTES:g}% of the parameter arithmetic: {100 * off:.2f}%  "
          f"{'yes' if off <= GOAL_BYTES else 'NO'}")
    print(f"  peak memory ratio (reported): {mb[key] / mp[key]:.3f}x")


if __name__ == "__main__":
    sys.exit(main())
