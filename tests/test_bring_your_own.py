"""Bring your own SpeechLLM, end to end, once per source (slow tier): a replica in the published layout
(speechllm.builders: random weights, the real architecture classes, the published file names) -> the
``slimspeech import`` console script -> inspect -> analyze -> prune --fraction 0.25 -> heal (a few steps: LoRA
on the decoder's layers + the family's projector, merged) -> evaluate -> export -> ``slimspeech serve`` (uvicorn,
a child process) on the torch engine and on the vLLM engine (the exported language model on prompt embeddings),
both answering the ``openai`` client with the same greedy text as speechllm in-process.

    .venv/bin/python -m pytest -q -m slow tests/test_bring_your_own.py          # about a minute per source + vLLM
    .venv/bin/python -m pytest -q -m slow tests/test_bring_your_own.py -k voxtral

The quick per-family checks (token computation against each HF model's own, batch == one by one, surgery
equivalence, the merged LoRA against peft, every refusal) are tests/speechllm/test_import_hf.py and
test_import_slam.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from openai import OpenAI

from speechllm.builders import granite_speech_replica, qwen2_audio_replica, slam_llm_replica, voxtral_replica
from speechllm.generate import transcribe
from speechllm.inspect import read_header
from speechllm.modeldir import load_model
from speechllm.provenance import Provenance
from speechllm.tasks import Task
from tests.loadtests.live import bench_manifest  # noqa: F401  (3 espeak-ng clips with en/fr/de references)
from tests.conftest import run_slimspeech
from tests.server.conftest import VLLM_TEST_SETTINGS, ServerProcess, require_vllm

pytestmark = pytest.mark.slow

SOURCES = ["slam", "qwen2-audio", "voxtral", "granite-speech"]
SLIMSPEECH = Path(sys.executable).with_name("slimspeech")


def _replica(source: str, root: Path) -> tuple[list[str], Path]:
    """-> (the import options naming the replica's files, the dir holding the published decoder weights)."""
    if source == "slam":  # head_dim 32: the smallest vLLM's CPU attention runs
        s = slam_llm_replica(root / "slam-asr", hidden=64, heads=2, kv_heads=1)
        return ["--encoder", str(s["encoder"]), "--llm", str(s["llm"]), "--projector", str(s["projector"]),
                "--lora", str(s["lora"])], s["llm"]
    build, name = {"qwen2-audio": (qwen2_audio_replica, "Qwen2-Audio-7B-Instruct"),
                   "voxtral": (voxtral_replica, "Voxtral-Mini-3B-2507"),
                   "granite-speech": (granite_speech_replica, "granite-speech-3.3-2b")}[source]
    hf = build(root / name)
    if source == "granite-speech":
        # random Granite weights (embedding multiplier 12, residual multiplier 0.22, tied embeddings) repeat the
        # prompt's last token; the chat template's ends in <|end_of_role|>, which answers drop as a special token:
        # a transcription prompt ending in text makes the answers say something to compare
        return ["--hf", str(hf), "--prompt-transcribe",
                "<|start_of_role|>user<|end_of_role|>{audio}can you transcribe the speech into a written format?"], hf
    return ["--hf", str(hf)], hf


def _slimspeech(*argv) -> str:
    """``slimspeech *argv`` in this process; -> what it printed (exit code 0 asserted)."""
    proc = run_slimspeech(*argv)
    assert proc.returncode == 0, (argv, proc.stderr[-3000:])
    return proc.stdout


def _weight_names(folder: Path) -> set[str]:
    return {k for f in sorted(Path(folder).glob("model*.safetensors")) for k in read_header(f)}


def _pruned_names(names: set[str], prefix: str, kept: list[int]) -> set[str]:
    """The source's weight names after a prune that kept ``kept`` (original numbering) of the layers under
    ``prefix``: the others dropped, the kept ones renumbered 0, 1, ..."""
    out = set()
    for k in names:
        if not k.startswith(prefix):
            out.add(k)
            continue
        index, rest = k[len(prefix):].split(".", 1)
        if int(index) in kept:
            out.add(f"{prefix}{kept.index(int(index))}.{rest}")
    return out


def _answers(url: str, clips: list[bytes]) -> list[str]:
    """transcribe, translate fr, translate de of each clip, through the openai client."""
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    out = []
    for audio in clips:
        out.append(client.audio.transcriptions.create(file=("a.wav", audio), model="m").text)
        for lang in ("fr", "de"):
            out.append(client.audio.translations.create(file=("a.wav", audio), model="m",
                                                        extra_body={"target_language": lang}).text)
    return out


@pytest.mark.vllm
@pytest.mark.parametrize("source", SOURCES)
def test_published_dir_to_a_served_pruned_backbone(source, bench_manifest, speech_files, tmp_path):  # noqa: F811
    require_vllm()
    options, published = _replica(source, tmp_path / "published")
    base, pruned, healed, exported = (tmp_path / n for n in ("base", "pruned", "healed", "exported"))

    # import: the console script, as a user runs it
    proc = subprocess.run([str(SLIMSPEECH), "import", source, *options, "--languages", "fr,de",
                           "--max-new-tokens", "8", "--out", str(base)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("imported ") and len(proc.stdout.splitlines()) == 1
    model = load_model(base)
    layers = model.num_decoder_layers
    assert layers == 4

    # inspect: the parts and the decoder's share of the parameters
    info = json.loads(_slimspeech("inspect", "--json", base))
    assert info["decoder"]["layers"] == 4 and info["parameters"]["total"] == model.num_parameters()
    assert 0 < info["parameters"]["decoder_share"] < 1
    assert info["provenance"]["produced_by"] == f"slimspeech import {source}" and info["provenance"]["sources"]
    assert "of the parameters are the decoder's (4 layers)" in _slimspeech("inspect", base)

    # analyze (speech and text inputs) -> prune a quarter of the layers
    _slimspeech("analyze", "--model", base, "--data", bench_manifest, "--out", tmp_path / "analysis", "--no-plots")
    analysis = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert {"speech", "text"} <= set(json.dumps(analysis).replace('"', " ").split())
    _slimspeech("prune", "--model", base, "--analysis", tmp_path / "analysis", "--fraction", "0.25", "--out", pruned)
    prov = Provenance.read(pruned)
    assert len(prov.removed_layers) == 1 and len(prov.kept_layers) == 3 and prov.analysis

    # heal: LoRA on the decoder's layers and the projector, the encoder untouched, LoRA merged
    _slimspeech("heal", "--model", pruned, "--data", bench_manifest, "--out", healed, "--steps", "3",
                "--batch-size", "2", "--warmup", "1", "--lora-r", "4", "--seed", "0")
    before, after = load_model(pruned), load_model(healed)
    assert after.num_decoder_layers == 3 and Provenance.read(healed).healing
    changed = {n for n, p in after.named_parameters()
               if not torch.equal(p, dict(before.named_parameters())[n])}
    assert changed and not [n for n in changed if "lora" in n]
    assert all(n.startswith(after.decoder_prefixes + after.projector_prefixes) for n in changed), \
        sorted(n for n in changed if not n.startswith(after.decoder_prefixes + after.projector_prefixes))[:5]
    assert any(n.startswith(after.projector_prefixes) for n in changed)
    assert any(n.startswith(after.decoder_prefixes) and ".layers." in n for n in changed)
    adapter = json.loads((Path(f"{healed}.work") / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4

    # evaluate against the unpruned import, then export with the scores
    _slimspeech("evaluate", "--model", healed, "--base", base, "--data", bench_manifest, "--out",
                tmp_path / "eval.json")
    _slimspeech("export", "--model", healed, "--eval", tmp_path / "eval.json", "--dtype", "float32", "--out", exported)
    final = load_model(exported)
    prov = Provenance.read(exported)
    assert prov.produced_by == "slimspeech export" and prov.scores and prov.extra["export"]["verified"]
    assert [r.produced_by for r in prov.lineage][0] == f"slimspeech import {source}"
    assert prov.extra["sources"] == Provenance.read(base).extra["sources"]  # an import's sources stay listed

    # the published weight names: the source's, minus the removed layer, renumbered (what loads elsewhere)
    sub, prefix = final.saved_decoder()
    source_prefix = prefix if source != "slam" else "model.layers."
    assert _weight_names(exported / sub) == _pruned_names(_weight_names(published), source_prefix, prov.kept_layers)
    if source != "slam":
        hf, info = final.table.hf_class().from_pretrained(exported / "hf", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]

    # serve it: torch, then vLLM (the exported language model), answering the openai client alike
    clips = [open(f, "rb").read() for f in speech_files[:2]]
    tasks = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]
    from speechllm.audio import load_audio

    want = [t for c in clips for t in transcribe(final, [load_audio(c)] * 3, tasks)]
    got = {}
    for engine in ("torch", "vllm"):
        extra = ["--engine", engine]
        if engine == "vllm":
            extra += ["--vllm-args", json.dumps(VLLM_TEST_SETTINGS["vllm_args"])]
        server = ServerProcess({"m": str(exported)}, *extra)
        try:
            got[engine] = _answers(server.url, clips)
        finally:
            server.stop()
    assert got["torch"] == want
    assert got["vllm"] == want
    assert any(got["torch"])  # something was said
