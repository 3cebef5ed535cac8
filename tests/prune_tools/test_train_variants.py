"""The joint stage's variants on a tiny recipe: a frozen decoder, LoRA on the decoder, a stack_mlp projector,
each reusing a finished run's prep, text and ctc stages; ``connect``: the decoder before it saw speech."""

import json
import shutil

import pytest
import torch

from prune_tools.train import connect, ship, stage_ctc, stage_joint, stage_text
from speechllm import cli
from speechllm.modeldir import load_model, read_spec
from speechllm.provenance import Provenance
from tests.prune_tools.test_train import _cfg, _records, prepped, tiny_data  # noqa: F401


@pytest.fixture(scope="module")
def base_run(tiny_data, prepped, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("base") / "run"
    shutil.copytree(prepped / "prep", out / "prep")
    cfg = _cfg(tiny_data, out, text_steps=2, ctc_steps=2, ckpt_every=2, eval_size=2)
    stage_text(cfg)
    stage_ctc(cfg)
    return out


def _ckpt(run, stage):
    return torch.load(run / stage / "ckpt.pt", weights_only=False)["params"]


def test_frozen_decoder(tiny_data, base_run, tmp_path):  # noqa: F811
    cfg = _cfg(tiny_data, tmp_path / "frozen", base_run=str(base_run), joint_decoder="frozen", joint_steps=2,
               ckpt_every=2, eval_size=2)
    stage_joint(cfg)
    assert not (tmp_path / "frozen" / "text").exists() and not (tmp_path / "frozen" / "prep").exists()
    assert [r["step"] for r in _records(tmp_path / "frozen", "joint")] == [1, 2]
    prov = ship(cfg, tmp_path / "frozen-ship")
    assert prov.extra["recipe"]["joint_decoder"] == "frozen" and prov.extra["recipe"]["base_run"] == str(base_run)
    assert prov.extra["training_minutes"].keys() == {"text", "ctc", "joint"}
    model = load_model(tmp_path / "frozen-ship", dtype=torch.float32)
    text = _ckpt(base_run, "text")
    dec = {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
    for k, v in text.items():  # the decoder is the text stage's, bit for bit (up to the fp16 ship)
        if k.startswith("decoder."):
            assert torch.equal(dec[k], v.half().float()), k
    joint = _ckpt(tmp_path / "frozen", "joint")  # while the projector and the encoder trained
    ctc = _ckpt(base_run, "ctc")
    assert any(not torch.equal(joint[k], ctc[k]) for k in ctc if k.startswith("encoder."))


def test_stack_projector_with_lora_decoder(tiny_data, base_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "stack"
    argv = ["train", "--data", str(tiny_data), "--out", str(out), "--base-run", str(base_run),
            "--joint-decoder", "lora", "--joint-projector", "stack_mlp", "--joint-lr-encoder", "0",
            "--joint-lora-r", "4", "--joint-lora-alpha", "8", "--joint-steps", "2", "--ckpt-every", "2",
            "--eval-size", "2", "--batch-size", "8", "--warmup", "1", "--joint-lr-decoder", "5e-2",
            *[f"--{k.replace('_', '-')}={v}" for k, v in dict(vocab_size=400, dec_layers=2, dec_hidden=32, dec_heads=2,
                                             dec_intermediate=64, enc_layers=1, enc_dim=32, enc_heads=2,
                                             enc_ffn=64).items()]]
    assert cli.main(argv) == 0, capsys.readouterr().err  # all = the joint stage alone
    joint = _ckpt(out, "joint")
    assert any("lora_A" in k for k in joint) and not any("ctc_head" in k for k in joint)
    assert cli.main([*argv[:argv.index("--out")], "--out", str(out), *argv[argv.index("--out") + 2:],
                     "--stage", "ship"]) == 0
    spec = read_spec(out / "ship")
    assert spec["projector"]["kind"] == "stack_mlp"
    model = load_model(out / "ship", dtype=torch.float32)
    names = [n for n, _ in model.named_parameters()]
    assert not any("lora" in n for n in names)  # merged
    text, ctc = _ckpt(base_run, "text"), _ckpt(base_run, "ctc")
    dec = {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
    q = next(k for k in text if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(dec[q], text[q].half().float())  # the LoRA update merged into the decoder
    emb = next(k for k in text if k.endswith("embed_tokens.weight"))
    assert torch.equal(dec[emb], text[emb].half().float())  # what LoRA does not touch stays
    enc = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    assert all(torch.equal(enc[k], v.half().float()) for k, v in ctc.items() if k.startswith("encoder."))
    prov = Provenance.read(out / "ship")
    assert prov.extra["recipe"]["joint_projector"] == "stack_mlp"
    # a stack projector has no CTC head: the encoder must stay frozen
    capsys.readouterr()
    bad = [a for a in argv if a not in ("--joint-lr-encoder", "0")]
    assert cli.main([*bad[:bad.index("--out") + 1], str(tmp_path / "bad"), *bad[bad.index("--out") + 2:]]) == 2
    assert "--joint-lr-encoder 0" in capsys.readouterr().err


def test_connect_is_the_text_stage_decoder(tiny_data, base_run, tmp_path):  # noqa: F811
    cfg = _cfg(tiny_data, tmp_path / "pre", base_run=str(base_run))
    prov = connect(cfg)
    model = load_model(tmp_path / "pre" / "connected", dtype=torch.float32)
    text = _ckpt(base_run, "text")
    dec = {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
    assert all(torch.equal(dec[k], v.half().float()) for k, v in text.items() if k.startswith("decoder."))
    assert prov.extra["recipe"]["joint_steps"] == 0 and "before it saw speech" in prov.extra["stage"]
    assert json.loads((tmp_path / "pre" / "connected" / "provenance.json").read_text())["produced_by"] == \
        "slimspeech train"


def test_a_variant_needs_the_base_stages(tiny_data, prepped, tmp_path, capsys):  # noqa: F811
    assert cli.main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "v"), "--base-run",
                     str(prepped), "--joint-decoder", "frozen"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--stage text" in err[0]
