"""The staged demo-training recipe on a tiny config: every stage runs a few steps in the shared loop, resumes and
ships a model dir (quick); trained for real, each stage lowers its loss (slow tier: ``pytest -m slow``)."""

import json
import shutil
import sys

import pytest

import numpy as np
import torch

from prune_tools.options import config_from_args
from prune_tools.train import (TrainConfig, _features, build_parser, core_plan, mel_warp, prep, ship, stage_command,
                               stage_ctc, stage_joint, stage_text, with_fresh_noise)
from speechllm.modeldir import load_model
from speechllm.provenance import Provenance
from speechllm.generate import transcribe
from speechllm.audio import load_audio
from speechllm.tasks import Task


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from prune_tools.data.make import make_data

    out = tmp_path_factory.mktemp("bench")
    make_data(out, seed=3, sizes={"train": 24, "dev": 4, "test-clean": 2, "test-noisy": 2, "test-unseen-voice": 2},
              workers=2)
    return out


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), vocab_size=400, tokenizer_sentences=300, dec_layers=2, dec_hidden=32,
                dec_heads=2, dec_intermediate=64, enc_layers=1, enc_dim=32, enc_heads=2, enc_ffn=64, batch_size=8,
                warmup=2, ckpt_every=5, eval_every=1000, eval_size=4, text_steps=25, ctc_steps=25, joint_steps=12,
                text_lr=3e-3, ctc_lr=3e-3, joint_lr_decoder=2e-3, joint_lr_projector=2e-3, joint_lr_encoder=1e-3,
                ctc_augment_from=10, ctc_noise_from=15, noise_prob=0.5)  # the ctc curriculum's three phases
    base.update(kw)
    return TrainConfig(**base)


def _losses(out, stage):
    return [json.loads(l)["loss"] for l in (out / stage / "log.jsonl").read_text().splitlines()]


