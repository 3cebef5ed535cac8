"""``slimspeech inspect``: the shipped demo dirs, an imported SLAM-LLM replica (hf_whisper encoder), a tiny slam
dir and a qwen2_audio dir; counts checked against the loaded models, and against headers alone.

    .venv/bin/python -m pytest -q tests/speechllm/test_inspect.py
"""

import json
import shutil
import struct
import subprocess
import sys

import pytest

from speechllm import cli
from speechllm.builders import slam_llm_replica, tiny_qwen2_audio
from speechllm.importers import import_slam
from speechllm.inspect import inspect_model_dir
from speechllm.modeldir import DEMO_DIR, load_model

DEMO_PRUNED = DEMO_DIR.parent / "demo-pruned"


@pytest.fixture(scope="module")
def imported_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    src = slam_llm_replica(root / "src")
    return import_slam(src["encoder"], src["llm"], src["projector"], root / "slam", lora=src["lora"],
                       languages="fr", max_new_tokens=4)


def _parts(model) -> dict:
    """Parameters per part of a loaded model, by its modules."""
    if model.family == "slam":
        mods = {"encoder": model.encoder, "projector": model.projector, "decoder": model.decoder}
    else:
        m = model.model.model
        mods = {"encoder": m.audio_tower, "projector": m.multi_modal_projector}
    out = {name: sum(p.numel() for p in mod.parameters()) for name, mod in mods.items()}
    if "decoder" not in out:
        out["decoder"] = model.num_parameters() - out["encoder"] - out["projector"]
    return out


def _check_against_loaded(path):
    info = inspect_model_dir(path)
    model = load_model(path)
    c = info["parameters"]
    assert c["total"] == model.num_parameters()
    assert {k: c[k] for k in ("encoder", "projector", "decoder")} == _parts(model)
    assert c["decoder_share"] == round(c["decoder"] / c["total"], 4)
    assert info["decoder"]["layers"] == model.num_decoder_layers
    assert info["tasks"] == model.prompts.supported()
    return info


def test_shipped_demo_dirs():
    demo = _check_against_loaded(DEMO_DIR)
    pruned = _check_against_loaded(DEMO_PRUNED)
    assert demo["family"] == "slam" and demo["encoder"]["kind"] == "slimspeech"
    assert demo["decoder"]["layers"] == 12 and pruned["decoder"]["layers"] == 10
    assert demo["dtype"] == "float16" and demo["projector"]["kind"] == "ctc_compress"
    assert pruned["parameters"]["decoder"] < demo["parameters"]["decoder"]
    assert pruned["parameters"]["encoder"] == demo["parameters"]["encoder"]
    chain = pruned["provenance"]["lineage"]
    assert [s["produced_by"] for s in chain] == ["slimspeech train", "slimspeech prune", "slimspeech heal",
                                                  "slimspeech export"]
    assert [s["decoder_layers"] for s in chain] == [12, 10, 10, 10]
    assert pruned["provenance"]["removed_layers"] == [5, 6]


def test_imported_slam_text_and_json(imported_dir, capsys):
    info = _check_against_loaded(imported_dir)
    assert info["encoder"]["kind"] == "hf_whisper" and info["encoder"]["d_model"] == 64
    assert info["encoder"]["n_mels"] == 80 and info["encoder"]["padded_seconds"] == 30
    assert info["projector"]["stack"] == 5 and info["projector"]["activation"] == "relu"
    assert info["decoder"]["architecture"] == "LlamaForCausalLM" and info["bos_position"] == "after_audio"
    assert set(info["provenance"]["sources"]) == {"encoder", "llm", "projector", "lora"}
    assert info["provenance"]["lineage"][-1]["produced_by"] == "slimspeech import slam"

    assert cli.main(["inspect", str(imported_dir)]) == 0
    text = capsys.readouterr().out
    share = info["parameters"]["decoder_share"]
    assert f"decoder share  {share:.1%} of the parameters are the decoder's (4 layers)" in text
    assert "hf_whisper (WhisperEncoder): 2 layers, d_model 64, 80 mel bins, padded to 30 s" in text
    assert "stack_mlp (relu): 5 x 64 -> 128 -> 32" in text
    assert "lineage" in text and "slimspeech import slam (4 layers): this dir" in text
    assert cli.main(["inspect", "--json", str(imported_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(info))


def test_tiny_slam_and_qwen2_audio(tiny_slam_dir, tmp_path):
    slam = _check_against_loaded(tiny_slam_dir)
    assert slam["encoder"]["kind"] == "slimspeech" and slam["projector"]["kind"] == "ctc_embed"
    tiny_qwen2_audio().save(tmp_path / "q")
    q = _check_against_loaded(tmp_path / "q")
    assert q["family"] == "qwen2_audio" and q["encoder"]["layers"] == 2 and q["projector"]["in_dim"] == 32
    assert q["bos_position"] is None


def test_only_headers_are_read(imported_dir, tmp_path):
    """The weights after each safetensors header can be gone: inspect still counts everything (it never
    reads a tensor) and does not import torch."""
    cut = tmp_path / "cut"
    shutil.copytree(imported_dir, cut)
    for f in cut.rglob("*.safetensors"):
        data = f.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        f.write_bytes(data[: 8 + n])
    full, headers_only = inspect_model_dir(imported_dir), inspect_model_dir(cut)
    for key in ("encoder", "projector", "decoder", "parameters", "weight_bytes"):
        assert headers_only[key] == full[key]
    code = ("import sys; from speechllm.inspect import inspect_model_dir; "
            f"inspect_model_dir({str(cut)!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_not_a_model_dir_is_one_error_line(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a slimspeech model dir" in err[0]
