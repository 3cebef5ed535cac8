"""sweep --seeds N: N healing runs per fraction, mean degradation with a 95% Student-t interval, the selection rules."""

import json
import math
import shutil

import pytest

from prune_tools.sweep import combine_runs, mean_interval
from speechllm import cli
from speechllm.provenance import Provenance
from tests.prune_tools.test_sweep_export import swept  # noqa: F401  (the one-seed sweep on a tiny model)

T_975_DF1 = 12.706204736  # Student t quantile 0.975 with 1 degree of freedom


def test_mean_interval():
    m, lo, hi = mean_interval([0.1, 0.3])
    half = T_975_DF1 * math.sqrt(0.02) / math.sqrt(2)
    assert m == 0.2 and lo == pytest.approx(0.2 - half, abs=1e-4) and hi == pytest.approx(0.2 + half, abs=1e-4)
    assert mean_interval([0.4]) == (0.4, None, None)  # one run: no interval
    assert mean_interval([0.1, None]) == (None, None, None)  # an undefined degradation stays undefined
    assert mean_interval([0.2, 0.2, 0.2]) == (0.2, 0.2, 0.2)


def _run(seed, deg, wer):
    return {"seed": seed, "fraction": 0.2, "decoder_layers": 4, "removed_layers": [1],
            "scores": {"a": {"transcribe": {"wer": wer, "utterances": 3}}},
            "relative_degradation": {"transcribe": {"a": deg}}, "within_tolerance": {"transcribe": {"a": deg <= 0.25}},
            "healing": {"steps": 2}}


def test_combine_runs_rules():
    base = {"a": {"transcribe": {"wer": 10.0, "utterances": 3}}}
    runs = [_run(0, 0.10, 11.0), _run(1, 0.30, 13.0)]  # mean 0.2 passes, upper bound 1.47 does not
    p = combine_runs(runs, base, "upper")
    assert p["relative_degradation"]["transcribe"]["a"] == 0.2 and p["scores"]["a"]["transcribe"]["wer"] == 12.0
    assert p["scores"]["a"]["transcribe"]["utterances"] == 3
    assert p["within_tolerance_by_rule"] == {"point": {"transcribe": {"a": True}}, "upper": {"transcribe": {"a": False}}}
    assert p["within_tolerance"] == p["within_tolerance_by_rule"]["upper"]
    assert combine_runs(runs, base, "point")["within_tolerance"] == {"transcribe": {"a": True}}
    assert [r["seed"] for r in p["runs"]] == [0, 1] and p["healing"] == {"steps": 2}
    one = combine_runs(runs[:1], base, "point")  # one run: the point exactly as a one-seed sweep had it
    assert one == {**{k: v for k, v in runs[0].items() if k != "seed"}, "interval": None}


def test_sweep_two_seeds(swept, tmp_path, capsys):  # noqa: F811
    d, args = swept
    one = json.loads((d / "out" / "sweep.json").read_text())
    assert one["seeds"] == 1 and one["select_rule"] == "point" and all(p["interval"] is None for p in one["points"])
    assert "One healing run per fraction" in (d / "out" / "sweep.md").read_text()
    out = tmp_path / "out"
    shutil.copytree(d / "out", out)  # more seeds on a one-seed sweep dir reuse its runs
    argv = [*args[:args.index("--out") + 1], str(out), *args[args.index("--out") + 2:]]
    seed0 = (out / "f0.20" / "healed" / "provenance.json").stat().st_mtime_ns
    assert cli.main([*argv, "--seeds", "2"]) == 0, capsys.readouterr().err
    assert (out / "f0.20" / "healed" / "provenance.json").stat().st_mtime_ns == seed0
    r = json.loads((out / "sweep.json").read_text())
    assert r["seeds"] == 2 and r["select_rule"] == "upper"
    for p, p1 in zip(r["points"], one["points"]):
        tag = f"f{p['fraction']:.2f}"
        assert [x["seed"] for x in p["runs"]] == [0, 1]
        assert p["runs"][0]["relative_degradation"] == p1["relative_degradation"]  # run 0 is the one-seed run
        assert Provenance.read(out / tag / "seed1" / "healed").healing["config"]["seed"] == 1
        assert p["runs"][0]["healing"]["first_loss"] != p["runs"][1]["healing"]["first_loss"]  # other batches
        for label, by_split in p["relative_degradation"].items():
            for split, m in by_split.items():
                vals = [x["relative_degradation"][label][split] for x in p["runs"]]
                if None in vals:
                    assert m is None and p["interval"][label][split] is None
                    continue
                assert m == pytest.approx(sum(vals) / 2, abs=1e-4)
                half = T_975_DF1 * abs(vals[0] - vals[1]) / 2  # s = |a - b| / sqrt(2), over sqrt(2)
                lo, hi = p["interval"][label][split]
                assert lo == pytest.approx(m - half, abs=2e-4) and hi == pytest.approx(m + half, abs=2e-4)
                assert p["within_tolerance"][label][split] == (hi <= 0.25)
    for label, f in r["max_fraction"].items():  # the largest fraction whose every upper bound passes
        keys = [k for k in r["max_fraction"] if k != "all_tasks"] if label == "all_tasks" else [label]
        ok = [p["fraction"] for p in r["points"] if all(all(p["within_tolerance_by_rule"]["upper"][k].values())
                                                        for k in keys)]
        assert f == (max(ok) if ok else None)
    assert r["max_fraction_by_rule"]["upper"] == r["max_fraction"]
    md = (out / "sweep.md").read_text()
    assert "95% Student-t interval over the 2 runs" in md and "(--select-rule upper)" in md
    assert (out / "degradation.png").read_bytes()[:4] == b"\x89PNG"
    # the point rule on the same runs: nothing is healed again
    assert cli.main([*argv, "--seeds", "2", "--select-rule", "point"]) == 0
    r = json.loads((out / "sweep.json").read_text())
    assert r["select_rule"] == "point" and r["max_fraction"] == r["max_fraction_by_rule"]["point"]
    capsys.readouterr()
    assert cli.main([*argv, "--select-rule", "upper"]) == 2  # one run has no interval
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--seeds 2" in err
    assert cli.main([*argv, "--seeds", "0"]) == 2
