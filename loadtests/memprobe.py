"""Peak memory of one model in a fresh process: load it, run one batch, print a JSON line.

    python -m loadtests.memprobe MODEL_DIR --audio a.wav --audio b.wav [--device cpu] [--threads 1]

Prints ``{"rss_after_imports_bytes", "peak_rss_after_load_bytes", "peak_rss_after_inference_bytes",
"model_peak_rss_bytes", "cuda_peak_bytes", ...describe()}``. Peak RSS is the process's high-water
mark (VmHWM), so each model needs its own process: ``slimspeech compare`` runs one per model.
After the imports (torch, transformers, the model's modules) the mark is reset to the current RSS
(``/proc/self/clear_refs``), so ``model_peak_rss_bytes`` = peak after inference - RSS after the
imports is what the model itself costs: weights + activations + KV cache.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys


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
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def warm_imports(model_dir: str) -> None:
    """Import what loading will import (the family, the decoder's modeling module, the tokenizer) and run
    one small matmul, so that the baseline holds the libraries and the peak less the baseline is the model."""
    from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.memprobe", description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--audio", action="append", default=[], help="clip(s) run as one batch after loading")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    print(json.dumps(probe(args.model_dir, args.audio, args.device, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