def _records(out, stage):
    return [json.loads(l) for l in (out / stage / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def prepped(tiny_data, tmp_path_factory):
    """A run dir whose prep stage (tokenizer + feature cache) is done: tests copy its prep/ into their own."""
    out = tmp_path_factory.mktemp("prepped")
    prep(_cfg(tiny_data, out))
    return out


def test_stages_run_in_the_shared_loop_resume_and_ship(tiny_data, prepped, tmp_path):
    """A few steps per stage: logs, checkpoints, resume (each step logged once), DONE, ship."""
    out = tmp_path / "run"
    shutil.copytree(prepped / "prep", out / "prep")
    cfg = _cfg(tiny_data, out, text_steps=4, ctc_steps=3, joint_steps=2, ckpt_every=2, eval_size=2)
    stage_text(_cfg(tiny_data, out, text_steps=2, ckpt_every=2, eval_size=2))  # stops at its checkpoint
    stage_text(cfg)  # resumes at step 2 of 4
    recs = _records(out, "text")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert "transcribe_wer" in recs[1] and "transcribe_wer" in recs[3]  # eval at each run's last step
    assert json.loads((out / "text" / "DONE").read_text())["steps"] == 4
    assert torch.load(out / "text" / "ckpt.pt", weights_only=False)["step"] == 4
    stage_ctc(cfg)
    stage_joint(cfg)
    assert [r["step"] for r in _records(out, "ctc")] == [1, 2, 3]
    joint = _records(out, "joint")
    assert all({"ce", "ctc", "grad_norm", "lr"} <= r.keys() for r in joint)  # the auxiliary CTC loss is on
    assert joint[0]["loss"] == pytest.approx(joint[0]["ce"] + cfg.ctc_weight * joint[0]["ctc"], abs=1e-3)
    prov = ship(cfg, tmp_path / "shipped")
    assert prov.extra["recipe"]["joint_steps"] == 2
    assert prov.extra["training_minutes"].keys() == {"text", "ctc", "joint"}
    assert load_model(tmp_path / "shipped").num_decoder_layers == 2
    assert prov.produced_by == "slimspeech train" and prov.dtype == "float16" and prov.parent is None
    assert Provenance.read(tmp_path / "shipped") == prov
    # by default into the run dir, never into the package (a release copies it there)
    assert ship(cfg).fingerprint == prov.fingerprint and load_model(out / "ship").num_decoder_layers == 2


def test_core_plan_and_child_commands(tiny_data, tmp_path):
    """The stages' threads follow --cores; a child runs exactly the parent's recipe, whatever the values
    (an --out named "all" included: the flags are parsed, not filtered)."""
    assert core_plan(TrainConfig(cores=2)) == {"prep": 2, "text": 1, "ctc": 1, "joint": 2, "ship": 2,
                                                 "connect": 2}
    assert core_plan(TrainConfig(cores=5)) == {"prep": 5, "text": 2, "ctc": 3, "joint": 5, "ship": 5,
                                                 "connect": 5}
    assert core_plan(TrainConfig(cores=1))["text"] == core_plan(TrainConfig(cores=1))["ctc"] == 1
    assert core_plan(TrainConfig())["joint"] >= 1
    cfg = config_from_args(TrainConfig, build_parser().parse_args(
        ["--data", str(tiny_data), "--out", "all", "--stage", "all", "--dec-layers", "3", "--text-lr", "0.0021",
         "--init-from", "some/dir", "--cores", "4"]))
    cmd = stage_command(cfg, "ctc", 2)
    assert cmd[:4] == [sys.executable, "-m", "speechllm.cli", "train"]
    args = build_parser().parse_args(cmd[4:])
    assert args.stage == "ctc" and args.threads == 2
    assert config_from_args(TrainConfig, args) == cfg and cfg.out == "all" and cfg.text_lr == 0.0021


@pytest.mark.slow
def test_stages_lower_the_loss_resume_and_ship(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_data, out)
    prep(cfg)
    assert json.loads((out / "prep" / "summary.json").read_text())["vocab"] == 400
    # text: stop after 10 steps, then resume to 25: the log has each step exactly once
    stage_text(_cfg(tiny_data, out, text_steps=10))
    stage_text(cfg)
    steps = [json.loads(l)["step"] for l in (out / "text" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 26))
    stage_ctc(cfg)
    stage_joint(cfg)
    for stage in ("text", "ctc", "joint"):
        losses = _losses(out, stage)
        assert sum(losses[-3:]) / 3 < losses[0], (stage, losses)
    dest = tmp_path / "shipped"
    prov = ship(cfg, dest)
    assert prov.extra["training_minutes"].keys() == {"text", "ctc", "joint"}
    model = load_model(dest)
    assert next(model.parameters()).dtype.is_floating_point
    assert model.num_decoder_layers == 2
    rows = [json.loads(l) for l in (tiny_data / "dev.jsonl").read_text().splitlines()]
    wav = load_audio(tiny_data / rows[0]["audio"])
    texts = transcribe(model, [wav, wav], [Task("transcribe"), Task("translate", "de")])
    assert len(texts) == 2

    # continue from the shipped model dir (what a later, longer run does): a new run dir, joint only
    out2 = tmp_path / "more"
    cfg2 = _cfg(tiny_data, out2, init_from=str(dest), joint_steps=4)
    prep(cfg2)
    stage_joint(cfg2)
    prov2 = ship(cfg2, tmp_path / "shipped2")
    assert prov2.extra["training_minutes"]["before"] == prov.extra["training_minutes"]
    assert load_model(tmp_path / "shipped2").num_decoder_layers == 2
    # ship over the parent dir itself, twice, with other flags: the parent's minutes stay as they were
    # when the run began, and the recipe records the steps that ran
    for _ in range(2):
        prov3 = ship(_cfg(tiny_data, out2, init_from=str(dest), joint_steps=999), dest)
    assert prov3.extra["training_minutes"]["before"] == prov.extra["training_minutes"]
    assert prov3.extra["recipe"]["joint_steps"] == 4


def test_fresh_noise_and_mel_warp(tiny_data, prepped):
    data = _features(_cfg(tiny_data, prepped), "train")
    idx = list(range(len(data["rows"])))
    clean = [i for i in idx if data["rows"][i]["snr"] is None]
    assert clean and len(clean) < len(idx)  # the tiny set has both kinds
    got = with_fresh_noise(data, idx, 1.0, np.random.default_rng(0))
    again = with_fresh_noise(data, idx, 1.0, np.random.default_rng(0))
    for i in idx:
        assert got[i].shape == data["feats"][i].shape
        assert torch.equal(got[i], again[i])  # deterministic from the rng
        changed = not torch.equal(got[i].half(), data["feats"][i])
        assert changed == (i in clean)  # only clean clips get noise; noisy ones keep their cache
    assert all(a is b for a, b in zip(with_fresh_noise(data, idx, 0.0, np.random.default_rng(0)), data["feats"]))
    x = torch.stack([data["feats"][i][:, :50].float() for i in idx[:4]])
    torch.testing.assert_close(mel_warp(x, torch.Generator().manual_seed(0), max_warp=0.0), x)
    warped = mel_warp(x, torch.Generator().manual_seed(0))
    assert warped.shape == x.shape and not torch.allclose(warped, x)
