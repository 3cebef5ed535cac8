"""heal: LoRA only on decoder projections, merge == peft outputs, loss goes down, resume, the per-step losses of
a seeded run, DDP under torchrun (slow tier: ``pytest -m slow tests/prune_tools/test_heal.py``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prune_tools.heal import HealConfig, HealData, adapter_model, attach_lora, heal, load_adapter, merge_lora
from prune_tools.prune import prune
from prune_tools.rows import load_rows, parse_tasks
from speechllm import cli
from speechllm.builders import tiny_qwen2_audio, tiny_slam
from speechllm.errors import SlimError
from speechllm.modeldir import load_model
from speechllm.provenance import Provenance
from speechllm.tasks import Task
from tests.conftest import write_wav
from tests.conftest import make_manifest

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(batch_size=3, lr=1e-2, projector_lr=1e-2, warmup=0, lora_dropout=0.0, lora_r=8, lora_alpha=16)
#: (loss, ce, kl, ctc) per step of test_seeded_run_computes_the_recorded_losses, recorded from heal's own
#: loop before the training loop was shared with train (prune_tools.loop): the refactor changed no number
RECORDED = [(5.84017, 5.77965, 0.00256, 9.83023), (5.45673, 5.73025, 0.00437, 8.6314),
            (2.86096, 5.71497, 0.00696, 0.0), (5.79549, 5.74242, 0.00653, 9.73671)]


def _logits(model, x):
    with torch.no_grad():
        return model.lm(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask,
                        position_ids=x.position_ids).logits


def _state(model, prefix):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, speech_files):
    """A 6-layer base, the same with layers 2-3 pruned, and a training manifest."""
    d = tmp_path_factory.mktemp("heal")
    tiny_slam("llama", layers=6).save(d / "base", provenance={"built_by": "tests"})
    prune(d / "base", d / "pruned", layers="2-3")
    return d, make_manifest(d / "train.jsonl", speech_files)


@pytest.mark.parametrize("build", [lambda: tiny_slam("llama"), lambda: tiny_qwen2_audio()], ids=["slam", "qwen2_audio"])
def test_lora_restricted_to_decoder_and_merge_equals_peft(build, noise_wavs):
    model = build().eval()
    targets = set(model.lora_target_modules())
    x = model.embed([Task("transcribe"), Task("translate", "fr")], noise_wavs[:2])
    before = _logits(model, x)
    peft_model = attach_lora(model, r=4, alpha=8)
    lora_modules = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert lora_modules == targets and all(n.startswith(model.decoder_prefixes) for n in lora_modules)
    assert len(targets) == 7 * model.num_decoder_layers  # q k v o gate up down per layer
    # the encoder has projections of the same names (qwen2_audio: q/k/v_proj) and got no adapter
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and n.startswith(model.decoder_prefixes) for n in trainable)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)  # B starts at zero: make the adapters do something
    with_lora = _logits(model, x)
    assert not torch.allclose(with_lora, before, atol=1e-3)
    merged = merge_lora(peft_model)
    assert merged is model and not any("lora" in n for n, _ in merged.named_modules())
    assert torch.allclose(_logits(merged, x), with_lora, atol=1e-5)


def _log(work):
    return [json.loads(line) for line in (Path(work) / "log.jsonl").read_text().splitlines()]


def test_heal_lowers_loss_resumes_and_merges(setup, tmp_path, speech_files):
    d, manifest = setup
    cfg = HealConfig(steps=10, ckpt_every=3, ctc_weight=0.0, **FAST)
    out, work = tmp_path / "healed", tmp_path / "work"
    assert heal(d / "pruned", [manifest], out, cfg, work=work, stop_after=4, progress=False) is None
    assert not out.exists() and (work / "ckpt.pt").exists()
    prov = heal(d / "pruned", [manifest], out, cfg, work=work, progress=False)  # resumes at step 4
    log = _log(work)
    assert [r["step"] for r in log] == list(range(1, 11))
    ce = [r["ce"] for r in log]
    assert sum(ce[-3:]) / 3 < sum(ce[:3]) / 3 - 0.02, ce
    assert all(sum(r["tasks"].values()) == 3 for r in log)
    assert {t for r in log for t, k in r["tasks"].items() if k} == {"transcribe", "translate_fr", "translate_de"}

    h = prov.healing
    assert h["steps"] == 10 and h["train"] == ["lora", "projector"] and h["world_size"] == 1
    assert prov.kept_layers == [0, 1, 4, 5] and prov.parent.dir == str((d / "pruned").resolve())
    assert prov.removed_layers == [2, 3] and prov.produced_by == "slimspeech heal"
    assert adapter_model(json.loads((work / "adapter" / "slimspeech_adapter.json").read_text())).kept_layers == [
        0, 1, 4, 5]

    pruned, healed = load_model(d / "pruned"), load_model(out)
    assert healed.num_decoder_layers == 4
    assert _state(healed, "encoder.").keys() and all(  # encoder untouched
        torch.equal(v, _state(pruned, "encoder.")[k]) for k, v in _state(healed, "encoder.").items())
    assert torch.equal(healed.decoder.model.embed_tokens.weight, pruned.decoder.model.embed_tokens.weight)
    assert not torch.equal(healed.decoder.model.layers[0].self_attn.q_proj.weight,
                           pruned.decoder.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(healed.projector.mlp[0].weight, pruned.projector.mlp[0].weight)
    # the merged dir == the pruned model + the saved (unmerged) adapter + the trained projector
    peft_model = load_adapter(pruned, work / "adapter", trainable=False)
    pruned.projector.load_state_dict(healed.projector.state_dict())
    from speechllm.audio import load_audio

    wavs = [load_audio(f) for f in speech_files]
    tasks = [Task("transcribe"), Task("translate", "de"), Task("translate", "fr")]
    assert torch.allclose(_logits(healed, healed.embed(tasks, wavs)), _logits(pruned, pruned.embed(tasks, wavs)),
                          atol=1e-5)
    del peft_model

    # an uninterrupted run gives the same model as the stopped + resumed one
    heal(d / "pruned", [manifest], tmp_path / "again", cfg, work=tmp_path / "work2", progress=False)
    again = load_model(tmp_path / "again")
    for k, v in again.state_dict().items():
        assert torch.allclose(v, healed.state_dict()[k], atol=1e-6), k


def test_seeded_run_computes_the_recorded_losses(setup, tmp_path, noise_wavs):
    """4 steps with a teacher (distillation), the auxiliary CTC loss (the tiny model's ctc_embed projector) and
    LoRA dropout (reseeded per step): the logged losses equal the recorded ones to the logged precision. Noise
    clips, not espeak speech: the numbers must not depend on the espeak version."""
    d, _ = setup
    files = [write_wav(tmp_path / f"n{i}.wav", w) for i, w in enumerate(noise_wavs)]
    manifest = make_manifest(tmp_path / "noise.jsonl", files)  # 3 rows: the texts run out first
    cfg = HealConfig(steps=4, batch_size=2, warmup=2, ckpt_every=2)
    heal(d / "pruned", [manifest], tmp_path / "h", cfg, teacher=d / "base", progress=False)
    got = [(r["loss"], r["ce"], r["kl"], r["ctc"]) for r in _log(tmp_path / "h.work")]
    assert len(got) == len(RECORDED)
    for step, (g, want) in enumerate(zip(got, RECORDED), start=1):
        assert g == pytest.approx(want, abs=3e-5), (step, got)


def test_ranks_split_the_global_batch(setup):
    """What DDP relies on (quick; the real torchrun run is in the slow tier): the rank shares of a step are the
    single-process batch of the same global size, in order, so the global batch does not depend on the world."""
    _, manifest = setup
    data = HealData(load_rows([manifest]), parse_tasks("transcribe,translate:fr,translate:de"), seed=3)
    for step in range(5):
        whole = data.batch(step, 4)
        shares = [data.batch(step, 2, rank, 2) for rank in range(2)]
        for k in (0, 2, 3):  # tasks, targets, transcripts (wavs: the same files)
            assert shares[0][k] + shares[1][k] == whole[k]
        assert sum(data.task_counts(step, 4).values()) == 4


def test_ablation_components_and_distillation(setup, tmp_path):
    d, manifest = setup
    pruned = load_model(d / "pruned")
    prov = heal(d / "pruned", [manifest], tmp_path / "proj", HealConfig(steps=2, train="projector", **FAST),
                progress=False)
    m = load_model(tmp_path / "proj")
    assert prov.healing["adapter"] is None and prov.healing["trainable_parameters"].keys() == {"projector"}
    assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in _state(m, "decoder.").items())
    assert not torch.equal(m.projector.mlp[0].weight, pruned.projector.mlp[0].weight)
    assert any("ctc" in r for r in _log(tmp_path / "proj.work"))  # ctc_embed projector: auxiliary CTC

    prov = heal(d / "pruned", [manifest], tmp_path / "lora", HealConfig(steps=2, train="lora", **FAST),
                teacher=d / "base", progress=False)
    m = load_model(tmp_path / "lora")
    assert prov.healing["teacher"] == str((d / "base").resolve())
    assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in _state(m, "projector.").items())
    assert not torch.equal(m.decoder.model.layers[1].mlp.down_proj.weight,
                           pruned.decoder.model.layers[1].mlp.down_proj.weight)
    assert all("kl" in r and "ctc" not in r for r in _log(tmp_path / "lora.work"))
    with pytest.raises(SlimError, match="choose lora, projector"):
        HealConfig(train="lora,encoder")


def test_adapter_or_checkpoint_of_another_layer_list_is_refused(setup, tmp_path, capsys):
    d, manifest = setup
    heal(d / "pruned", [manifest], tmp_path / "h", HealConfig(steps=1, **FAST), progress=False)
    prune(d / "base", tmp_path / "other", layers="4-5")  # same layer count, other layers
    code = cli.main(["heal", "--model", str(tmp_path / "other"), "--data", manifest, "--out", str(tmp_path / "x"),
                     "--adapter", str(tmp_path / "h.work" / "adapter"), "--steps", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "decoder layers [0, 1, 4, 5]" in err and "runs layers [0, 1, 2, 3]" in err
    code = cli.main(["heal", "--model", str(tmp_path / "other"), "--data", manifest, "--out", str(tmp_path / "x"),
                     "--work", str(tmp_path / "h.work"), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint" in err and "another --work" in err
    # the right model takes the adapter (0 steps: merge only)
    code = cli.main(["heal", "--model", str(d / "pruned"), "--data", manifest, "--out", str(tmp_path / "y"),
                     "--adapter", str(tmp_path / "h.work" / "adapter"), "--steps", "0", "--train", "lora"])
    assert code == 0, capsys.readouterr().err
    y, h = load_model(tmp_path / "y"), load_model(tmp_path / "h")
    assert torch.equal(y.decoder.model.layers[3].self_attn.v_proj.weight,
                       h.decoder.model.layers[3].self_attn.v_proj.weight)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(setup, tmp_path):
    d, manifest = setup
    out = tmp_path / "ddp"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
           "-m", "speechllm.cli", "heal", "--model", str(d / "pruned"), "--data", manifest, "--out", str(out),
           "--steps", "3", "--batch-size", "2", "--warmup", "0", "--threads", "1", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("healed ") == 1 and "2 process(es)" in res.stdout  # rank 0 reports, once
    prov = Provenance.read(out)
    assert prov.healing["world_size"] == 2 and prov.healing["global_batch"] == 4
    log = _log(tmp_path / "ddp.work")
    assert [r["step"] for r in log] == [1, 2, 3] and all(sum(r["tasks"].values()) == 4 for r in log)
    healed, pruned = load_model(out), load_model(d / "pruned")
    assert all(torch.equal(v, _state(pruned, "encoder.")[k]) for k, v in _state(healed, "encoder.").items())
    assert not torch.equal(healed.projector.mlp[0].weight, pruned.projector.mlp[0].weight)
