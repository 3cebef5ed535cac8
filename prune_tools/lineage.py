"""Which model a model dir is: its weight fingerprint, the original layers it runs, the dirs it derives from.

    from prune_tools.lineage import layer_list, lineage, model_fingerprint

    fp = model_fingerprint(model)     # 16 hex digits; equal for fp32/fp16/bf16 loads of the same weights
    kept = layer_list(model)          # e.g. [0, 1, 4, 5]: original layer indices, from the provenance
    chain = lineage(model.provenance, {"dir": ..., "produced_by": ..., "fingerprint": fp, "decoder_layers": 4})

``analyze`` stamps its output with the fingerprint and ``prune`` refuses an analysis of another
model; ``heal`` refuses a checkpoint or adapter of another layer list; ``prune``, ``heal`` and
``export`` append the parent to the lineage in the provenance they write.
"""

from __future__ import annotations

import hashlib

import torch

from speechllm.errors import SlimError


def model_fingerprint(model) -> str:
    """A short hash of the weights, the same whatever dtype the model was loaded in.

    For every parameter (sorted by name): its name, shape and up to 64 evenly strided values
    rounded to bfloat16. One rounding of the stored values gives the same bf16 numbers from an
    fp32, fp16 or bf16 load, so ``analyze --dtype bfloat16`` on a GPU and ``prune`` on a CPU
    agree; two different checkpoints (another seed, pruned or healed weights) do not.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 64)
        sample = flat[::step][:64].to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes()
        h.update(f"{name}:{tuple(p.shape)}:".encode())
        h.update(sample)
    return h.hexdigest()[:16]


def layer_list(model) -> list[int]:
    """The original (root) layer index of each decoder layer this model runs, from its provenance."""
    L = model.num_decoder_layers
    kept = (getattr(model, "provenance", None) or {}).get("kept_layers")
    if kept is None:
        return list(range(L))
    if len(kept) != L:
        raise SlimError(f"model provenance lists {len(kept)} kept layers but the decoder has {L}: "
                        "the model dir was modified outside slimspeech; re-run prune from the original model",
                        param="model")
    return [int(i) for i in kept]


def lineage(parent_prov: dict, parent: dict) -> list[dict]:
    """The chain of model dirs this one derives from, oldest first: the parent's lineage + the parent."""
    return list(parent_prov.get("lineage") or []) + [
        {k: parent.get(k) for k in ("dir", "produced_by", "fingerprint", "decoder_layers")}]


def root_layer_count(model) -> int:
    """Decoder layers of the original, unpruned model this one derives from."""
    prov = getattr(model, "provenance", None) or {}
    return int(prov.get("root_decoder_layers") or model.num_decoder_layers)
