"""Batched greedy decoding with KV cache, over HF ``generate(inputs_embeds=..., attention_mask=...)``.

    texts = transcribe(model, [wav1, wav2], [Task("transcribe"), Task("translate", "fr")])

Batches are left padded; each sequence stops at its own EOS (later positions are padding and
are cut off); a batch gives the same tokens as its samples one by one.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from .families.base import DecoderInputs, SpeechLLM
from .tasks import Task


def generation_config(model: SpeechLLM, max_new_tokens: int | None = None,
                      eos_token_id: int | None = None) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_new_tokens or model.max_new_tokens, do_sample=False, num_beams=1,
                            eos_token_id=model.eos_token_id if eos_token_id is None else eos_token_id, pad_token_id=model.pad_token_id,
                            bos_token_id=model.tokenizer.bos_token_id)


@torch.inference_mode()
def greedy_generate(model: SpeechLLM, inputs: DecoderInputs, max_new_tokens: int | None = None, *,
                    streamer=None, stopping_criteria=None, eos_token_id: int | None = None) -> list[list[int]]:
    """-> new token ids per sequence, without EOS and what follows it."""
    config = generation_config(model, max_new_tokens, eos_token_id)
    out = model.lm.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                            generation_config=config, streamer=streamer, stopping_criteria=stopping_criteria)
    result = []
    for row in out.tolist():
        if config.eos_token_id in row:
            row = row[: row.index(config.eos_token_id)]
        result.append(row)
    return result


def decode(model: SpeechLLM, ids: list[int]) -> str:
    return model.tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.inference_mode()
def transcribe(model: SpeechLLM, wavs: list, tasks: list[Task] | Task | None = None,
               max_new_tokens: int | None = None, batch_size: int = 16) -> list[str]:
    """Run (audio, task) pairs through the model in batches of ``batch_size``; -> one text per clip."""
    if tasks is None or isinstance(tasks, Task):
        tasks = [tasks or Task()] * len(wavs)
    texts: list[str] = []
    for start in range(0, len(wavs), batch_size):
        inputs = model.embed(list(tasks[start:start + batch_size]), list(wavs[start:start + batch_size]))
        texts += [decode(model, ids) for ids in greedy_generate(model, inputs, max_new_tokens)]
    return texts
