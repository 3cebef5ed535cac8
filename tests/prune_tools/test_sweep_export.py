"""sweep (analyze once, prune + heal + evaluate per fraction, curve, ablation) and export, on a tiny model."""

import json

import pytest
import torch

from prune_tools.export import export
from prune_tools.prune import prune
from speechllm import cli
from speechllm.builders import tiny_qwen2_audio, tiny_slam
from speechllm.errors import SlimError
from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.provenance import Provenance, model_fingerprint, stamped_by
from speechllm.tasks import Task
from tests.conftest import TEXTS, make_manifest




@pytest.fixture(scope="module")
def swept(tmp_path_factory, speech_files):
    d = tmp_path_factory.mktemp("sweep")
    tiny_slam("llama", layers=5).save(d / "base", provenance={"built_by": "tests"})
    train = make_manifest(d / "train.jsonl", speech_files)
    a = make_manifest(d / "test-a.jsonl", speech_files[:2], TEXTS[:2])
    b = make_manifest(d / "test-b.jsonl", speech_files[1:], TEXTS[1:])
    args = ["sweep", "--model", str(d / "base"), "--data", train, "--eval-data", a, b, "--out", str(d / "out"),
            "--fractions", "0.2,0.4", "--heal-steps", "2", "--heal-batch-size", "2", "--heal-warmup", "0",
            "--analysis-limit", "3", "--eval-batch-size", "3", "--device", "cpu"]
    assert cli.main(args) == 0
    return d, args


