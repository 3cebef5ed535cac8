"""Decoder-layer surgery for any family (docs/architecture.md, "Layer surgery").

    kept = remove_decoder_layers(model, [5, 6, 7])     # -> original indices of the kept layers

Removing layers must, together: rebuild ``layers`` from the kept ones; renumber every
``layer_idx`` inside them (the KV cache indexes by it: a stale index breaks ``generate``);
slice per-layer config lists (``layer_types``, ...) and remap layer-index lists
(``mlp_only_layers``); set ``num_hidden_layers``; recompute ``max_window_layers``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

from torch import nn

from .errors import SlimError

#: config lists with one entry per layer: sliced to the kept layers
PER_LAYER_LISTS = ("layer_types", "mlp_layer_types", "no_rope_layers", "attention_chunk_sizes")
#: config lists of layer indices: remapped to positions among the kept layers
LAYER_INDEX_LISTS = ("mlp_only_layers",)


def parse_layers(text: str) -> list[int]:
    """``"10-14,20"`` -> [10, 11, 12, 13, 14, 20] (ranges inclusive)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise SlimError(f"bad layer list {text!r}: use e.g. 10-14 or 3,5,7", param="layers") from None
    return sorted(set(out))


def _configs(model) -> list:
    seen, out = set(), []
    for cfg in (model.text_config(), getattr(model.decoder_stack(), "config", None)):
        if cfg is not None and id(cfg) not in seen:
            seen.add(id(cfg))
            out.append(cfg)
    return out


def remove_decoder_layers(model, remove: Iterable[int]) -> list[int]:
    """Delete decoder layers in place; -> the original indices of the kept layers, in order."""
    stack = model.decoder_stack()
    n = len(stack.layers)
    remove = sorted(set(int(i) for i in remove))
    bad = [i for i in remove if not 0 <= i < n]
    if bad:
        raise SlimError(f"layers {bad} do not exist: the decoder has layers 0-{n - 1}", param="layers")
    if len(remove) >= n:
        raise SlimError(f"removing {len(remove)} of {n} decoder layers would leave none: remove fewer",
                        param="layers")
    keep = [i for i in range(n) if i not in set(remove)]
    stack.layers = nn.ModuleList(stack.layers[i] for i in keep)
    for new_idx, layer in enumerate(stack.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    for cfg in _configs(model):
        for name in PER_LAYER_LISTS:
            value = getattr(cfg, name, None)
            if isinstance(value, list) and len(value) == n:
                setattr(cfg, name, [value[i] for i in keep])
        for name in LAYER_INDEX_LISTS:
            value = getattr(cfg, name, None)
            if isinstance(value, list):
                setattr(cfg, name, [keep.index(i) for i in value if i in keep])
        if getattr(cfg, "max_window_layers", None) is not None:
            cfg.max_window_layers = sum(1 for i in keep if i < cfg.max_window_layers)
        cfg.num_hidden_layers = len(keep)
    if hasattr(stack, "has_sliding_layers"):
        stack.has_sliding_layers = "sliding_attention" in (getattr(stack.config, "layer_types", None) or [])
    return keep


class _SkippedLayer(nn.Module):
    """Stands in for a layer: passes the residual stream through unchanged."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.attention_type = getattr(layer, "attention_type", None)

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextmanager
def skip_layers(model, skip: Iterable[int]):
    """Run the unpruned model as if ``skip`` were removed (the reference surgery is tested against)."""
    stack = model.decoder_stack()
    original = stack.layers
    skip = set(skip)
    stack.layers = nn.ModuleList(_SkippedLayer(l) if i in skip else l for i, l in enumerate(original))
    try:
        yield model
    finally:
        stack.layers = original
