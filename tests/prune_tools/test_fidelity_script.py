"""scripts/fidelity.sh end to end on a tiny recipe (slow: about 10 minutes on 2 cores): every step runs, the
variants ship with test scores in their exports' provenance, the agreement grid covers every condition, the
two-seed sweep chooses by the upper bound, and the small outputs land in DOCS."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prune_tools.test_train import tiny_data  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--vocab-size 400 --tokenizer-sentences 300 --dec-layers 4 --dec-hidden 32 --dec-heads 2 --dec-intermediate 64 "
        "--enc-layers 1 --enc-dim 32 --enc-heads 2 --enc-ffn 64 --batch-size 4 --warmup 1 --ckpt-every 2 "
        "--eval-every 1000 --eval-size 2 --text-steps 2 --ctc-steps 2 --cores 1")


@pytest.mark.slow
def test_fidelity_script_on_a_tiny_recipe(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "S": str(Path(sys.executable).parent / "slimspeech"),
           "DATA": str(tiny_data), "BASE": str(out / "base"), "OUT": str(out), "DOCS": str(tmp_path / "docs"),
           "RECIPE": TINY, "JOINT_STEPS": "2", "LIMIT": "2", "ANALYSIS_LIMIT": "3", "FRACTIONS": "0.25,0.5",
           "HEAL_STEPS": "2", "SEEDS": "2", "SWEEP_MODEL": str(out / "base" / "ship")}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "fidelity.sh")], env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    docs = tmp_path / "docs"
    for name in ("full", "frozen", "lora", "stack-lora", "stack-frozen"):
        prov = json.loads((docs / "provenance" / f"{name}.json").read_text())
        assert "test-clean" in prov["scores"]["model"], name
    assert json.loads((out / "stack-lora" / "ship" / "speechllm.json").read_text())["projector"]["kind"] == "stack_mlp"
    for align in ("own", "task"):
        a = json.loads((docs / "agreement" / align / "agreement.json").read_text())
        assert {c["analysis"] for c in a["conditions"]} == {"pretrained", "full", "frozen", "lora", "stack-lora",
                                                          "stack-frozen"}
        assert all(v["alignment"]["end"] == align for v in a["analyses"].values())
        assert (docs / "agreement" / align / "grid.png").exists()
    s = json.loads((docs / "sweep-seeds2" / "sweep.json").read_text())
    assert s["seeds"] == 2 and s["select_rule"] == "upper" and all(len(p["runs"]) == 2 for p in s["points"])
    assert not list(docs.rglob("*.safetensors"))  # only the small outputs
