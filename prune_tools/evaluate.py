"""``slimspeech evaluate``: WER (transcribe), BLEU + chrF (translate) per split and task, as JSON.

    slimspeech evaluate --data data/bench/test-clean.jsonl data/bench/test-noisy.jsonl \\
        [--model DIR] [--base BASE_DIR] [--tasks transcribe,translate:fr,translate:de] [--out eval.json]

With ``--base``, the same data runs through the base (unpruned) model too and the report adds the
relative degradation per split and task: WER_model / WER_base - 1 for transcription (the paper's
measure; it tolerates <= 0.25) and 1 - BLEU_model / BLEU_base for translation, and how far the
model's outputs are from the base's (``disagreement``: the base's text as the reference, as the
server's shadow mode measures it on live traffic).
The report names each model it scored by dir, size and weight fingerprint
(``speechllm.provenance.model_fingerprint``): ``slimspeech export --eval`` takes only a report of
the very model it exports.
Text normalisation for WER: see ``speechllm.scoring``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm import tqdm

from speechllm import scoring
from speechllm.audio import load_audio
from speechllm.devices import DTYPE_CHOICES, resolve_device, resolve_dtype
from speechllm.generate import transcribe
from speechllm.modeldir import default_model_dir, load_model, write_json
from speechllm.provenance import dtype_name, stamp
from speechllm.tasks import Task

from .lineage import model_fingerprint
from .rows import DEFAULT_TASKS, parse_tasks, read_rows, reference

log = logging.getLogger(__name__)
TOLERANCE = 0.25  # the paper's relative WER degradation threshold (Figure 2)


def evaluate_rows(model, rows: list[dict], tasks: list[Task], batch_size: int = 16,
                  keep_hyps: int = 5, hyps_out: dict | None = None) -> dict:
    """-> {task_label: {wer | bleu, chrf, n, seconds, examples}} for one split; every hypothesis
    goes into ``hyps_out[task_label]`` when it is given."""
    wavs = [load_audio(r["audio"], max_seconds=model.max_audio_seconds) for r in rows]
    out = {}
    for task in model.resolve_tasks(tasks):
        t0 = time.time()
        hyps = []
        for s in tqdm(range(0, len(wavs), batch_size), desc=task.label, mininterval=10, leave=False):
            hyps += transcribe(model, wavs[s:s + batch_size], task, batch_size=batch_size)
        refs = [reference(r, task) for r in rows]
        res = scoring.score_task(task.label, refs, hyps)
        res["seconds"] = round(time.time() - t0, 2)
        res["examples"] = [{"ref": r, "hyp": h} for r, h in zip(refs[:keep_hyps], hyps[:keep_hyps])]
        out[task.label] = res
        if hyps_out is not None:
            hyps_out[task.label] = hyps
    return out


def disagreement(base_hyps: list[str], model_hyps: list[str], task_label: str) -> dict:
    """How far the model's outputs are from the base's on the same clips, the base's standing in for the
    reference: the mean per-utterance WER (a fraction; the server's shadow mode measures the same per
    request) and the corpus WER in percent for transcription, the mean sentence chrF for translation."""
    if task_label.startswith("translate"):
        scores = [scoring.sentence_chrf(b, m) for b, m in zip(base_hyps, model_hyps)]
        return {"n": len(scores), "mean_chrf": round(sum(scores) / len(scores), 4)}
    scores = [scoring.agreement_wer(b, m) for b, m in zip(base_hyps, model_hyps)]
    spoken = any(scoring.normalize(b) for b in base_hyps)
    return {"n": len(scores), "mean_wer": round(sum(scores) / len(scores), 4),
            "corpus_wer": round(scoring.wer(base_hyps, model_hyps), 2) if spoken else None}


def relative_degradation(model_scores: dict, base_scores: dict) -> dict:
    out = {}
    for split, tasks in model_scores.items():
        out[split] = {}
        for label, s in tasks.items():
            b = base_scores[split][label]
            if "wer" in s:
                out[split][label] = round(s["wer"] / b["wer"] - 1, 4) if b["wer"] > 0 else None
            else:
                out[split][label] = round(1 - s["bleu"] / b["bleu"], 4) if b["bleu"] > 0 else None
    return out


def evaluate(model_dir, manifests: list[str], tasks: list[Task], base_dir=None, limit: int | None = None,
             batch_size: int = 16, device: str = "cpu", dtype: str = "float32") -> dict:
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    splits = {}
    for m in manifests:
        rows = read_rows(m)
        splits[Path(m).stem] = rows[:limit] if limit else rows
    report: dict = {**stamp("slimspeech evaluate"), "normalization": scoring.__doc__.strip().split("\n\n")[1],
                    "tasks": [str(t) for t in tasks], "splits": {k: len(v) for k, v in splits.items()}}
    hyps: dict = {}  # role -> split -> task label -> hypotheses
    for role, path in (("model", model_dir), ("base", base_dir)):
        if path is None:
            continue
        model = load_model(path, device=device, dtype=torch_dtype)
        hyps[role] = {name: {} for name in splits}
        report[role] = {"dir": str(path), **model.describe(), "fingerprint": model_fingerprint(model),
                        "dtype": dtype_name(model.dtype),
                        "scores": {name: evaluate_rows(model, rows, tasks, batch_size, hyps_out=hyps[role][name])
                                   for name, rows in splits.items()}}
        log.info("%s %s: %s", role, path, {s: {t: {k: v for k, v in r.items() if k in ("wer", "bleu")}
                                               for t, r in d.items()} for s, d in report[role]["scores"].items()})
    if base_dir is not None:
        report["relative_degradation"] = relative_degradation(report["model"]["scores"], report["base"]["scores"])
        report["disagreement"] = {split: {label: disagreement(hyps["base"][split][label], model_hyps, label)
                                          for label, model_hyps in per_task.items()}
                                  for split, per_task in hyps["model"].items()}
        report["tolerance"] = TOLERANCE
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help="JSONL manifests (one split each)")
    p.add_argument("--model", default=None, help="model dir (default: the embedded demo model)")
    p.add_argument("--base", default=None, help="unpruned model dir: adds relative degradation")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated tasks (default: {DEFAULT_TASKS})")
    p.add_argument("--limit", type=int, default=None, help="first N utterances of each split")
    p.add_argument("--batch-size", type=int, default=16, help="utterances decoded together (default: 16)")
    p.add_argument("--out", default=None, help="report JSON (default: print a summary only)")
    p.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda | cuda:N")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                   help="weights and activations of both models (default: float32; auto: bfloat16 on CUDA, "
                        "else float32)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    tasks = parse_tasks(args.tasks)
    report = evaluate(args.model or default_model_dir(), args.data, tasks, args.base, args.limit, args.batch_size,
                      args.device, args.dtype)
    table = markdown_table(report)
    if args.out:
        write_json(Path(args.out), report)
        Path(args.out).with_suffix(".md").write_text(table)
    print(table, end="")
    return 0


def markdown_table(report: dict) -> str:
    """One row per split: WER for transcription, BLEU / chrF per translation direction (and the base's)."""
    roles = [r for r in ("model", "base") if r in report]
    labels = list(next(iter(report["model"]["scores"].values())))
    head = ["split"] + [f"{lab} {'WER %' if lab == 'transcribe' else 'BLEU / chrF'}" + (f" ({r})" if len(roles) > 1 else "")
                        for r in roles for lab in labels]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split in report["model"]["scores"]:
        cells = [split]
        for r in roles:
            for lab in labels:
                s = report[r]["scores"][split][lab]
                cells.append(f"{s['wer']:.2f}" if "wer" in s else f"{s['bleu']:.1f} / {s['chrf']:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