def test_sweep_outputs(swept, capsys):
    d, args = swept
    out = d / "out"
    r = json.loads((out / "sweep.json").read_text())
    assert stamped_by(r) == "slimspeech sweep" and r["base"]["decoder_layers"] == 5
    assert [p["fraction"] for p in r["points"]] == [0.2, 0.4]
    assert [p["decoder_layers"] for p in r["points"]] == [4, 3]
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    best = analysis["results"]["last"]["speech"]["transcribe"]["best"]
    assert r["points"][1]["removed_layers"] == best[1]["layers"]  # the analysis' best 2-layer block
    for p in r["points"]:
        assert set(p["relative_degradation"]) == {"transcribe", "translate_fr", "translate_de"}
        assert set(p["relative_degradation"]["transcribe"]) == {"test-a", "test-b"}
        assert p["healing"]["steps"] == 2
    assert set(r["max_fraction"]) == {"transcribe", "translate_fr", "translate_de", "all_tasks"}
    for label, f in r["max_fraction"].items():  # the largest fraction within tolerance on every split
        ok = [p["fraction"] for p in r["points"] if all(
            all(p["within_tolerance"][t].values()) for t in (r["max_fraction"] if label == "all_tasks" else [label])
            if t != "all_tasks")]
        assert f == (max(ok) if ok else None)
    abl = json.loads((out / "ablation.json").read_text())
    assert list(abl["variants"]) == ["none", "lora", "projector", "both"]
    assert abl["fraction"] == (r["max_fraction_transcribe"] or 0.2)  # default: the largest within tolerance
    table = (out / "ablation.md").read_text()
    for row in ("base (unpruned)", "none (pruned only)", "LoRA only", "projector only", "LoRA + projector"):
        assert f"| {row} |" in table
    assert (out / "degradation.png").read_bytes()[:4] == b"\x89PNG"
    assert "Largest fraction within tolerance" in (out / "sweep.md").read_text()
    eval_report = json.loads((out / "f0.20" / "eval.json").read_text())
    assert eval_report["tolerance"] == 0.25 and "relative_degradation" in eval_report
    # every model dir the sweep made says how it scored
    for model_dir in (out / "f0.20" / "healed", out / f"f{abl['fraction']:.2f}" / "pruned",
                      out / f"ablation-f{abl['fraction']:.2f}" / "lora"):
        scores = Provenance.read(model_dir).scores
        assert set(scores["model"]) == {"test-a", "test-b"} and "relative_degradation" in scores

    # a re-run reuses every step; other settings in the same dir are refused
    before = (out / "f0.20" / "healed" / "provenance.json").stat().st_mtime_ns
    assert cli.main(args) == 0
    assert (out / "f0.20" / "healed" / "provenance.json").stat().st_mtime_ns == before
    capsys.readouterr()
    assert cli.main([*args, "--heal-lr", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert cli.main([*args[:args.index("--fractions") + 1], "1.0", *args[args.index("--fractions") + 2:]]) == 2


def test_evaluate_then_export(swept, tmp_path, capsys, speech_files):
    d, _ = swept
    healed = d / "out" / "f0.20" / "healed"
    report = tmp_path / "eval.json"
    code = cli.main(["evaluate", "--model", str(healed), "--base", str(d / "base"), "--data",
                     str(d / "test-a.jsonl"), "--out", str(report)])
    assert code == 0, capsys.readouterr().err
    table = report.with_suffix(".md").read_text()  # the README-style table, from the same numbers as the JSON
    scores = json.loads(report.read_text())["model"]["scores"]["test-a"]
    row = table.splitlines()[2]
    assert row.startswith("| test-a | ") and f"{scores['transcribe']['wer']:.2f}" in row
    assert f"{scores['translate_de']['bleu']:.1f} / {scores['translate_de']['chrf']:.1f}" in row
    assert capsys.readouterr().out == table
    code = cli.main(["export", "--model", str(healed), "--eval", str(report), "--out", str(tmp_path / "final")])
    assert code == 0, capsys.readouterr().err
    assert "exported 4-layer backbone (float16)" in capsys.readouterr().out
    prov = Provenance.read(tmp_path / "final")
    assert prov.produced_by == "slimspeech export" and prov.dtype == "float16"
    assert prov.scores["model"]["test-a"]["transcribe"]["wer"] >= 0
    assert "bleu" in prov.scores["model"]["test-a"]["translate_fr"]
    assert set(prov.scores["relative_degradation"]["test-a"]) == {"transcribe", "translate_fr", "translate_de"}
    assert len(prov.kept_layers) == 4 and prov.healing["steps"] == 2 and prov.analysis["fraction"] == 0.2
    assert [x.produced_by for x in prov.lineage] == [None, "slimspeech prune", "slimspeech heal"]
    # the export's own identity and size: its float32 source's fingerprint, float16 bytes, nothing stale
    final = load_model(tmp_path / "final")
    assert prov.fingerprint == model_fingerprint(final) == model_fingerprint(load_model(healed))
    assert prov.parent.fingerprint == prov.fingerprint
    assert prov.weight_bytes == 2 * prov.parameters == final.half().weight_bytes()
    raw = json.loads((tmp_path / "final" / "provenance.json").read_text())
    assert raw["schema_version"] == 2 and raw["weight_bytes"] == prov.weight_bytes and raw["dtype"] == "float16"
    assert "weight_bytes" not in json.dumps(raw["extra"])
    # decoder/ is a plain HF causal LM with the pruned depth and no LoRA
    from transformers import AutoModelForCausalLM

    dec = AutoModelForCausalLM.from_pretrained(tmp_path / "final" / "decoder")
    assert dec.config.num_hidden_layers == 4 and len(dec.model.layers) == 4 and dec.dtype == torch.float16
    ref = load_model(healed)
    assert torch.allclose(dec.model.layers[2].mlp.up_proj.weight.float(),
                          ref.decoder.model.layers[2].mlp.up_proj.weight, atol=1e-2)
    from speechllm.audio import load_audio

    assert len(transcribe(load_model(tmp_path / "final"), [load_audio(speech_files[0])], Task("translate", "de"))) == 1

    # a report of another model is refused
    code = cli.main(["export", "--model", str(d / "base"), "--eval", str(report), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "is of a slam model with 4 decoder layers" in err and not (tmp_path / "x").exists()
    # so is one of another model of the same family, depth and size: the pruned dir before healing
    pruned = d / "out" / "f0.20" / "pruned"
    other = tmp_path / "eval-pruned.json"
    assert cli.main(["evaluate", "--model", str(pruned), "--data", str(d / "test-a.jsonl"), "--out", str(other)]) == 0
    assert json.loads(other.read_text())["model"]["parameters"] == json.loads(report.read_text())["model"]["parameters"]
    capsys.readouterr()
    code = cli.main(["export", "--model", str(healed), "--eval", str(other), "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "y").exists()
    assert model_fingerprint(load_model(pruned)) in err and model_fingerprint(load_model(healed)) in err


def test_export_qwen2_audio(tmp_path):
    tiny_qwen2_audio(layers=4).save(tmp_path / "base")
    prune(tmp_path / "base", tmp_path / "p", layers="1")
    prov = export(tmp_path / "p", tmp_path / "e", dtype="float32")
    assert prov.extra["export"]["verified"]["decoder_layers"] == 3 and prov.scores is None
    assert prov.dtype == "float32" and prov.fingerprint == model_fingerprint(load_model(tmp_path / "p"))
    m = load_model(tmp_path / "e")
    assert m.family == "qwen2_audio" and m.text_config().num_hidden_layers == 3
    with pytest.raises(SlimError, match="eval report not found"):
        export(tmp_path / "p", tmp_path / "e2", eval_report=tmp_path / "nope.json")


def test_tolerance_rule():
    from prune_tools.export import within_tolerance

    assert within_tolerance(0.25, {"wer": 12.5}, {"wer": 10.0}) and not within_tolerance(0.3, {"wer": 13}, {"wer": 10})
    assert within_tolerance(-0.5, {"bleu": 30}, {"bleu": 20})
    # a zero base: the ratio is undefined; a WER must stay 0, a BLEU cannot get worse than 0
    assert within_tolerance(None, {"wer": 0.0}, {"wer": 0.0}) and not within_tolerance(None, {"wer": 5.0}, {"wer": 0.0})
    assert within_tolerance(None, {"bleu": 3.2}, {"bleu": 0.0})
