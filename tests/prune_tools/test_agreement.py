"""slimspeech agreement: Spearman and best-block agreement between every pair of analysed conditions."""

import json

import pytest
from scipy import stats

from prune_tools.analyze import analyze_model, write_outputs
from speechllm import cli
from speechllm.builders import tiny_slam
from speechllm.provenance import stamped_by
from speechllm.tasks import Task
from tests.conftest import DE, FR, TEXTS


@pytest.fixture(scope="module")
def analyses(tmp_path_factory, speech_files):
    d = tmp_path_factory.mktemp("agree")
    rows = [{"id": str(i), "audio": a, "text": t, "translation": {"fr": FR[i], "de": DE[i]}}
            for i, (a, t) in enumerate(zip(speech_files, TEXTS))]
    out = {}
    for name, model in (("a", tiny_slam("llama", layers=5, seed=0)), ("b", tiny_slam("llama", layers=5, seed=1)),
                        ("short", tiny_slam("llama", layers=3))):
        a = analyze_model(model.eval(), rows, tasks=[Task(), Task("translate", "fr")], batch_size=3, progress=False)
        write_outputs(a, d / name, plots=False)
        out[name] = (d / name, a)
    return d, out


def test_every_pair_of_conditions(analyses, tmp_path, capsys):
    d, an = analyses
    out = tmp_path / "agree"
    argv = ["agreement", "--analysis", f"a={d / 'a'}", f"b={d / 'b' / 'analysis.json'}", f"a2={d / 'a'}",
            "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "12 conditions, 66 pairs" in capsys.readouterr().out
    r = json.loads((out / "agreement.json").read_text())
    assert stamped_by(r) == "slimspeech agreement" and r["decoder_layers"] == 5
    labels = [c["label"] for c in r["conditions"]]  # 3 analyses x 2 inputs x 2 tasks, no average
    assert labels[:4] == ["a: speech/transcribe", "a: speech/translate_fr", "a: text/transcribe", "a: text/translate_fr"]
    assert len(r["pairs"]) == 66 and len(r["spearman_matrix"]) == 12
    by = {(p["a"], p["b"]): p for p in r["pairs"]}
    same = by[("a: speech/transcribe", "a2: speech/transcribe")]  # an analysis against itself
    assert same["spearman"] == 1.0 and same["best_same_fraction"] == 1.0
    # Spearman per block size as scipy computes it, averaged over n
    ma = an["a"][1]["results"]["last"]["speech"]["transcribe"]["matrix"]
    mb = an["b"][1]["results"]["last"]["text"]["translate_fr"]["matrix"]
    rhos = []
    for n in range(1, 5):
        x, y = [v for v in ma[n - 1] if v is not None], [v for v in mb[n - 1] if v is not None]
        if len(x) >= 3:
            rhos.append(stats.spearmanr(x, y).statistic)
    p = by[("a: speech/transcribe", "b: text/translate_fr")]
    assert p["spearman"] == pytest.approx(sum(rhos) / len(rhos), abs=1e-3)
    i, j = labels.index(p["a"]), labels.index(p["b"])
    assert r["spearman_matrix"][i][j] == r["spearman_matrix"][j][i] == p["spearman"]
    assert r["analyses"]["b"]["path"].endswith("analysis.json") and r["analyses"]["a"]["alignment"]["end"] == "own"
    table = (out / "agreement.md").read_text()
    assert "| a: speech/transcribe | a2: speech/transcribe | 1.000 |" in table
    for png in ("grid.png", "pairs.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # filters: one input, one task
    assert cli.main([*argv[:-2], "--out", str(tmp_path / "f"), "--inputs", "speech", "--tasks", "transcribe",
                     "--no-plots"]) == 0
    r = json.loads((tmp_path / "f" / "agreement.json").read_text())
    assert [c["label"] for c in r["conditions"]] == ["a: speech/transcribe", "b: speech/transcribe",
                                                     "a2: speech/transcribe"]


def test_bad_input(analyses, tmp_path, capsys):
    d, _ = analyses
    for args, words in (([f"a={d / 'a'}", f"s={d / 'short'}"], "different layer counts"),
                        ([str(d / "a")], "NAME=DIR"),
                        ([f"a={d / 'a'}", f"a={d / 'b'}"], "twice"),
                        ([f"a={tmp_path}"], "analysis file not found"),
                        ([f"a={d / 'a'}", "--tasks", "nope"], "0 condition(s)")):
        assert cli.main(["agreement", "--analysis", *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
