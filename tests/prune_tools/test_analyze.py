"""analyze: angular distances equal a direct computation from output_hidden_states; outputs; bad input."""

import csv
import json
import math

import pytest
import torch

from prune_tools.analyze import (DistanceAccumulator, agreement, analyze_model, best_blocks, residual_states,
                                 spearman, text_inputs)
from prune_tools.lineage import model_fingerprint
from speechllm import cli
from speechllm.audio import load_audio
from speechllm.builders import tiny_slam
from speechllm.modeldir import load_model
from speechllm.provenance import stamped_by
from speechllm.tasks import Task
from tests.conftest import DE, FR, TEXTS, make_manifest

@pytest.fixture(scope="module")
def model():
    return tiny_slam("llama", layers=6).eval()


def _direct(states, mask, mode):
    """d(i, j) straight from a list of (B, T, D) states, mean over utterances (last) or tokens (mean)."""
    L1 = len(states)
    out = torch.zeros(L1, L1, dtype=torch.float64)
    B = mask.shape[0]
    for i in range(L1):
        for j in range(L1):
            vals = []
            for b in range(B):
                idx = mask[b].nonzero().flatten().tolist()
                for t in ([idx[-1]] if mode == "last" else idx):
                    c = torch.nn.functional.cosine_similarity(states[i][b, t].detach().double(),
                                                              states[j][b, t].detach().double(), 0)
                    vals.append(math.acos(max(-1.0, min(1.0, float(c)))) / math.pi)
            out[i, j] = sum(vals) / len(vals)
    return out


def test_analyze_equals_direct_computation_from_hidden_states(model, speech_files, tmp_path):
    rows = [{"id": str(i), "audio": a, "text": t, "translation": {"fr": FR[i], "de": DE[i]}}
            for i, (a, t) in enumerate(zip(speech_files, TEXTS))]
    # batch size 2: two batches with different padding, accumulated by running sums
    a = analyze_model(model, rows, inputs=("speech", "text"), tasks=[Task()], tokens=("last", "mean"), batch_size=2,
                      progress=False)
    L = model.num_decoder_layers
    wavs = [load_audio(f) for f in speech_files]
    for inp, x in (("speech", model.embed([Task()] * 3, wavs)), ("text", text_inputs(model, TEXTS))):
        with torch.no_grad():
            hs = model.lm(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask,
                          position_ids=x.position_ids, output_hidden_states=True).hidden_states
        assert len(hs) == L + 1
        for mode in ("last", "mean"):
            ref = _direct(hs[:L], x.attention_mask, mode)  # hidden_states[L] is after the final norm: not used
            matrix = a["results"][mode][inp]["transcribe"]["matrix"]
            for n in range(1, L):
                for l in range(L - n):
                    assert matrix[n - 1][l] == pytest.approx(float(ref[l, l + n]), abs=2e-5), (inp, mode, n, l)
            assert all(v is None for v in matrix[L - 1][1:])  # l + n > L
        # h_L comes from before the final norm: normed, it is HF's last hidden state
        states = residual_states(model, x.inputs_embeds, x.attention_mask, x.position_ids)
        for l in range(L):
            assert torch.allclose(states[l], hs[l], atol=1e-6)
        assert not torch.allclose(states[L], hs[L], atol=1e-3)
        with torch.no_grad():
            assert torch.allclose(model.decoder_stack().norm(states[L]), hs[L], atol=1e-5)
    assert a["data"]["counts"] == {"speech/transcribe": 3, "text/transcribe": 3}
    assert a["results"]["mean"]["speech"]["transcribe"]["units"] > 3  # tokens, not utterances


def test_running_sums_do_not_depend_on_batching(model, noise_wavs):
    x = model.embed([Task()] * 4, noise_wavs)
    whole, parts = DistanceAccumulator(6, ("last", "mean")), DistanceAccumulator(6, ("last", "mean"))
    whole.update(model, x.inputs_embeds, x.attention_mask, x.position_ids)
    for chunk in ([0], [1, 2, 3]):
        y = model.embed([Task()] * len(chunk), [noise_wavs[i] for i in chunk])
        parts.update(model, y.inputs_embeds, y.attention_mask, y.position_ids)
    for mode in ("last", "mean"):
        assert torch.allclose(whole.pair_means(mode), parts.pair_means(mode), atol=1e-5)
        assert whole.sums[mode].shape == (7, 7)  # (L+1)^2 whatever the number of utterances


