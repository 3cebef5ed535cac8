"""Which model a model dir is: its weight fingerprint and the original layers it runs.

    from prune_tools.lineage import layer_list, model_fingerprint

    fp = model_fingerprint(model)     # 16 hex digits; equal for a float32 model and its float16 copy
    kept = layer_list(model)          # e.g. [0, 1, 4, 5]: original layer indices, from the provenance

The fingerprint and the provenance schema (parent, lineage, fingerprint, layers) live in
``speechllm.provenance``, which says what the fingerprint hashes and which dtype changes keep it.
``analyze`` stamps its output with the fingerprint and ``prune`` refuses an analysis of another
model; ``evaluate`` records it and ``export`` refuses a report of another model; ``heal`` refuses a
checkpoint or adapter of another layer list; ``prune``, ``heal`` and ``export`` derive the new
provenance from the parent's (``Provenance.derive``: the parent appended to the lineage).
"""

from __future__ import annotations

from speechllm.errors import SlimError
from speechllm.provenance import Provenance, model_fingerprint

__all__ = ["layer_list", "model_fingerprint", "root_layer_count"]


def layer_list(model) -> list[int]:
    """The original (root) layer index of each decoder layer this model runs, from its provenance."""
    L = model.num_decoder_layers
    kept = Provenance.of(model).kept_layers
    if kept is None:
        return list(range(L))
    if len(kept) != L:
        raise SlimError(f"model provenance lists {len(kept)} kept layers but the decoder has {L}: "
                        "the model dir was modified outside slimspeech; re-run prune from the original model",
                        param="model")
    return [int(i) for i in kept]


def root_layer_count(model) -> int:
    """Decoder layers of the original, unpruned model this one derives from."""
    return int(Provenance.of(model).root_decoder_layers or model.num_decoder_layers)
