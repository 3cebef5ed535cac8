"""prune: the analysis' best block per fraction, any family, provenance, and clear errors for bad input."""

import json

import numpy as np
import pytest
import torch

from prune_tools.analyze import analyze_model, write_outputs
from prune_tools.prune import block_size, prune
from speechllm import cli
from speechllm.builders import tiny_qwen2_audio, tiny_slam
from speechllm.errors import SlimError
from speechllm.modeldir import load_model, read_provenance
from speechllm.provenance import ModelRef, Provenance
from speechllm.surgery import skip_layers
from speechllm.tasks import Task
from tests.conftest import write_wav

TASKS = [Task("transcribe"), Task("translate", "fr")]




def _logits(model, x):
    with torch.no_grad():
        return model.lm(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask,
                        position_ids=x.position_ids).logits


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory):
    """Clips short enough for tiny qwen2_audio's 2 s window."""
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    return [write_wav(d / f"c{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32))
            for i, n in enumerate((16000, 9000, 12000))]


@pytest.fixture(scope="module", params=["slam", "qwen2_audio"])
def analysed(request, tmp_path_factory, short_clips):
    """(family, model dir, analysis dir) of a 6-layer model."""
    d = tmp_path_factory.mktemp(request.param)
    model = tiny_slam("qwen2", layers=6) if request.param == "slam" else tiny_qwen2_audio(layers=6)
    model.save(d / "base", provenance={"built_by": "tests"})
    rows = [{"id": str(i), "audio": a, "text": "the small dog", "translation": {"fr": "le petit chien"}}
            for i, a in enumerate(short_clips)]
    a = analyze_model(load_model(d / "base"), rows, tasks=TASKS, batch_size=3, model_dir=d / "base",
                      progress=False)
    write_outputs(a, d / "analysis", plots=False)
    return request.param, d / "base", d / "analysis"


def test_fraction_removes_the_best_block(analysed, tmp_path, short_clips):
    family, base_dir, analysis = analysed
    a = json.loads((analysis / "analysis.json").read_text())
    prov = prune(base_dir, tmp_path / "p", analysis=analysis, fraction=0.34)  # round(0.34 * 6) = 2 layers
    best = a["results"]["last"]["speech"]["transcribe"]["best"][1]
    assert prov.removed_layers == best["layers"] == prov.removed_from_parent
    assert prov.kept_layers == [i for i in range(6) if i not in best["layers"]]
    assert prov.parent.dir == str(base_dir.resolve()) and prov.parent.decoder_layers == 6
    assert prov.analysis["start"] == best["start"] and prov.analysis["fraction"] == 0.34
    assert prov.analysis["fingerprint"] == ModelRef.from_dict(a["model"]).fingerprint == prov.parent.fingerprint
    assert Provenance.read(tmp_path / "p") == prov and read_provenance(tmp_path / "p") == prov.to_dict()
    pruned, base = load_model(tmp_path / "p"), load_model(base_dir)
    assert pruned.family == family and pruned.num_decoder_layers == 4
    # the pruned model is the base with exactly those layers skipped
    from speechllm.audio import load_audio

    wavs = [load_audio(f) for f in short_clips[:2]]
    x = base.embed(TASKS, wavs)
    with skip_layers(base, best["layers"]):
        ref = _logits(base, x)
    assert torch.allclose(_logits(pruned, pruned.embed(TASKS, wavs)), ref, atol=1e-5)

    # another condition of the same analysis: the mean over tasks, text inputs
    prov2 = prune(base_dir, tmp_path / "p2", analysis=analysis, fraction=0.5, input="text", task="average")
    assert prov2.removed_layers == a["results"]["last"]["text"]["average"]["best"][2]["layers"]


def test_explicit_layers_and_pruning_twice(tmp_path):
    tiny_slam("llama", layers=6).save(tmp_path / "base")
    first = prune(tmp_path / "base", tmp_path / "p1", layers="1")
    assert first.kept_layers == [0, 2, 3, 4, 5] and first.analysis is None
    second = prune(tmp_path / "p1", tmp_path / "p2", layers=[0, 3])
    # numbered in the original model's layers; removed_from_parent in the parent's
    assert second.kept_layers == [2, 3, 5] and second.removed_layers == [0, 1, 4]
    assert second.removed_from_parent == [0, 3] and second.root_decoder_layers == 6
    assert load_model(tmp_path / "p2").num_decoder_layers == 3


def test_block_size_rounding():
    assert block_size(0.3, 12) == 4 and block_size(0.25, 12) == 3 and block_size(0.125, 12) == 2
    assert block_size(0.35, 10) == 4  # half up, despite 0.35 * 10 = 3.4999...
    with pytest.raises(SlimError, match="would remove all 6"):
        block_size(0.95, 6)
    with pytest.raises(SlimError, match="rounds to 0"):
        block_size(0.05, 6)
    with pytest.raises(SlimError, match="outside"):
        block_size(1.0, 6)


def _cli(capsys, *args):
    code = cli.main(["prune", *map(str, args)])
    return code, capsys.readouterr()


@pytest.mark.parametrize("analysed", ["slam"], indirect=True)  # family-independent checks: once is enough
def test_bad_input_is_one_clear_line(analysed, tmp_path, capsys):
    family, base_dir, analysis = analysed
    code, io = _cli(capsys, "--model", base_dir, "--analysis", analysis, "--fraction", 0.95, "--out", tmp_path / "x")
    assert code == 2 and "would remove all 6 decoder layers" in io.err
    code, io = _cli(capsys, "--model", base_dir, "--layers", "0-5", "--out", tmp_path / "x")
    assert code == 2 and "leave none" in io.err
    # an analysis of another model: same architecture, other weights
    other = tmp_path / "other"
    tiny_slam("qwen2", layers=6, seed=1).save(other)
    code, io = _cli(capsys, "--model", other, "--analysis", analysis, "--fraction", 0.3, "--out", tmp_path / "x")
    assert code == 2 and "computed on another model" in io.err and "slimspeech analyze" in io.err
    # an analysis of the unpruned model applied to a pruned one
    prune(base_dir, tmp_path / "p", layers="2")
    code, io = _cli(capsys, "--model", tmp_path / "p", "--analysis", analysis, "--fraction", 0.3,
                    "--out", tmp_path / "x")
    assert code == 2 and "6 decoder layers" in io.err and "this model has 5" in io.err
    code, io = _cli(capsys, "--model", base_dir, "--fraction", 0.3, "--out", tmp_path / "x")
    assert code == 2 and "--fraction needs --analysis" in io.err
    code, io = _cli(capsys, "--model", base_dir, "--analysis", tmp_path / "nowhere", "--fraction", 0.3,
                    "--out", tmp_path / "x")
    assert code == 2 and "analysis file not found" in io.err
    code, io = _cli(capsys, "--model", base_dir, "--analysis", analysis, "--fraction", 0.3, "--task", "translate:de",
                    "--out", tmp_path / "x")
    assert code == 2 and "no condition" in io.err and "--task translate_fr" in io.err
    assert not (tmp_path / "x").exists()
    code, io = _cli(capsys, "--model", base_dir, "--analysis", analysis, "--fraction", 0.3, "--out", tmp_path / "ok")
    assert code == 0 and "removed layers" in io.out and "4 decoder layers left" in io.out
