"""``slimspeech prune``: remove a contiguous block of decoder layers and write a new model dir.

    slimspeech prune --model M --analysis runs/analysis --fraction 0.3 --out runs/pruned-30
    slimspeech prune --model M --layers 10-14 --out runs/pruned
    # the block from another condition of the analysis:
    slimspeech prune --model M --analysis A --fraction 0.3 --input text --task average --tokens mean --out ...

``--fraction f`` removes n = round(f * L) layers (half up): the block of n consecutive layers
with the smallest angular distance d(l, n) in the analysis, for the chosen input (speech by
default), task (``transcribe`` by default, ``average`` = mean over the analysed tasks) and token
reduction (``last``). The analysis must be of this very model (its weight fingerprint is checked).

Any family works (the surgery is ``speechllm.surgery.remove_decoder_layers``). The new dir's
``provenance.json`` (``speechllm.provenance.Provenance``) names the parent (dir, fingerprint, layer
count), the removed and kept layers (``Provenance.kept_layers`` / ``removed_layers`` count in the
layers of the original, unpruned model, so a model pruned twice still says which original layers
it runs; ``removed_from_parent`` counts in the parent's), the analysis summary the block came
from, and its own fingerprint, parameters and weight bytes (float32).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from speechllm.devices import DTYPES
from speechllm.errors import SlimError
from speechllm.modeldir import default_model_dir, load_model
from speechllm.provenance import ModelRef, Provenance
from speechllm.surgery import parse_layers, remove_decoder_layers
from speechllm.tasks import parse_task

from .analyze import AVERAGE, read_analysis
from .lineage import layer_list, model_fingerprint, root_layer_count

log = logging.getLogger(__name__)


def block_size(fraction: float, num_layers: int) -> int:
    """round(fraction * L), half up; SlimError if that removes no layer or every layer."""
    if not 0 < fraction < 1:
        raise SlimError(f"--fraction {fraction} is outside (0, 1): pass the share of decoder layers to remove, "
                        "e.g. 0.3", param="fraction")
    n = math.floor(fraction * num_layers + 0.5 + 1e-9)
    if n < 1:
        raise SlimError(f"--fraction {fraction} of {num_layers} decoder layers rounds to 0 layers: "
                        f"use at least {1 / num_layers:.3g}", param="fraction")
    if n >= num_layers:
        raise SlimError(f"--fraction {fraction} would remove all {num_layers} decoder layers (round({fraction} x "
                        f"{num_layers}) = {n}): use at most {(num_layers - 1) / num_layers:.3g}", param="fraction")
    return n


def task_key(task: str) -> str:
    return AVERAGE if task == AVERAGE else parse_task(task).label


def check_analysis(analysis: dict, model, path="analysis") -> None:
    """SlimError unless ``analysis`` was computed on this model (same layer count and weights).

    An analysis that loaded the model in bfloat16 is compared with this model's fingerprint as a
    bfloat16 load would see it (``speechllm.provenance`` explains why that one cast needs saying).
    """
    am = ModelRef.from_dict(analysis["model"])
    L = model.num_decoder_layers
    if am.decoder_layers != L:
        raise SlimError(f"{path} analyses a model with {am.decoder_layers} decoder layers ({am.dir}), "
                        f"this model has {L}: run `slimspeech analyze` on this model", param="analysis")
    fp = model_fingerprint(model, loaded_as=DTYPES.get(am.dtype or "float32"))
    if am.fingerprint != fp:
        raise SlimError(f"{path} was computed on another model ({am.dir}, fingerprint {am.fingerprint}; "
                        f"this model's is {fp}): run `slimspeech analyze` on this model", param="analysis")


def select_block(analysis: dict, n: int, *, input: str = "speech", task: str = "transcribe",
                 tokens: str = "last") -> dict:
    """The best block of ``n`` layers of one analysis condition -> {n, start, layers, distance, ...}."""
    key = task_key(task)
    try:
        cond = analysis["results"][tokens][input][key]
    except KeyError:
        have = [f"--tokens {t} --input {i} --task {k}" for t, by_i in analysis["results"].items()
                for i, by_k in by_i.items() for k in by_k]
        raise SlimError(f"the analysis has no condition tokens={tokens} input={input} task={key}; it has: "
                        + "; ".join(have), param="task") from None
    best = cond["best"][n - 1]
    assert best["n"] == n
    return {**best, "input": input, "task": key, "tokens": tokens}


def prune_model(model, remove: list[int], *, parent_dir=None, analysis_summary: dict | None = None,
                parent_fingerprint: str | None = None) -> Provenance:
    """Remove decoder layers ``remove`` (indices in this model) in place; -> the new provenance (also
    set as ``model.provenance``, so ``model.save`` writes it)."""
    parent_prov = Provenance.of(model)
    before = layer_list(model)
    root_L = root_layer_count(model)
    parent = ModelRef.of(model, parent_dir, fingerprint=parent_fingerprint, kept_layers=before)
    kept_here = remove_decoder_layers(model, remove)
    kept = [before[i] for i in kept_here]
    prov = parent_prov.derive(
        "slimspeech prune", parent, root_decoder_layers=root_L,
        removed_from_parent=sorted(set(remove)),
        removed_layers=[i for i in range(root_L) if i not in set(kept)],
        kept_layers=kept, analysis=analysis_summary, healing=None, scores=None,
        # what the parent's verb alone recorded (a training recipe) describes the parent, not this dir; an import's
        # sources describe the root, which every dir made from it names
        extra=parent_prov.root_extra(),
    ).describing(model)
    model.provenance = prov.to_dict()
    return prov


def prune(model_dir, out, *, analysis=None, fraction: float | None = None, layers: str | list[int] | None = None,
          input: str = "speech", task: str = "transcribe", tokens: str = "last") -> Provenance:
    """Load ``model_dir``, remove the chosen layers, save to ``out``; -> the new provenance."""
    if (fraction is None) == (layers is None):
        raise SlimError("pass exactly one of --fraction (with --analysis) or --layers", param="fraction")
    if fraction is not None and analysis is None:
        raise SlimError("--fraction needs --analysis (the output of slimspeech analyze on this model)",
                        param="analysis")
    a = read_analysis(analysis) if analysis is not None else None
    model = load_model(model_dir)
    L = model.num_decoder_layers
    fp = model_fingerprint(model)
    summary = None
    if a is not None:
        check_analysis(a, model, str(analysis))
    if fraction is not None:
        n = block_size(fraction, L)
        best = select_block(a, n, input=input, task=task, tokens=tokens)
        remove = best["layers"]
        summary = {"file": str(Path(analysis).resolve()), "fingerprint": ModelRef.from_dict(a["model"]).fingerprint,
                   "fraction": fraction, **best, "utterances": a["data"]["utterances"],
                   "speech_vs_text_spearman": (a.get("agreement", {}).get(tokens, {}).get("speech_vs_text", {})
                                               .get(best["task"], {}) or {}).get("spearman")}
    else:
        remove = parse_layers(layers) if isinstance(layers, str) else sorted(set(int(i) for i in layers))
        if a is not None:  # a layer list with an analysis: record the distance of that block if contiguous
            n = len(remove)
            contiguous = remove == list(range(remove[0], remove[0] + n)) if remove else False
            row = a["results"][tokens].get(input, {}).get(task_key(task), {}).get("matrix")
            summary = {"file": str(Path(analysis).resolve()), "fingerprint": ModelRef.from_dict(a["model"]).fingerprint,
                       "layers": remove, "input": input, "task": task_key(task), "tokens": tokens,
                       "distance": row[n - 1][remove[0]] if (row and contiguous and 0 < n <= L
                                                               and remove[-1] < L) else None}
    prov = prune_model(model, remove, parent_dir=model_dir, analysis_summary=summary, parent_fingerprint=fp)
    model.save(out, provenance=prov.to_dict())
    log.info("pruned %s: removed %s, kept %d of %d layers -> %s", model_dir, remove, len(prov.kept_layers), L, out)
    return prov


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech prune", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model dir (default: the embedded demo model)")
    p.add_argument("--out", required=True, help="new model dir")
    p.add_argument("--analysis", default=None, help="analysis.json (or its dir) from slimspeech analyze")
    p.add_argument("--fraction", type=float, default=None, help="share of decoder layers to remove, e.g. 0.3")
    p.add_argument("--layers", default=None, help="explicit layers to remove, e.g. 10-14 or 3,5")
    p.add_argument("--input", default="speech", choices=("speech", "text"), help="analysis input to follow")
    p.add_argument("--task", default="transcribe", help="analysis task to follow: transcribe, translate:fr, ... "
                                                         "or average (mean over the analysed tasks)")
    p.add_argument("--tokens", default="last", choices=("last", "mean"),
                   help="analysis token reduction to follow: last token (default) or mean over tokens")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    prov = prune(args.model or default_model_dir(), args.out, analysis=args.analysis, fraction=args.fraction,
                 layers=args.layers, input=args.input, task=args.task, tokens=args.tokens)
    print(f"removed layers {prov.removed_from_parent} of {prov.parent.decoder_layers}: "
          f"{prov.decoder_layers} decoder layers left -> {args.out}")
    return 0
