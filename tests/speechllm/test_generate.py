"""A batch gives exactly the tokens of its samples decoded one by one (mixed lengths and tasks)."""

import pytest
import torch

from speechllm.builders import tiny_qwen2_audio, tiny_slam
from speechllm.generate import greedy_generate
from speechllm.tasks import Task

BUILDERS = {
    "slam-llama": lambda: tiny_slam("llama"),
    "slam-qwen2": lambda: tiny_slam("qwen2"),
    "slam-llama-stack_mlp": lambda: tiny_slam("llama", projector="stack_mlp"),
    "slam-llama-ctc_compress": lambda: tiny_slam("llama", projector="ctc_compress"),
    "qwen2_audio": tiny_qwen2_audio,
}
TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de"), Task("transcribe")]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_batch_equals_one_by_one(name, noise_wavs):
    model = BUILDERS[name]().eval()
    batch = greedy_generate(model, model.embed(TASKS, noise_wavs), max_new_tokens=10)
    single = [greedy_generate(model, model.embed([t], [w]), max_new_tokens=10)[0]
              for t, w in zip(TASKS, noise_wavs)]
    assert batch == single
    assert all(len(ids) > 0 for ids in batch)
    # the prompts really differ by task: the embeddings of one clip under two tasks are not the same
    a, b = model.embed(TASKS[:2], noise_wavs[:1] * 2).inputs_embeds
    assert not torch.equal(a, b)


def test_per_sequence_eos_and_max_new_tokens(noise_wavs):
    model = tiny_slam("llama").eval()
    inputs = model.embed(TASKS[:2], noise_wavs[:2])
    free = greedy_generate(model, inputs, max_new_tokens=8)
    assert [len(ids) for ids in free] == [8, 8]
    # make the third token of sequence 0 the stop token: sequence 0 ends there, sequence 1 runs on
    stop = free[0][2]
    assert stop not in free[0][:2]
    got = greedy_generate(model, inputs, max_new_tokens=8, eos_token_id=stop)
    assert got[0] == free[0][:2]
    expected_1 = free[1][: free[1].index(stop)] if stop in free[1] else free[1]
    assert got[1] == expected_1


def test_targets_give_labels_only_on_target_tokens(noise_wavs):
    model = tiny_slam("llama")
    inputs = model.embed(TASKS[:2], noise_wavs[:2], targets=["the dog", "le chien voit"])
    labels = inputs.labels
    for i, text in enumerate(["the dog", "le chien voit"]):
        got = labels[i][labels[i] != -100].tolist()
        assert got == model.text_ids(text) + [model.eos_token_id]
    # padding is on the left, and positions restart at 0 after it
    assert inputs.attention_mask[:, -1].all()
    row = inputs.attention_mask[1]
    first = int(row.argmax())
    assert inputs.position_ids[1, first] == 0
    out = model.decoder(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                        position_ids=inputs.position_ids, labels=labels)
    assert torch.isfinite(out.loss)
