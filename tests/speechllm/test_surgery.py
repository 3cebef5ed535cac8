"""Pruned model == unpruned model run with those layers skipped (logits and greedy tokens),
before and after save + reload, for Llama, Qwen2 with sliding-window layer_types, and qwen2_audio."""

import copy

import pytest
import torch

from speechllm.builders import tiny_qwen2_audio, tiny_slam
from speechllm.errors import SlimError
from speechllm.generate import greedy_generate
from speechllm.modeldir import load_model
from speechllm.surgery import parse_layers, remove_decoder_layers, skip_layers
from speechllm.tasks import Task

BUILDERS = {"slam-llama": lambda: tiny_slam("llama"), "slam-qwen2": lambda: tiny_slam("qwen2"),
            "slam-llama-ctc_compress": lambda: tiny_slam("llama", projector="ctc_compress"),
            "qwen2_audio": tiny_qwen2_audio}
TASKS = [Task("transcribe"), Task("translate", "de"), Task("translate", "fr")]
REMOVE = [1, 2]


def _logits(model, inputs):
    with torch.no_grad():
        return model.lm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                        position_ids=inputs.position_ids).logits


def _greedy_without_cache(model, inputs, steps):
    """Reference decoding: the whole sequence re-run every step, no KV cache (so no cache indexing)."""
    emb, mask = inputs.inputs_embeds, inputs.attention_mask
    table = model.lm.get_input_embeddings()
    out = [[] for _ in range(emb.shape[0])]
    done = [False] * emb.shape[0]
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            nxt = model.lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos).logits[:, -1].argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            done[i] = done[i] or t == model.eos_token_id
            if not done[i]:
                out[i].append(t)
        emb = torch.cat([emb, table(nxt)[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_pruned_equals_skipped(name, noise_wavs, tmp_path):
    model = BUILDERS[name]().eval()
    wavs = noise_wavs[:3]
    inputs = model.embed(TASKS, wavs)
    with skip_layers(model, REMOVE):
        ref_logits = _logits(model, inputs)
        ref_tokens = _greedy_without_cache(model, inputs, 8)
    full_logits = _logits(model, inputs)
    assert not torch.allclose(full_logits, ref_logits, atol=1e-3)  # the removed layers did something

    pruned = copy.deepcopy(model)
    kept = remove_decoder_layers(pruned, REMOVE)
    assert kept == [0, 3]
    cfg = pruned.text_config()
    assert cfg.num_hidden_layers == 2 == pruned.num_decoder_layers
    for j, layer in enumerate(pruned.decoder_stack().layers):  # the stale layer_idx trap
        assert {m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")} == {j}
    if "qwen2" in name:  # Qwen2: full, full, sliding, sliding -> full, sliding
        assert cfg.layer_types == ["full_attention", "sliding_attention"]
        assert cfg.max_window_layers == 1
    assert torch.allclose(_logits(pruned, inputs), ref_logits, atol=1e-5)
    assert greedy_generate(pruned, inputs, max_new_tokens=8) == ref_tokens

    pruned.save(tmp_path / "pruned")
    reloaded = load_model(tmp_path / "pruned")
    assert reloaded.num_decoder_layers == 2
    assert getattr(reloaded.text_config(), "layer_types", None) == getattr(cfg, "layer_types", None)
    re_inputs = reloaded.embed(TASKS, wavs)
    assert torch.allclose(_logits(reloaded, re_inputs), ref_logits, atol=1e-5)
    assert greedy_generate(reloaded, re_inputs, max_new_tokens=8) == ref_tokens


def test_decoder_dir_loads_alone_after_pruning(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_slam("qwen2")
    remove_decoder_layers(model, [0])
    model.save(tmp_path / "m")
    dec = AutoModelForCausalLM.from_pretrained(tmp_path / "m" / "decoder")
    assert dec.config.num_hidden_layers == 3 and len(dec.model.layers) == 3
    assert torch.equal(dec.model.layers[0].mlp.up_proj.weight, model.decoder.model.layers[0].mlp.up_proj.weight)


def test_bad_layer_requests():
    model = tiny_slam("llama")
    with pytest.raises(SlimError, match="leave none"):
        remove_decoder_layers(model, range(4))
    with pytest.raises(SlimError, match="do not exist"):
        remove_decoder_layers(model, [7])
    assert parse_layers("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(SlimError, match="bad layer list"):
        parse_layers("a-b")
