import json
import os

import pytest
import torch

from speechllm.builders import tiny_qwen2_audio, tiny_slam
from speechllm.errors import ModelDirError
from speechllm.modeldir import SPEC_FILE, atomic_dir, load_model, read_spec
from speechllm.tasks import Task


def test_slam_dir_is_self_describing_and_round_trips(tiny_slam_dir, noise_wavs):
    names = sorted(os.listdir(tiny_slam_dir))
    assert names == ["decoder", "encoder", "projector.safetensors", "provenance.json", SPEC_FILE]
    spec = read_spec(tiny_slam_dir)
    assert spec["family"] == "slam" and spec["projector"]["kind"] == "ctc_embed"
    assert json.loads((tiny_slam_dir / "provenance.json").read_text()) == {"built_by": "tests"}
    fresh = tiny_slam("llama").eval()
    loaded = load_model(tiny_slam_dir)
    assert loaded.provenance == {"built_by": "tests"}
    a = fresh.embed([Task()], noise_wavs[:1]).inputs_embeds
    b = loaded.embed([Task()], noise_wavs[:1]).inputs_embeds
    assert torch.equal(a, b)


def test_qwen2_audio_round_trip(tmp_path, noise_wavs):
    model = tiny_qwen2_audio().eval()
    model.save(tmp_path / "q")
    loaded = load_model(tmp_path / "q")
    tasks = [Task("translate", "fr")]
    assert torch.allclose(model.embed(tasks, noise_wavs[:1]).inputs_embeds,
                          loaded.embed(tasks, noise_wavs[:1]).inputs_embeds)


def test_atomic_save_keeps_old_dir_on_failure(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("new")
            raise RuntimeError("crash mid-save")
    assert os.listdir(target) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp dir left behind
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert os.listdir(target) == ["new.txt"]


def test_bad_model_dirs(tmp_path):
    with pytest.raises(ModelDirError, match="not found"):
        read_spec(tmp_path / "missing")
    with pytest.raises(ModelDirError, match="no speechllm.json"):
        read_spec(tmp_path)
    (tmp_path / SPEC_FILE).write_text(json.dumps({"format_version": 1, "family": "whisperx"}))
    with pytest.raises(ModelDirError, match="unknown family"):
        read_spec(tmp_path)
