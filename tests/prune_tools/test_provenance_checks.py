"""The checks that refuse an artifact of another model, on tiny models (no audio, no training): export's
eval report (by weight fingerprint), prune's analysis (loaded in bfloat16 too), heal's adapter and
checkpoint (schema-2 and older metas), and a prune of a dir with schema-1 provenance."""

import copy
import json

import pytest
import torch

from prune_tools.evaluate import evaluate
from prune_tools.export import check_report
from prune_tools.heal import ADAPTER_META, HealConfig, _check_resume, check_adapter
from prune_tools.prune import check_analysis, prune
from speechllm.builders import tiny_slam
from speechllm.errors import SlimError
from speechllm.modeldir import load_model
from speechllm.provenance import ModelRef, Provenance, model_fingerprint


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two 4-layer slam dirs of the same family, depth and parameter count, with different weights."""
    d = tmp_path_factory.mktemp("two")
    tiny_slam("llama", layers=4, seed=0).save(d / "a")
    tiny_slam("llama", layers=4, seed=1).save(d / "b")
    return d / "a", d / "b"


def test_check_report_requires_the_same_weights(two_models):
    a_dir, b_dir = two_models
    report = evaluate(a_dir, [], [])  # no data: the report's model identity alone
    a, b = load_model(a_dir), load_model(b_dir)
    assert (a.num_parameters(), a.num_decoder_layers) == (b.num_parameters(), b.num_decoder_layers)
    check_report(report, a, "eval.json")
    with pytest.raises(SlimError) as err:
        check_report(report, b, "eval.json")
    msg = str(err.value)
    assert model_fingerprint(a) in msg and model_fingerprint(b) in msg and "slimspeech evaluate --model" in msg
    # a report written before evaluate recorded fingerprints is refused with a reason, not accepted
    old = copy.deepcopy(report)
    del old["model"]["fingerprint"]
    with pytest.raises(SlimError, match="none recorded"):
        check_report(old, a, "eval.json")


def test_analysis_in_bfloat16_is_recognised(two_models):
    a_dir, _ = two_models
    fp32 = load_model(a_dir)
    analysed = load_model(a_dir, dtype=torch.bfloat16)  # what analyze --dtype bfloat16 loads
    analysis = {"model": ModelRef.of(analysed, a_dir).to_dict()}
    assert analysis["model"]["dtype"] == "bfloat16"
    check_analysis(analysis, fp32)
    analysis["model"]["dtype"] = "float32"  # the same fingerprint read as a float32 one: another model
    with pytest.raises(SlimError, match="computed on another model"):
        check_analysis(analysis, fp32)


def _adapter_dir(path, meta):
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    (path / ADAPTER_META).write_text(json.dumps(meta))
    return path


def test_adapter_and_checkpoint_identity_old_and_new(tmp_path):
    model = tiny_slam("llama", layers=4)
    new = {"model": ModelRef(family="slam", kept_layers=[0, 1, 2, 3]).to_dict()}
    old = {"family": "slam", "kept_layers": [0, 1, 2, 3], "model_fingerprint": "x"}  # before schema 2
    check_adapter(model, _adapter_dir(tmp_path / "new", new))
    check_adapter(model, _adapter_dir(tmp_path / "old", old))
    other = {"model": ModelRef(family="slam", kept_layers=[0, 2, 3, 5]).to_dict()}
    with pytest.raises(SlimError, match=r"decoder layers \[0, 2, 3, 5\]"):
        check_adapter(model, _adapter_dir(tmp_path / "other", other))

    cfg = HealConfig()
    kept, fp = [0, 1, 2, 3], model_fingerprint(model)
    _check_resume({"config": cfg.to_dict(), "model": ModelRef(kept_layers=kept, fingerprint=fp).to_dict()},
                  cfg, kept, fp, tmp_path / "ckpt.pt")
    _check_resume({"config": cfg.to_dict(), "kept_layers": kept, "model_fingerprint": fp}, cfg, kept, fp,
                  tmp_path / "ckpt.pt")
    with pytest.raises(SlimError, match="belongs to another model"):
        _check_resume({"config": cfg.to_dict(), "model": ModelRef(kept_layers=kept, fingerprint="y").to_dict()},
                      cfg, kept, fp, tmp_path / "ckpt.pt")


def test_prune_a_schema_1_dir(tmp_path):
    """A dir pruned before schema 2 (kept layers in the original's numbering, a lineage without
    fingerprints of the current kind) prunes on: the chain goes on, the layers stay original indices."""
    model = tiny_slam("llama", layers=4)
    legacy = {"produced_by": "slimspeech prune", "parent": {"dir": "/base", "family": "slam", "decoder_layers": 6},
              "root": "/base", "lineage": [{"dir": "/base", "produced_by": None, "decoder_layers": 6}],
              "root_decoder_layers": 6, "removed_layers": [2, 3], "kept_layers": [0, 1, 4, 5],
              "weight_bytes": 123, "built_by": "tests"}
    model.save(tmp_path / "old", provenance=legacy)
    prov = prune(tmp_path / "old", tmp_path / "new", layers="0")
    assert prov.kept_layers == [1, 4, 5] and prov.removed_layers == [0, 2, 3] and prov.removed_from_parent == [0]
    assert [r.dir for r in prov.lineage] == ["/base", str((tmp_path / "old").resolve())] and prov.root == "/base"
    assert prov.parent.produced_by == "slimspeech prune" and prov.parent.kept_layers == [0, 1, 4, 5]
    pruned = load_model(tmp_path / "new")
    assert prov.fingerprint == model_fingerprint(pruned) and prov.dtype == "float32"
    assert prov.weight_bytes == pruned.weight_bytes() and prov.extra == {}
    assert Provenance.read(tmp_path / "new") == prov


def test_an_eval_report_of_a_bfloat16_load_is_accepted_for_the_same_weights(two_models):
    """evaluate --dtype bfloat16 records the dtype and the fingerprint of that cast (which differs from the
    float32 one for float32 weights); export's check compares like with like, and still refuses other weights."""
    a_dir, b_dir = two_models
    report = evaluate(a_dir, [], [], dtype="bfloat16")
    a = load_model(a_dir)
    assert report["model"]["dtype"] == "bfloat16"
    assert report["model"]["fingerprint"] != model_fingerprint(a)  # the cast changed these float32 weights
    check_report(report, a, "eval.json", model_fingerprint(a))
    with pytest.raises(SlimError, match="fingerprint"):
        check_report(report, load_model(b_dir), "eval.json")
