"""``slimspeech compare`` (``prune_tools.report``, offline, in-process) on the tiny pruned + base pair: sizes,
measured memory (one ``memprobe`` process per model), quality, speed, ratios.

It sits beside the load tests because it shares their fixtures (the tiny model pair, the small manifest).
"""

from __future__ import annotations

import json

import pytest

from speechllm import cli
from speechllm.modeldir import load_model


@pytest.mark.slow  # a memory probe process per model
def test_compare_report(model_pair, bench_manifest, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--base", model_pair["base"], "--pruned", model_pair["pruned"], "--data", str(bench_manifest),
            "--tasks", "transcribe,translate:fr", "--limit", "3", "--repeats", "2", "--batch-size", "2",
            "--threads", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "report: " in capsys.readouterr().out
    report = json.loads((out / "compare.json").read_text())
    rows = {r["quantity"]: r for r in report["rows"]}
    base, pruned = load_model(model_pair["base"]), load_model(model_pair["pruned"])

    layers = rows["decoder layers"]
    assert (layers["base"], layers["pruned"], layers["ratio"], layers["ideal"]) == (4, 2, 0.5, 0.5)
    assert rows["parameters"]["base"] == base.num_parameters()
    assert rows["parameters"]["pruned"] == pruned.num_parameters()
    assert rows["parameters"]["ratio"] == pytest.approx(pruned.num_parameters() / base.num_parameters())
    assert rows["weight bytes"]["pruned"] == pruned.weight_bytes() < base.weight_bytes() == rows["weight bytes"]["base"]
    # measured in a fresh process per model: the process holds at least the weights, the model part is > 0
    for name in ("base", "pruned"):
        mem = report["models"][name]["memory"]
        assert mem["peak_rss_after_inference_bytes"] >= mem["peak_rss_after_load_bytes"]
        assert mem["peak_rss_after_load_bytes"] > mem["model_peak_rss_bytes"] > 0
        assert mem["decoder_layers"] == report["models"][name]["decoder_layers"]
    assert report["models"]["base"]["memory"]["decoder_layer_parameters"] == \
        2 * report["models"]["pruned"]["memory"]["decoder_layer_parameters"]
    # speed: 3 clips x 2 rounds of batch-1 latencies, throughput from the batched runs
    for name in ("base", "pruned"):
        sp = report["models"][name]["speed"]
        assert len(sp["latencies_s"]) == 6 and len(sp["batched_seconds"]) == 2
        assert sp["latency_s"]["p50"] <= sp["latency_s"]["p90"]
        assert sp["throughput_clips_per_s"] > 0 and sp["rtfx"] == pytest.approx(
            sp["audio_s"] * sp["throughput_clips_per_s"] / sp["clips"])
    thr = [r for q, r in rows.items() if q.startswith("throughput")][0]
    assert thr["ideal"] == 2.0 and thr["ratio"] == pytest.approx(thr["pruned"] / thr["base"])
    assert rows["latency p50, batch 1 (s)"]["ideal"] == 0.5
    # quality per split and task, with the relative degradation of prune_tools.evaluate
    assert {"WER test-clean transcribe", "BLEU test-clean translate_fr", "CHRF test-clean translate_fr"} <= set(rows)
    assert rows["WER test-clean transcribe"]["ideal"] == 1.0
    assert set(report["relative_degradation"]["test-clean"]) == {"transcribe", "translate_fr"}
    md = (out / "compare.md").read_text()
    assert "| decoder layers | 4 | 2 | 0.500 | 0.5 |" in md and "WER test-clean transcribe" in md
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_errors_name_the_flag(model_pair, bench_manifest, tmp_path, capsys):
    argv = ["compare", "--base", str(tmp_path / "nope"), "--pruned", model_pair["pruned"], "--data",
            str(bench_manifest), "--out", str(tmp_path / "x")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip().startswith("error: --base:")
    assert cli.main(["compare", "--base", model_pair["base"], "--pruned", model_pair["pruned"], "--data",
                     str(bench_manifest), "--repeats", "0"]) == 2
    assert "--repeats must be > 0" in capsys.readouterr().err
