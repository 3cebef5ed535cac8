"""``slimspeech agreement``: how alike several analyses rank the decoder's blocks (the paper's Figure 1 grid).

    slimspeech agreement --analysis text-pretrained=runs/fid/pretrained/analysis frozen=runs/fid/frozen/analysis \\
        full=docs/demo/analysis --out runs/fid/agreement [--tokens last] [--inputs speech,text] [--tasks transcribe]

Each ``NAME=DIR`` is the output of ``slimspeech analyze`` (its ``analysis.json``) of one model or
condition (e.g. the text-stage decoder before it saw speech, a frozen-decoder or a LoRA-adapted
model, another projector). A *condition* is one (analysis, input, task) matrix d(l, n); every
pair of conditions gets, as ``analyze`` computes it for speech vs text (``prune_tools.analyze.agreement``):
``spearman``: the Spearman rank correlation over the start layers of each block size n, averaged
over n; ``spearman_all_blocks``: over all blocks at once; ``best_same_fraction``: the share of n
whose most redundant block is the same. All analyses must have the same number of decoder layers.

Outputs in ``--out``: ``agreement.json`` (the conditions with their source analyses, alignment and
model, every pair, and the two condition x condition matrices), ``agreement.md`` (one table: per
pair of conditions, Spearman and same best block), ``grid.png`` (one heatmap per condition: a row
per analysis, a column per input/task, white dots on the best block per size) and ``pairs.png``
(the Spearman matrix, each cell annotated with its Spearman and same-best-block share).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from speechllm.errors import SlimError
from speechllm.modeldir import write_json
from speechllm.provenance import stamp

from .analyze import AVERAGE, TOKENS, agreement, read_analysis

AGREEMENT_FILE = "agreement.json"


def parse_named(items: list[str]) -> dict[str, Path]:
    """``["frozen=runs/a", ...]`` -> {"frozen": Path("runs/a")}; SlimError on a missing ``=`` or a repeated name."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SlimError(f"--analysis {item!r}: use NAME=DIR (e.g. frozen=runs/frozen/analysis)", param="analysis")
        if name in out:
            raise SlimError(f"--analysis names {name!r} twice: give each analysis its own name", param="analysis")
        out[name] = Path(path)
    return out


def _pick(value: str | None) -> set[str] | None:
    return {x.strip() for x in value.split(",") if x.strip()} if value else None


def conditions(analyses: dict[str, dict], tokens: str = "last", inputs=None, tasks=None) -> list[dict]:
    """Every (analysis, input, task) matrix of ``tokens``, in the order given (the per-task ``average`` only
    when ``tasks`` names it); SlimError when an analysis lacks the reduction or none is left."""
    out = []
    layers = {}
    for name, a in analyses.items():
        if tokens not in a["results"]:
            raise SlimError(f"analysis {name!r} has no {tokens!r} token reduction (it has "
                            f"{', '.join(a['results'])}): re-run analyze with --tokens {tokens}", param="tokens")
        layers[name] = a["model"]["decoder_layers"]
        for inp, by_task in a["results"][tokens].items():
            if inputs and inp not in inputs:
                continue
            for task, r in by_task.items():
                if (tasks and task not in tasks) or (task == AVERAGE and not tasks):
                    continue
                out.append({"label": f"{name}: {inp}/{task}", "analysis": name, "input": inp, "task": task,
                            "matrix": r["matrix"], "best": r["best"]})
    if len(set(layers.values())) > 1:
        raise SlimError("the analyses are of decoders with different layer counts ("
                        + ", ".join(f"{n} {L}" for n, L in layers.items()) + "): blocks compare only within one "
                        "depth; analyse the unpruned models", param="analysis")
    if len(out) < 2:
        raise SlimError(f"{len(out)} condition(s) left after --inputs/--tasks: agreement needs two or more",
                        param="analysis")
    return out


