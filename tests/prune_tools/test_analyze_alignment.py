"""analyze --end / --text-source: speech and text inputs that end at the same position, translation on the source."""

import json

import pytest
import torch

from prune_tools.analyze import analyze_model, prompt_ids, speech_inputs, text_inputs
from speechllm import cli
from speechllm.audio import load_audio
from speechllm.builders import tiny_slam
from speechllm.tasks import Task
from tests.conftest import DE, FR, TEXTS, make_manifest


@pytest.fixture(scope="module")
def model():
    return tiny_slam("llama", layers=4).eval()


@pytest.fixture(scope="module")
def rows(speech_files):
    return [{"id": str(i), "audio": a, "text": t, "translation": {"fr": FR[i], "de": DE[i]}}
            for i, (a, t) in enumerate(zip(speech_files, TEXTS))]


@torch.no_grad()
def test_task_end_puts_text_in_the_prompt(model, speech_files):
    task = model.resolve_tasks([Task("translate", "fr")])[0]
    before, after = prompt_ids(model, task)
    assert after  # the demo-style prompt ends with a task tag: <|translate|><|fr|>
    wavs = [load_audio(f) for f in speech_files]
    sp = speech_inputs(model, task, wavs)
    tx = text_inputs(model, TEXTS, task)
    emb = model.lm.get_input_embeddings()
    for i, text in enumerate(TEXTS):  # left padded: row i's real tokens are its last ones
        ids = before + model.text_ids(text) + after
        assert int(tx.attention_mask[i].sum()) == len(ids)
        assert torch.equal(tx.inputs_embeds[i, -len(ids):], emb(torch.tensor(ids)))
    k = len(after)  # both inputs end with the same task-tag embeddings
    assert torch.equal(sp.inputs_embeds[:, -k:], tx.inputs_embeds[:, -k:])
    plain = text_inputs(model, TEXTS)  # the default: [BOS] + text, ending at the last word
    assert torch.equal(plain.inputs_embeds[:, -1], emb(torch.tensor([model.text_ids(t)[-1] for t in TEXTS])))


@torch.no_grad()
def test_content_end_cuts_the_speech_prompt_after_the_audio(model, speech_files):
    task = model.resolve_tasks([Task()])[0]
    wavs = [load_audio(f) for f in speech_files]
    full = speech_inputs(model, task, wavs)
    cut = speech_inputs(model, task, wavs, "content")
    k = len(prompt_ids(model, task)[1])
    assert cut.inputs_embeds.shape[1] == full.inputs_embeds.shape[1] - k
    assert torch.equal(cut.inputs_embeds, full.inputs_embeds[:, :-k])
    assert torch.equal(cut.attention_mask, full.attention_mask[:, :-k])
    # the last kept position is the clip's last audio embedding
    audio, lengths, _, _ = model.encode(*model.features(wavs))
    for i in range(len(wavs)):
        assert torch.allclose(cut.inputs_embeds[i, -1], audio[i, int(lengths[i]) - 1])


def test_source_text_and_alignment_in_the_analysis(model, rows):
    tasks = [Task(), Task("translate", "fr")]
    kw = dict(inputs=("text",), tasks=tasks, batch_size=2, progress=False)
    default = analyze_model(model, rows, **kw)
    assert default["alignment"]["end"] == "own" and default["alignment"]["text_source"] == "reference"
    r = default["results"]["last"]["text"]
    assert r["translate_fr"]["matrix"] != r["transcribe"]["matrix"]  # the French reference vs the English text
    src = analyze_model(model, rows, text_source="source", **kw)["results"]["last"]["text"]
    assert src["translate_fr"]["matrix"] == src["transcribe"]["matrix"] == r["transcribe"]["matrix"]
    tagged = analyze_model(model, rows, text_source="source", end="task", **kw)
    m = tagged["results"]["last"]["text"]
    assert m["translate_fr"]["matrix"] != m["transcribe"]["matrix"]  # same text, other task tag
    assert tagged["alignment"] == {"end": "task", "text_source": "source",
                                   "definition": tagged["alignment"]["definition"]}
    assert "task tag" in tagged["alignment"]["definition"]


def test_cli_options(tmp_path, speech_files, tiny_slam_dir, capsys):
    man = make_manifest(tmp_path / "m.jsonl", speech_files)
    out = tmp_path / "a"
    assert cli.main(["analyze", "--model", str(tiny_slam_dir), "--data", man, "--out", str(out), "--tasks",
                     "transcribe", "--end", "content", "--text-source", "source", "--no-plots", "--device", "cpu"]) == 0
    a = json.loads((out / "analysis.json").read_text())
    assert a["alignment"]["end"] == "content" and a["alignment"]["text_source"] == "source"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["analyze", "--data", man, "--out", str(out), "--end", "middle"])
    assert exc.value.code == 2 and "--end" in capsys.readouterr().err
