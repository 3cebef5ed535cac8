"""``slimspeech export``: the final shared ASR + AST backbone as a model dir the server and vLLM load.

    slimspeech evaluate --model runs/sweep/f0.30/healed --base BASE --data test-clean.jsonl --out eval.json
    slimspeech export --model runs/sweep/f0.30/healed --eval eval.json --out models/slim-30 [--dtype float16]

The output is an ordinary model dir of the same family (``slam``: ``decoder/`` is a plain HF
causal-LM dir with its tokenizer, the pruned layer count in its config and no LoRA weights, so
``AutoModelForCausalLM`` and vLLM load it alone; ``qwen2_audio``: ``hf/``), in ``--dtype``
(float16 by default, as the shipped demo model). Its ``provenance.json``
(``speechllm.provenance.Provenance``) keeps the whole history (lineage, removed / kept layers,
analysis, healing), states the export's own ``fingerprint``, ``weight_bytes`` and ``dtype`` (a
float16 export has its float32 source's fingerprint: see ``speechllm.provenance``), and adds
``scores``: the eval report's WER / BLEU / chrF per split and task, the base's scores, the
relative degradation and whether each is within the 0.25 tolerance; ``extra["export"]`` holds
the ``--note`` and what the reload check verified.

The report must be of this very model: the same family, layer and parameter counts, and the
same weight fingerprint (``slimspeech evaluate`` records the fingerprint of the model it
scored), else the export is refused. The export is checked by reloading it: layer count,
standalone decoder config and weights, and its fingerprint.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from speechllm.devices import DTYPES, resolve_dtype
from speechllm.errors import SlimError
from speechllm.modeldir import load_model, read_json
from speechllm.provenance import ModelRef, Provenance, stamped_by

from .evaluate import TOLERANCE
from .lineage import layer_list, model_fingerprint

log = logging.getLogger(__name__)


def check_report(report: dict, model, path, fingerprint: str | None = None) -> None:
    """SlimError unless ``report`` is an evaluate report of ``model``: family, layer and parameter
    counts, then the weight fingerprint (``fingerprint``: the model's as loaded in float32, when already
    computed; a report of a bfloat16 load is compared with the fingerprint of that cast)."""
    if stamped_by(report) != "slimspeech evaluate" or "model" not in report:
        raise SlimError(f"{path} is not a report written by slimspeech evaluate --out", param="eval")
    m = report["model"]
    L, P = model.num_decoder_layers, model.num_parameters()
    if m.get("decoder_layers") != L or m.get("parameters") != P or m.get("family") != model.family:
        raise SlimError(f"eval report {path} is of a {m.get('family')} model with {m.get('decoder_layers')} decoder "
                        f"layers and {m.get('parameters')} parameters ({m.get('dir')}), not this one ({L} layers, "
                        f"{P} parameters): run `slimspeech evaluate --model THIS_DIR --out ...`", param="eval")
    # a report that loaded the model in bfloat16 saw the weights as that cast does (speechllm.provenance)
    dtype = m.get("dtype") or "float32"
    fp = fingerprint if fingerprint and dtype == "float32" else \
        model_fingerprint(model, loaded_as=DTYPES.get(dtype))
    if m.get("fingerprint") != fp:
        # same shape is not the same model: another pruning or healing of the same depth has other weights
        theirs = m.get("fingerprint") or "none recorded (a report of an older slimspeech)"
        raise SlimError(f"eval report {path} scored the model with weight fingerprint {theirs} ({m.get('dir')}), "
                        f"not this one (fingerprint {fp}): run `slimspeech evaluate --model THIS_DIR --out ...`",
                        param="eval")


def within_tolerance(deg: float | None, model_score: dict, base_score: dict, tolerance: float = TOLERANCE) -> bool:
    """Whether a relative degradation is within the tolerance. A zero base score leaves the ratio undefined
    (None): then a WER passes only if it is 0 too, and a BLEU always passes (it cannot drop below 0)."""
    if deg is not None:
        return deg <= tolerance + 1e-12
    if "wer" in model_score:
        return model_score["wer"] <= base_score["wer"]
    return model_score["bleu"] >= base_score["bleu"]


def _strip(scores: dict) -> dict:
    return {s: {t: {k: v for k, v in r.items() if k != "examples"} for t, r in by.items()} for s, by in scores.items()}


def scores_summary(report: dict, path) -> dict:
    """The ``scores`` block of a provenance from an evaluate report (with a base: degradation + tolerance)."""
    m = report["model"]
    out = {"report": str(Path(path).resolve()), "evaluated_dir": m.get("dir"), "tasks": report.get("tasks"),
           "splits": report.get("splits"), "normalization": report.get("normalization"),
           "model": _strip(m["scores"])}
    if "base" in report:
        deg = report.get("relative_degradation", {})
        tol = report.get("tolerance", TOLERANCE)
        out.update(base={"dir": report["base"].get("dir"), "decoder_layers": report["base"].get("decoder_layers"),
                         "scores": _strip(report["base"]["scores"])},
                   relative_degradation=deg, tolerance=tol,
                   within_tolerance={s: {t: within_tolerance(d, m["scores"][s][t], report["base"]["scores"][s][t], tol)
                                         for t, d in by.items()} for s, by in deg.items()})
    return out


def verify_export(out: Path, model, fingerprint: str) -> dict:
    """Reload the exported dir and check its layer count, fingerprint (``fingerprint``: the one its
    provenance records) and standalone decoder config and weights; -> a summary."""
    L = model.num_decoder_layers
    reloaded = load_model(out)
    if reloaded.num_decoder_layers != L:
        raise RuntimeError(f"export {out} reloads with {reloaded.num_decoder_layers} decoder layers, expected {L}")
    if model_fingerprint(reloaded) != fingerprint:
        raise RuntimeError(f"export {out} reloads with fingerprint {model_fingerprint(reloaded)}, "
                           f"its provenance records {fingerprint}")
    sub, prefix = model.saved_decoder()
    cfg = read_json(out / sub / "config.json")
    text_cfg = cfg.get("text_config", cfg)
    if text_cfg.get("num_hidden_layers") != L or len(text_cfg.get("layer_types") or [None] * L) != L:
        raise RuntimeError(f"{out / sub}/config.json does not describe {L} layers")
    from safetensors import safe_open

    keys = []
    for f in sorted((out / sub).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            keys += list(st.keys())
    # the decoder's layers only: an audio encoder's (Whisper's, Granite's conformer) are numbered too
    idx = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    if any("lora" in k for k in keys) or idx != set(range(L)):
        raise RuntimeError(f"{out / sub} weights do not hold exactly decoder layers 0-{L - 1} ({prefix}*) without "
                           f"LoRA: found {sorted(idx)}")
    return {"decoder_dir": str((out / sub).resolve()), "decoder_layers": L, "tensors": len(keys),
            "fingerprint": fingerprint}


def export(model_dir, out, *, eval_report=None, dtype: str = "float16", note: str | None = None) -> Provenance:
    """Write ``model_dir`` as the final backbone to ``out``; -> the new provenance."""
    if dtype not in DTYPES:  # a stored dtype, so no "auto"
        raise SlimError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}", param="dtype")
    report = None
    if eval_report is not None:
        if not Path(eval_report).is_file():
            raise SlimError(f"eval report not found: {eval_report} (write one with slimspeech evaluate --out)",
                            param="eval")
        try:
            report = read_json(eval_report)
        except json.JSONDecodeError as exc:
            raise SlimError(f"{eval_report} is not valid JSON ({exc})", param="eval") from None
    model = load_model(model_dir)
    fp = model_fingerprint(model)
    scores = None
    if report is not None:
        check_report(report, model, eval_report, fp)
        scores = scores_summary(report, eval_report)
    src = Provenance.of(model)
    kept = layer_list(model)
    parent = ModelRef.of(model, model_dir, fingerprint=fp, kept_layers=kept)
    model = model.to(resolve_dtype(dtype))
    # describing() after the cast: the fingerprint, weight bytes and dtype are those of what is written
    prov = src.derive("slimspeech export", parent, kept_layers=kept,
                      scores=scores if scores is not None else src.scores,
                      extra={**src.extra, "export": {"note": note}}).describing(model)
    model.save(out, provenance=prov.to_dict())
    prov.extra["export"]["verified"] = verify_export(Path(out), model, prov.fingerprint)
    prov.write(out)
    log.info("exported %s (%d decoder layers, %s, fingerprint %s) -> %s", model_dir, model.num_decoder_layers,
             dtype, prov.fingerprint, out)
    return prov


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech export", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the healed (or pruned) model dir")
    p.add_argument("--out", required=True, help="exported model dir")
    p.add_argument("--eval", default=None, help="report of slimspeech evaluate --out on this model (--base for "
                                               "relative degradation): its scores go into the provenance")
    p.add_argument("--dtype", default="float16", choices=tuple(DTYPES),
                   help="dtype of the exported weights (default: float16, as the shipped demo model)")
    p.add_argument("--note", default=None, help="free text stored in the provenance")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    prov = export(args.model, args.out, eval_report=args.eval, dtype=args.dtype, note=args.note)
    s = prov.scores or {}
    cells = "; ".join(
        f"{split} " + ", ".join(f"{t} " + " ".join(f"{k}={v}" for k, v in r.items() if k in ("wer", "bleu"))
                                for t, r in by.items())
        for split, by in (s.get("model") or {}).items())
    print(f"exported {prov.decoder_layers}-layer backbone ({args.dtype}) -> {args.out}"
          + (f": {cells}" if cells else " (no scores: pass --eval REPORT)"))
    return 0