def compare(analyses: dict[str, dict], sources: dict[str, str], tokens: str = "last", inputs=None,
            tasks=None) -> dict:
    """The agreement of every pair of conditions -> the ``agreement.json`` dict."""
    conds = conditions(analyses, tokens, inputs, tasks)
    n = len(conds)
    rho = [[1.0 if i == j else None for j in range(n)] for i in range(n)]
    same = [[1.0 if i == j else None for j in range(n)] for i in range(n)]
    pairs = []
    for i, j in itertools.combinations(range(n), 2):
        r = agreement(conds[i]["matrix"], conds[j]["matrix"])
        rho[i][j] = rho[j][i] = r["spearman"]
        same[i][j] = same[j][i] = r["best_same_fraction"]
        pairs.append({"a": conds[i]["label"], "b": conds[j]["label"], "spearman": r["spearman"],
                      "spearman_all_blocks": r["spearman_all_blocks"], "best_same_fraction": r["best_same_fraction"],
                      "spearman_per_n": r["spearman_per_n"]})
    return {
        **stamp("slimspeech agreement"),
        "tokens": tokens,
        "analyses": {name: {"path": sources[name], "model": a["model"], "alignment": a.get("alignment"),
                            "data": {k: a["data"].get(k) for k in ("utterances", "manifests")}}
                     for name, a in analyses.items()},
        "conditions": [{k: c[k] for k in ("label", "analysis", "input", "task")} for c in conds],
        "decoder_layers": next(iter(analyses.values()))["model"]["decoder_layers"],
        "definition": "per pair of conditions: spearman = Spearman rank correlation of d(l, n) over start layers l, "
                      "per block size n, averaged over n; best_same_fraction = share of n = 1..L-1 whose most "
                      "redundant block is the same",
        "pairs": pairs,
        "spearman_matrix": rho,
        "best_same_matrix": same,
    }


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(r: dict) -> str:
    lines = [f"# Block-ranking agreement between {len(r['conditions'])} conditions ({r['tokens']} token, "
             f"{r['decoder_layers']} decoder layers)", "", r["definition"] + ".", "", "Analyses: "
             + "; ".join(f"{n} = `{a['path']}`" + (f" (end {a['alignment']['end']}, text {a['alignment']['text_source']})"
                                                    if a.get("alignment") else "")
                         for n, a in r["analyses"].items()) + ".", "",
             "| condition A | condition B | Spearman (per n, mean) | Spearman (all blocks) | same best block |",
             "|---|---|---|---|---|"]
    for p in r["pairs"]:
        lines.append(f"| {p['a']} | {p['b']} | {_fmt(p['spearman'])} | {_fmt(p['spearman_all_blocks'])} | "
                     f"{p['best_same_fraction']:.0%} of n |")
    return "\n".join(lines) + "\n"


def write_outputs(r: dict, analyses: dict[str, dict], out: Path, plots: bool = True) -> Path:
    from . import plots as figs

    out.mkdir(parents=True, exist_ok=True)
    files = ["agreement.md"]
    (out / "agreement.md").write_text(markdown(r))
    if plots:
        conds = conditions(analyses, r["tokens"], {c["input"] for c in r["conditions"]},
                           {c["task"] for c in r["conditions"]})
        cols = max(sum(c["analysis"] == name for c in conds) for name in analyses)
        panels = []
        for name in analyses:  # one row per analysis, padded so every row starts in column 0
            row = [(c["label"], c["matrix"], c["best"]) for c in conds if c["analysis"] == name]
            panels += row + [None] * (cols - len(row))
        figs.heatmap_grid(panels, out / "grid.png", cols=cols,
                          title=f"angular distance d(l, n), {r['tokens']} token, {r['decoder_layers']} layers")
        figs.pair_matrix([c["label"] for c in r["conditions"]], r["spearman_matrix"], r["best_same_matrix"],
                         out / "pairs.png", title="block ranking agreement: Spearman (per n, mean) / same best block")
        files += ["grid.png", "pairs.png"]
    write_json(out / AGREEMENT_FILE, {**r, "files": files})
    return out / AGREEMENT_FILE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech agreement", description=__doc__.splitlines()[0])
    p.add_argument("--analysis", nargs="+", required=True, metavar="NAME=DIR",
                   help="analyze outputs (a dir holding analysis.json, or the file), each with a name")
    p.add_argument("--out", required=True, help="output dir (agreement.json, agreement.md, grid.png, pairs.png)")
    p.add_argument("--tokens", default="last", choices=TOKENS, help="the token reduction compared (default: last)")
    p.add_argument("--inputs", default=None, help="comma-separated inputs to keep, e.g. speech (default: all)")
    p.add_argument("--tasks", default=None,
                   help=f"comma-separated task labels to keep, e.g. transcribe,translate_fr (default: every task, "
                        f"without the per-input {AVERAGE!r})")
    p.add_argument("--no-plots", action="store_true", help="skip grid.png and pairs.png")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    named = parse_named(args.analysis)
    analyses = {name: read_analysis(path) for name, path in named.items()}
    r = compare(analyses, {n: str(p.resolve()) for n, p in named.items()}, args.tokens, _pick(args.inputs),
                _pick(args.tasks))
    path = write_outputs(r, analyses, Path(args.out), plots=not args.no_plots)
    low = min((p for p in r["pairs"] if p["spearman"] is not None), key=lambda p: p["spearman"], default=None)
    print(f"{len(r['conditions'])} conditions, {len(r['pairs'])} pairs -> {path}"
          + (f"; lowest Spearman {low['spearman']} ({low['a']} vs {low['b']})" if low else ""))
    return 0
