"""speechllm.provenance: the typed provenance.json (schema 2, schema 1 upgraded on reading, the shipped
files among them) and the weight fingerprint that a float16 copy shares with its float32 source.

    .venv/bin/python -m pytest -q tests/speechllm/test_provenance.py
"""

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from speechllm.builders import tiny_slam
from speechllm.errors import ModelDirError
from speechllm.modeldir import DEMO_DIR, load_model, read_provenance
from speechllm.provenance import SCHEMA_VERSION, ModelRef, Provenance, model_fingerprint, stamp, stamped_by

ROOT = Path(__file__).resolve().parents[2]
DEMO_PRUNED = DEMO_DIR.parent / "demo-pruned"


# ---- the shipped files (schema 1: read, never rewritten) --------------------------------------


def test_shipped_demo_reads_as_schema_2():
    raw = json.loads((DEMO_DIR / "provenance.json").read_text())
    p = Provenance.read(DEMO_DIR)
    assert "schema_version" not in raw and p.schema_version == SCHEMA_VERSION
    assert p.produced_by == raw["produced_by"] == "slimspeech train"
    assert p.parent is None and p.lineage == [] and p.removed_layers == [] and p.kept_layers is None
    # what train alone records is kept, under extra
    assert p.extra.keys() == {"recipe", "data", "training_minutes", "dev_scores_fp32"}
    assert p.extra["dev_scores_fp32"] == raw["dev_scores_fp32"] and p.extra["recipe"] == raw["recipe"]
    assert p.fingerprint is None  # schema 1 recorded none
    assert Provenance.from_dict(p.to_dict()) == p
    assert read_provenance(DEMO_DIR) == raw  # model.provenance stays the file as written


def test_shipped_export_reads_as_schema_2():
    raw = json.loads((DEMO_PRUNED / "provenance.json").read_text())
    p = Provenance.read(DEMO_PRUNED)
    assert p.produced_by == "slimspeech export" and p.created == raw["created"]
    # the float16 bytes of the export, not the float32 source's that schema 1 left at the top level
    assert p.weight_bytes == raw["export"]["weight_bytes"] != raw["weight_bytes"]
    assert p.dtype == "float16" and p.weight_bytes == 2 * p.parameters
    assert p.kept_layers == raw["kept_layers"] and p.removed_layers == raw["removed_layers"] == [5, 6]
    assert p.removed_from_parent == [5, 6] and p.root_decoder_layers == 12 and p.decoder_layers == 10
    assert p.parent == ModelRef(dir=raw["parent"]["dir"], fingerprint=raw["parent"]["fingerprint"],
                                produced_by="slimspeech heal", decoder_layers=10)
    assert [r.produced_by for r in p.lineage] == ["slimspeech train", "slimspeech prune", "slimspeech heal"]
    assert [r.fingerprint for r in p.lineage] == [r["fingerprint"] for r in raw["lineage"]]
    assert p.analysis == raw["analysis"] and p.healing == raw["healing"] and p.scores == raw["scores"]
    assert p.extra == {"export": {k: v for k, v in raw["export"].items() if k not in ("weight_bytes", "dtype")}}
    out = p.to_dict()
    assert out["schema_version"] == 2 and Provenance.from_dict(out) == p


# ---- schema 2 -----------------------------------------------------------------------------------


def _full() -> Provenance:
    parent = ModelRef(dir="/runs/pruned", fingerprint="0123456789abcdef", produced_by="slimspeech prune",
                      decoder_layers=4, family="slam", kept_layers=[0, 1, 4, 5], dtype="float32")
    return Provenance(produced_by="slimspeech heal", created="2026-01-01T00:00:00+00:00", parent=parent,
                      lineage=[ModelRef(dir="/base", produced_by="slimspeech train", decoder_layers=6), parent],
                      root="/base", root_decoder_layers=6, decoder_layers=4, removed_layers=[2, 3],
                      kept_layers=[0, 1, 4, 5], removed_from_parent=[2, 3], fingerprint="fedcba9876543210",
                      parameters=1000, weight_bytes=4000, dtype="float32", analysis={"fraction": 0.34},
                      healing={"steps": 2}, scores=None, extra={"note": "x"})


def test_write_read_round_trip(tmp_path):
    p = _full()
    path = p.write(tmp_path)
    raw = json.loads(path.read_text())
    assert list(raw)[:3] == ["schema_version", "produced_by", "created"] and list(raw)[-1] == "extra"
    assert raw["parent"]["kept_layers"] == [0, 1, 4, 5] and raw["extra"] == {"note": "x"}
    assert Provenance.read(tmp_path) == p and read_provenance(tmp_path) == p.to_dict()


def test_unknown_keys_are_kept_in_extra(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps(
        {"parent": "base", "removed_layers": [1, 2], "kept_layers": [0, 3], "distances": [[0.1]]}))
    p = Provenance.read(tmp_path)
    assert p.parent == ModelRef(dir="base") and p.kept_layers == [0, 3] and p.extra == {"distances": [[0.1]]}
    p.write(tmp_path)
    assert Provenance.read(tmp_path) == p
    assert Provenance.read(tmp_path / "nowhere") == Provenance()  # a dir without one