def test_best_blocks_and_agreement():
    m = [[0.3, 0.1, 0.2, 0.4], [0.5, 0.2, 0.6, None], [0.7, 0.8, None, None], [0.9, None, None, None]]
    best = best_blocks(m)
    assert [(b["n"], b["start"], b["layers"]) for b in best] == [(1, 1, [1]), (2, 1, [1, 2]), (3, 0, [0, 1, 2])]
    same = agreement(m, m)
    assert same["spearman"] == 1.0 and same["best_same_fraction"] == 1.0
    flipped = [[None if v is None else -v for v in row] for row in m]
    assert agreement(m, flipped)["spearman"] == -1.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_fingerprint_ignores_dtype_not_weights(model):
    import copy

    fp = model_fingerprint(model)
    # float32 weights: their float16 copy (an export) hashes the same; a bfloat16 copy as loaded_as says
    assert model_fingerprint(copy.deepcopy(model).half()) == fp
    assert model_fingerprint(copy.deepcopy(model).to(torch.bfloat16)) == model_fingerprint(model,
                                                                                          loaded_as=torch.bfloat16)
    assert model_fingerprint(copy.deepcopy(model).half()) == model_fingerprint(copy.deepcopy(model).half().float())
    # float16-stored weights (the shipped demo) loaded in bfloat16, as analyze on a GPU does: the same
    half = copy.deepcopy(model).half()
    assert model_fingerprint(copy.deepcopy(half).to(torch.bfloat16)) == model_fingerprint(half) == fp
    assert model_fingerprint(tiny_slam("llama", layers=6, seed=1)) != fp


def test_cli_writes_json_csv_heatmaps(tmp_path, speech_files, capsys):
    model_dir = tmp_path / "m"
    tiny_slam("qwen2", layers=5).save(model_dir, provenance={"built_by": "tests"})
    manifest = make_manifest(tmp_path / "dev.jsonl", speech_files)
    out = tmp_path / "analysis"
    code = cli.main(["analyze", "--model", str(model_dir), "--data", manifest, "--out", str(out),
                     "--tokens", "both", "--batch-size", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "speech vs text Spearman" in capsys.readouterr().out
    a = json.loads((out / "analysis.json").read_text())
    assert stamped_by(a) == "slimspeech analyze"
    assert a["model"]["fingerprint"] == model_fingerprint(load_model(model_dir)) and a["model"]["dtype"] == "float32"
    assert a["model"]["decoder_layers"] == 5 and a["model"]["dir"] == str(model_dir.resolve())
    assert a["tasks"] == ["transcribe", "translate_fr", "translate_de"]
    for tok in ("last", "mean"):
        for inp in ("speech", "text"):
            conds = a["results"][tok][inp]
            assert set(conds) == {"transcribe", "translate_fr", "translate_de", "average"}
            assert [b["n"] for b in conds["transcribe"]["best"]] == [1, 2, 3, 4]
        sv = a["agreement"][tok]["speech_vs_text"]["translate_fr"]
        assert -1 <= sv["spearman"] <= 1 and set(sv["best_same"]) == {"1", "2", "3", "4"}
        assert set(a["agreement"][tok]["between_tasks"]["speech"]) == {
            "transcribe|translate_fr", "transcribe|translate_de", "translate_fr|translate_de"}
    with open(out / "distances.csv") as f:
        rows = list(csv.DictReader(f))
    # 2 token modes x 2 inputs x 4 conditions x (5+4+3+2+1) blocks
    assert len(rows) == 2 * 2 * 4 * 15
    for name in ("heatmaps_last.png", "heatmaps_mean.png", "best_blocks.csv",
                 "analysis.md"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "heatmaps_last.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_names_missing_audio(tmp_path, speech_files, tiny_slam_dir, capsys):
    manifest = make_manifest(tmp_path / "bad.jsonl", [speech_files[0], tmp_path / "gone.wav"])
    code = cli.main(["analyze", "--model", str(tiny_slam_dir), "--data", manifest, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and "gone.wav" in err and err.startswith("error:")
    assert not (tmp_path / "a").exists()


def test_cli_rejects_missing_translation(tmp_path, speech_files, tiny_slam_dir, capsys):
    path = tmp_path / "asr.jsonl"
    path.write_text(json.dumps({"id": "x1", "audio": speech_files[2], "text": "hello"}) + "\n")
    code = cli.main(["analyze", "--model", str(tiny_slam_dir), "--data", str(path), "--out", str(tmp_path / "a"),
                     "--tasks", "transcribe,translate:fr"])
    err = capsys.readouterr().err
    assert code == 2 and "'x1'" in err and "translate:fr" in err
