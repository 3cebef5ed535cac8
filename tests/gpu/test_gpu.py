"""The GPU path: the torch engine on CUDA in bf16 and fp16, surgery and healing on CUDA, the vLLM engine
on the GPU where vLLM is installed, CUDA memory metrics, and pruned-vs-base weight and peak-memory ratios.

    pytest -m gpu tests/gpu -s        # prints the figures scripts/gpu_check.sh records in docs/gpu.md

Reduced precision changes greedy text a little (ties and near-ties flip): fp32 on CUDA must equal the
CPU exactly in tokens; bf16/fp16 batched vs one-by-one must agree on at least AGREEMENT of the clips.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.audio import load_audio
from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.surgery import remove_decoder_layers, skip_layers
from speechllm.tasks import Task

pytestmark = pytest.mark.gpu
TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]
#: share of clips whose greedy text must be identical batched and one by one in bf16 / fp16
AGREEMENT = 0.75
FIGURES = Path("gpu-figures.jsonl")  # appended by each test; scripts/gpu_check.sh collects it


def record(**figures) -> None:
    print(json.dumps(figures))
    with FIGURES.open("a") as f:
        f.write(json.dumps(figures) + "\n")


def _audio_paths(bench_manifest) -> list[str]:
    from prune_tools.rows import read_rows

    return [r["audio"] for r in read_rows(bench_manifest)]  # resolved against the manifest's folder


def _clips(bench_manifest) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    speech = [sf.read(p, dtype="float32")[0] for p in _audio_paths(bench_manifest)]
    return speech + [(0.05 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 9000, 23000)]


def test_fp32_on_cuda_equals_cpu(model_pair, bench_manifest):
    clips = _clips(bench_manifest)
    tasks = [TASKS[i % 3] for i in range(len(clips))]
    cpu = transcribe(load_model(model_pair["base"]), clips, tasks)
    cuda = transcribe(load_model(model_pair["base"], device="cuda"), clips, tasks)
    assert cuda == cpu


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_batch_matches_one_by_one(model_pair, bench_manifest, dtype):
    model = load_model(model_pair["base"], device="cuda", dtype=dtype)
    clips = _clips(bench_manifest)
    tasks = [TASKS[i % 3] for i in range(len(clips))]
    batched = transcribe(model, clips, tasks, batch_size=len(clips))
    alone = [transcribe(model, [c], [t])[0] for c, t in zip(clips, tasks)]
    same = sum(a == b for a, b in zip(batched, alone)) / len(clips)
    record(check="batch_vs_one_by_one", dtype=str(dtype).replace("torch.", ""), agreement=same)
    assert same >= AGREEMENT, list(zip(batched, alone))


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_surgery_equals_skipping_on_cuda(model_pair, bench_manifest, dtype, atol):
    model = load_model(model_pair["base"], device="cuda", dtype=dtype)
    inputs = model.embed(TASKS, _clips(bench_manifest)[:3])

    def logits(m):
        with torch.no_grad():
            return m.lm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                        position_ids=inputs.position_ids).logits.float()

    with skip_layers(model, [1, 2]):
        skipped = logits(model)
    pruned = copy.deepcopy(model)
    remove_decoder_layers(pruned, [1, 2])
    assert torch.allclose(logits(pruned), skipped, atol=atol)


def test_healing_a_few_steps_on_cuda(model_pair, bench_manifest, tmp_path):
    from prune_tools.heal import HealConfig, heal

    cfg = HealConfig(steps=6, batch_size=3, ckpt_every=6, warmup=0, ctc_weight=0.0)
    heal(model_pair["pruned"], [str(bench_manifest)], tmp_path / "healed", cfg, work=tmp_path / "work",
         device="cuda", progress=False)
    log = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(np.isfinite(r["loss"]) for r in log)
    record(check="heal_cuda", first_loss=log[0]["loss"], last_loss=log[-1]["loss"])
    assert load_model(tmp_path / "healed", device="cuda").num_decoder_layers == 2


def _serve(models: dict, engine: str, dtype: str):
    from server.settings import Settings
    from tests.server.conftest import InProcessServer

    kw = {"vllm_args": {"enforce_eager": True}} if engine == "vllm" else {}
    return InProcessServer(Settings(models=models, engine=engine, device="cuda", dtype=dtype, **kw))


@pytest.mark.parametrize("engine", ["torch", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_engines_serve_on_cuda_with_memory_metrics(model_pair, bench_manifest, engine):
    if engine == "vllm":
        pytest.importorskip("vllm", reason="vLLM is not installed on this GPU machine")
    from prometheus_client.parser import text_string_to_metric_families

    audio = Path(_audio_paths(bench_manifest)[0]).read_bytes()
    server = _serve(model_pair, engine, "float32")
    try:
        texts = {m: server.transcribe(audio, model=m).json()["text"] for m in model_pair}
        fams = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
        allocated = fams["slimspeech_cuda_memory_allocated_bytes"].samples[0].value
        peak = fams["slimspeech_cuda_memory_peak_bytes"].samples[0].value
    finally:
        server.close()
    # the vLLM engine's greedy text equals the torch engine's on the same device and dtype
    ref = {m: transcribe(load_model(p, device="cuda"), [load_audio(audio)])[0] for m, p in model_pair.items()}
    record(check="serve_cuda", engine=engine, allocated_bytes=allocated, peak_bytes=peak)
    assert allocated > 0 and peak >= allocated
    assert texts == ref


def test_pruned_vs_base_weight_and_peak_memory(model_pair, bench_manifest):
    """Weight bytes and peak CUDA memory of a batch, pruned / base, beside the ideal from the layer counts."""
    clips = _clips(bench_manifest)
    figures = {}
    for name, path in model_pair.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = load_model(path, device="cuda", dtype=torch.bfloat16)
        transcribe(model, clips, [Task()] * len(clips), batch_size=len(clips))
        figures[name] = {"weight_bytes": model.weight_bytes(), "peak_bytes": torch.cuda.max_memory_allocated(),
                         "layers": model.num_decoder_layers}
        del model
    weight_ratio = figures["pruned"]["weight_bytes"] / figures["base"]["weight_bytes"]
    peak_ratio = figures["pruned"]["peak_bytes"] / figures["base"]["peak_bytes"]
    record(check="pruned_vs_base", weight_ratio=weight_ratio, peak_ratio=peak_ratio,
           layers=f"{figures['pruned']['layers']}/{figures['base']['layers']}")
    assert weight_ratio < 1.0 and peak_ratio <= 1.0 + 0.05