def test_newer_schema_and_bad_json_are_refused(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps({"schema_version": 99, "produced_by": "future"}))
    with pytest.raises(ModelDirError, match="schema_version 99 is newer"):
        Provenance.read(tmp_path)
    (tmp_path / "provenance.json").write_text("{")
    with pytest.raises(ModelDirError, match="provenance.json is not valid JSON"):
        Provenance.read(tmp_path)


def test_derive_appends_the_parent():
    p = _full()
    child = p.derive("slimspeech export", ModelRef(dir="/runs/healed", fingerprint=p.fingerprint), scores={"a": 1})
    assert child.lineage == [*p.lineage, child.parent] and child.root == "/base" and child.root_decoder_layers == 6
    assert child.kept_layers == p.kept_layers and child.healing == p.healing and child.scores == {"a": 1}
    assert child.created != p.created and p.produced_by == "slimspeech heal"  # the parent's stays as it was
    root = Provenance(produced_by="slimspeech train").derive("slimspeech prune", ModelRef(dir="/b", decoder_layers=6))
    assert root.root == "/b" and root.root_decoder_layers == 6


def test_model_ref_reads_older_metas():
    assert ModelRef.from_dict({"family": "slam", "kept_layers": [0, 2], "model_fingerprint": "ab"}) == ModelRef(
        family="slam", kept_layers=[0, 2], fingerprint="ab")
    assert ModelRef.from_dict(None) is None


def test_stamp():
    s = stamp("slimspeech analyze")
    assert stamped_by(s) == "slimspeech analyze"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", s["created"])
    assert stamped_by(["not", "a", "dict"]) is None


# ---- the fingerprint ----------------------------------------------------------------------------


def test_fingerprint_float16_copy_and_loads(tmp_path):
    model = tiny_slam("llama", layers=3).eval()
    fp = model_fingerprint(model)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert model_fingerprint(copy.deepcopy(model).half()) == fp  # what export --dtype float16 writes
    copy.deepcopy(model).half().save(tmp_path / "fp16")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):  # a float16 dir, loaded in any dtype
        assert model_fingerprint(load_model(tmp_path / "fp16", dtype=dtype)) == fp, dtype
    # float32 weights cast to bfloat16: not the same values; loaded_as names that cast
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    assert model_fingerprint(bf16) == model_fingerprint(model, loaded_as=torch.bfloat16)
    # other weights: another seed, or one sampled value changed
    assert model_fingerprint(tiny_slam("llama", layers=3, seed=1)) != fp
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 0.01
    assert model_fingerprint(model) != fp


def test_fingerprint_survives_double_rounding():
    """Values just below a bfloat16 tie: float16 rounds them onto the tie, which bfloat16 then breaks to
    even, the other way than a direct bfloat16 rounding. A fingerprint of bfloat16-rounded float32
    values (the one before schema 2) differs between these weights and their float16 copy."""
    lin = nn.Linear(4, 4, bias=False)
    x = 1 + 3 * 2.0 ** -8 - 2.0 ** -13  # bf16 neighbours 1 + 2^-7 (odd) and 1 + 2^-6 (even)
    with torch.no_grad():
        lin.weight.fill_(x)
    direct = lin.weight.to(torch.bfloat16)
    via_fp16 = lin.weight.half().to(torch.bfloat16)
    assert not torch.equal(direct, via_fp16)  # the case exists
    assert model_fingerprint(lin) == model_fingerprint(copy.deepcopy(lin).half())


# ---- one module reads and writes provenance -------------------------------------------------------

def test_provenance_keys_only_in_the_provenance_module():
    key = re.compile(r"""["'](kept_layers|produced_by)["']""")
    offenders = []
    for package in ("speechllm", "prune_tools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "speechllm/provenance.py":
                continue
            offenders += [f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if key.search(line)]
    assert not offenders, offenders


def test_an_imports_sources_describe_the_root_and_stay():
    """prune replaces ``extra`` (a training recipe describes the parent only) but keeps an import's sources."""
    sources = {"hf": {"path": "/models/Qwen2-Audio-7B", "sha256": "ab" * 32}}
    prov = Provenance(produced_by="slimspeech import qwen2-audio",
                      extra={"command": "slimspeech import ...", "sources": sources, "source_format": {"hf": "x"},
                             "recipe": {"steps": 3}})
    kept = prov.root_extra()
    assert kept == {"sources": sources, "source_format": {"hf": "x"}}
    kept["sources"]["hf"]["path"] = "changed"
    assert prov.extra["sources"]["hf"]["path"] == "/models/Qwen2-Audio-7B"  # a copy
    assert Provenance(extra={"recipe": {}}).root_extra() == {}
