"""``slimspeech sweep``: analyze once, then prune + heal + evaluate at each fraction; curve, max fraction, ablation.

    slimspeech sweep --model BASE --data data/bench/train.jsonl \\
        --eval-data data/bench/test-clean.jsonl data/bench/test-noisy.jsonl \\
        --fractions 0.1,0.2,0.3,0.4,0.5 --out runs/sweep [--heal-steps 300] [--eval-limit 100] [--distill] \\
        [--seeds 3 [--select-rule upper|point]]

Steps, each skipped when its output already exists (so an interrupted sweep resumes; a sweep
dir made with other settings is refused):
1. ``analysis/``: ``slimspeech analyze`` of BASE on ``--analysis-data`` (default: the training
   data; choosing blocks on test data would leak), speech and text inputs, every task.
2. ``base_eval.json``: BASE on every ``--eval-data`` split and task.
3. per fraction f, ``f0.30/``: ``pruned/`` (the best block of round(f * L) layers for
   ``--select-input/--select-task``), ``healed/`` (LoRA + projector, ``healed.work/`` its log,
   checkpoint and adapter), ``eval.json`` (scores + relative degradation vs the base:
   WER / WER_base - 1 for transcription, 1 - BLEU / BLEU_base for translation).
   With ``--seeds N`` (N > 1) each fraction is healed N times, seeds ``--heal-seed`` + 0 .. N-1 (each
   its own LoRA init, batch order and dropout): run 0 in ``f0.30/healed`` as above, run r in
   ``f0.30/seed<r>/healed`` + ``eval.json``; the point reports the mean degradation and its 95%
   Student-t interval over the runs (one run: no interval). ``--select-rule``: ``upper`` (the
   default for N > 1) passes a fraction when the interval's upper bound is within the tolerance on
   every split, ``point`` (the only rule for N = 1, today's) when the (mean) degradation is. Raising
   ``--seeds`` on an existing sweep dir reuses the runs already made.
4. the healing ablation at ``--ablation-fraction`` (default: the largest fraction within the
   tolerance for transcription, else the smallest fraction), ``ablation-f0.30/``: no healing,
   LoRA only, projector only, both.
Outputs: ``sweep.json`` (everything, incl. ``max_fraction`` per task: the largest fraction that
passes the rule on every split, tolerance 0.25; with N > 1 also ``max_fraction_by_rule``),
``degradation.png`` (the paper's Figure 2: one panel per task, one line per split, dashed
tolerance, error bars over the intervals), ``ablation.md`` / ``ablation.json``, ``sweep.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechllm.devices import resolve_device
from speechllm.errors import SlimError
from speechllm.modeldir import PROVENANCE_FILE, read_json, read_spec, write_json
from speechllm.provenance import Provenance, stamp
from speechllm.tasks import PromptBook

from . import analyze as analyze_mod
from .evaluate import TOLERANCE, evaluate, relative_degradation
from .export import scores_summary, within_tolerance
from .heal import HealConfig, heal
from .options import add_options, config_from_args, option
from .prune import block_size, prune
from .rows import DEFAULT_TASKS, parse_tasks

log = logging.getLogger(__name__)
VARIANTS = ("none", "lora", "projector", "both")
#: config fields that may change when a sweep dir is reused (more seeds reuse the runs already made)
REUSABLE_CHANGES = ("fractions", "ablation_fraction", "seeds", "select_rule")
SELECT_RULES = ("point", "upper")
CONFIDENCE = 0.95


def parse_fractions(text: str) -> list[float]:
    """``"0.1,0.2,0.3"`` -> [0.1, 0.2, 0.3] (the option type of ``--fractions``)."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad fractions {text!r}: use e.g. 0.1,0.2,0.3") from None


@dataclass
class SweepConfig:
    """The sweep's settings: each field is a ``sweep`` flag with this help; ``heal`` has the ``--heal-*`` flags."""

    fractions: list[float] = option(help="shares of decoder layers to remove, one point each", type=parse_fractions,
                                    metavar="F,F,...", default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5])
    tasks: str = option(DEFAULT_TASKS, "tasks analysed, healed on and evaluated")
    analysis_limit: int | None = option(200, "first N utterances of the analysis data")
    analysis_batch_size: int = option(8, "utterances per analysis forward pass")
    eval_limit: int | None = option(None, "first N utterances of each eval split (default: all)")
    eval_batch_size: int = option(16, "utterances decoded together when evaluating")
    select_input: str = option("speech", "analysis input whose best block is removed", choices=("speech", "text"))
    select_task: str = option("transcribe", "task whose best block is removed, or average")
    select_tokens: str = option("last", "analysis token reduction whose best block is removed",
                                choices=("last", "mean"))
    distill: bool = option(False, "distil from the base model while healing")
    ablation_fraction: float | None = option(None, "fraction of the healing ablation (default: the largest "
                                                   "fraction within tolerance for transcription)")
    seeds: int = option(1, "healing runs per fraction, seeds --heal-seed, --heal-seed + 1, ... (each its own LoRA "
                           "init, batch order and dropout); every degradation is then the mean with a 95% Student-t "
                           "interval over the runs (1 run: no interval)")
    select_rule: str | None = option(None, "how a fraction passes: point = its (mean) degradation <= the tolerance; "
                                           "upper = its 95% interval's upper bound <= the tolerance (needs --seeds "
                                           ">= 2) (default: upper with --seeds >= 2, else point)", choices=SELECT_RULES)
    heal: HealConfig = option(default_factory=HealConfig, cli=False)

    @property
    def rule(self) -> str:
        """The selection rule in effect."""
        return self.select_rule or ("upper" if self.seeds > 1 else "point")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["heal"] = self.heal.to_dict()
        return d


def ftag(f: float) -> str:
    return f"f{f:.2f}"


def _strip(scores: dict) -> dict:
    """Scores without the example hypotheses."""
    return {split: {t: {k: v for k, v in s.items() if k != "examples"} for t, s in tasks.items()}
            for split, tasks in scores.items()}


INTERVAL_DEFINITION = ("with N healing runs per fraction (--seeds N): mean relative degradation and its 95% "
                       "Student-t interval mean +- t(0.975, N-1) * s / sqrt(N), s the sample standard deviation "
                       "over the runs; N = 1 gives the single run's value and no interval")


def mean_interval(values: list[float | None], confidence: float = CONFIDENCE) -> tuple:
    """-> (mean, low, high): the Student-t interval of the mean of ``values``; (value, None, None) for one
    value; (None, None, None) when any is None (an undefined degradation: a zero base score)."""
    if any(v is None for v in values):
        return None, None, None
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return round(m, 4), None, None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return round(m, 4), round(m - half, 4), round(m + half, 4)


def _mean_score(scores: list[dict]) -> dict:
    """The mean of each numeric field of one split/task's scores over runs (others from the first run)."""
    out = {}
    for k, v in scores[0].items():
        nums = [s.get(k) for s in scores]
        numeric = all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in nums)
        out[k] = round(float(np.mean(nums)), 4) if numeric and k != "utterances" else v
    return out


def combine_runs(runs: list[dict], base_scores: dict, rule: str) -> dict:
    """One sweep point from the points of its healing runs (each with its ``seed``).

    One run: that run's point as a one-seed sweep reports it (``interval`` None). More: mean scores and
    mean degradation, ``interval[task][split] = [low, high]``, the checks of both rules
    (``within_tolerance_by_rule``; ``within_tolerance`` is ``rule``'s) and every run under ``runs``.
    """
    if len(runs) == 1:
        return {**{k: v for k, v in runs[0].items() if k != "seed"}, "interval": None}
    first = runs[0]
    scores = {split: {label: _mean_score([r["scores"][split][label] for r in runs]) for label in by_task}
              for split, by_task in first["scores"].items()}
    degs: dict = {}
    intervals: dict = {}
    checks: dict = {"point": {}, "upper": {}}
    for label, by_split in first["relative_degradation"].items():
        for split in by_split:
            m, lo, hi = mean_interval([r["relative_degradation"][label][split] for r in runs])
            degs.setdefault(label, {})[split] = m
            intervals.setdefault(label, {})[split] = None if lo is None else [lo, hi]
            s, b = scores[split][label], base_scores[split][label]
            checks["point"].setdefault(label, {})[split] = within_tolerance(m, s, b)
            checks["upper"].setdefault(label, {})[split] = within_tolerance(hi, s, b)
    return {**{k: first[k] for k in first if k not in ("seed", "scores", "relative_degradation", "within_tolerance")},
            "scores": scores, "relative_degradation": degs, "interval": intervals,
            "within_tolerance": checks[rule], "within_tolerance_by_rule": checks,
            "runs": [{k: r[k] for k in ("seed", "scores", "relative_degradation", "healing")} for r in runs]}


class Sweep:
    def __init__(self, model_dir, train: list[str], eval_data: list[str], out, cfg: SweepConfig,
                 analysis_data: list[str] | None = None, device: str = "auto"):
        self.base = Path(model_dir)
        self.train, self.eval_data = list(train), list(eval_data)
        self.analysis_data = list(analysis_data or train)
        self.out = Path(out)
        self.cfg = cfg
        self.device = resolve_device(device)
        self.tasks = parse_tasks(cfg.tasks)
        if not cfg.fractions:
            raise SlimError("--fractions is empty: pass e.g. 0.1,0.2,0.3", param="fractions")
        if cfg.seeds < 1:
            raise SlimError(f"--seeds {cfg.seeds}: pass 1 or more healing runs per fraction", param="seeds")
        if cfg.rule == "upper" and cfg.seeds < 2:
            raise SlimError("--select-rule upper needs an interval: pass --seeds 2 or more (or --select-rule point)",
                            param="select_rule")

    # ---- steps --------------------------------------------------------------------------------
    def check_config(self) -> None:
        path = self.out / "sweep_config.json"
        new = {"model": str(self.base.resolve()), "train": [str(Path(p).resolve()) for p in self.train],
               "eval": [str(Path(p).resolve()) for p in self.eval_data],
               "analysis_data": [str(Path(p).resolve()) for p in self.analysis_data], **self.cfg.to_dict()}
        if path.exists():
            old = read_json(path)
            a = {k: v for k, v in old.items() if k not in REUSABLE_CHANGES}
            b = {k: v for k, v in new.items() if k not in REUSABLE_CHANGES}
            if a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise SlimError(f"{self.out} holds a sweep with other settings ({', '.join(diff)} differ): "
                                "use a new --out or the same flags (only --fractions, --ablation-fraction, --seeds "
                                "and --select-rule may change)", param="out")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(path, new)

    def analysis(self) -> dict:
        path = self.out / "analysis" / analyze_mod.ANALYSIS_FILE
        if path.exists():
            return analyze_mod.read_analysis(path)
        log.info("sweep: analysing %s", self.base)
        return analyze_mod.run(self.base, self.analysis_data, self.out / "analysis", tasks=self.tasks,
                               limit=self.cfg.analysis_limit, batch_size=self.cfg.analysis_batch_size,
                               device=self.device)

    def evaluation(self, model_dir: Path, path: Path, base: dict | None) -> dict:
        if path.exists():
            return read_json(path)
        t0 = time.time()
        report = evaluate(model_dir, self.eval_data, self.tasks, limit=self.cfg.eval_limit,
                          batch_size=self.cfg.eval_batch_size, device=self.device)
        if base is not None:
            report["base"] = base["model"]
            report["relative_degradation"] = relative_degradation(report["model"]["scores"], base["model"]["scores"])
            report["tolerance"] = TOLERANCE
        report["seconds"] = round(time.time() - t0, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, report)
        if Path(model_dir).resolve() != self.base.resolve():  # a dir this sweep made: it says how it scored
            prov = Provenance.read(model_dir)
            prov.scores = scores_summary(report, path)
            prov.write(model_dir)
        return report

    def pruned(self, f: float, dest: Path) -> Provenance:
        if (dest / PROVENANCE_FILE).exists():
            return Provenance.read(dest)
        return prune(self.base, dest, analysis=self.out / "analysis", fraction=f, input=self.cfg.select_input,
                     task=self.cfg.select_task, tokens=self.cfg.select_tokens)

    def healed(self, pruned_dir: Path, dest: Path, train: tuple[str, ...], seed: int | None = None) -> Provenance:
        if (dest / PROVENANCE_FILE).exists():
            return Provenance.read(dest)
        cfg = dataclasses.replace(self.cfg.heal, train=train, seed=self.cfg.heal.seed if seed is None else seed)
        return heal(pruned_dir, self.train, dest, cfg, teacher=self.base if self.cfg.distill else None,
                    work=dest.parent / f"{dest.name}.work", device=self.device)

    # ---- reading results -----------------------------------------------------------------------
    def point(self, f: float, report: dict, prov: Provenance) -> dict:
        checks, degs = {}, {}
        for split, by_task in report["model"]["scores"].items():
            for label, s in by_task.items():
                d = report["relative_degradation"][split][label]
                degs.setdefault(label, {})[split] = d
                checks.setdefault(label, {})[split] = within_tolerance(d, s, report["base"]["scores"][split][label])
        return {"fraction": f, **prov.layer_summary(), "scores": _strip(report["model"]["scores"]),
                "relative_degradation": degs, "within_tolerance": checks,
                "healing": {k: prov.healing.get(k) for k in ("steps", "first_loss", "final_loss", "seconds")}
                if prov.healing else None}

    @staticmethod
    def max_fractions(points: list[dict], labels: list[str], rule: str | None = None) -> dict:
        """Per task (and ``all_tasks``): the largest fraction within tolerance on every split, or None.

        ``rule``: judge by that rule's checks (``within_tolerance_by_rule``) instead of the sweep's own."""
        out = {}
        for label in labels + ["all_tasks"]:
            keys = labels if label == "all_tasks" else [label]
            ok = [p["fraction"] for p in points if all(all(
                (p["within_tolerance"] if rule is None else p["within_tolerance_by_rule"][rule])[k].values())
                for k in keys)]
            out[label] = max(ok) if ok else None
        return out

    # ---- the whole thing -----------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.time()
        self.check_config()
        a = self.analysis()
        L = a["model"]["decoder_layers"]
        sizes = {f: block_size(f, L) for f in self.cfg.fractions}  # bad fractions fail before any work
        base = self.evaluation(self.base, self.out / "base_eval.json", None)
        book = PromptBook.from_spec(read_spec(self.base))
        labels = [book.resolve(t.name, t.target_lang).label for t in self.tasks]
        points = []
        for f in sorted(self.cfg.fractions):
            d = self.out / ftag(f)
            log.info("sweep: fraction %.2f (%d of %d layers)", f, sizes[f], L)
            self.pruned(f, d / "pruned")
            runs = []
            for r in range(self.cfg.seeds):  # run 0 where a one-seed sweep puts it, so more seeds reuse it
                rd = d if r == 0 else d / f"seed{r}"
                prov = self.healed(d / "pruned", rd / "healed", self.cfg.heal.train, seed=self.cfg.heal.seed + r)
                report = self.evaluation(rd / "healed", rd / "eval.json", base)
                runs.append({"seed": self.cfg.heal.seed + r, **self.point(f, report, prov)})
            points.append(combine_runs(runs, base["model"]["scores"], self.cfg.rule))
        maxf = self.max_fractions(points, labels)
        headline = maxf.get("transcribe", maxf["all_tasks"])
        abl_f = self.cfg.ablation_fraction
        if abl_f is None:
            abl_f = headline if headline is not None else min(self.cfg.fractions)
        ablation = self.ablation(abl_f, base, L)
        result = {
            **stamp("slimspeech sweep"),
            "model": a["model"], "config": self.cfg.to_dict(),
            "data": {"train": self.train, "eval": self.eval_data, "analysis": self.analysis_data},
            "tolerance": TOLERANCE,
            "seeds": self.cfg.seeds,
            "select_rule": self.cfg.rule,
            "interval": INTERVAL_DEFINITION,
            "analysis": {"dir": str((self.out / "analysis").resolve()),
                         "speech_vs_text_spearman": {t: r["spearman"] for t, r in a["agreement"][self.cfg.select_tokens]
                                                     ["speech_vs_text"].items()}},
            "base": {"scores": _strip(base["model"]["scores"]), "decoder_layers": L},
            "points": points,
            "max_fraction": maxf,
            "max_fraction_transcribe": headline,
            **({"max_fraction_by_rule": {r: self.max_fractions(points, labels, r) for r in SELECT_RULES}}
               if self.cfg.seeds > 1 else {}),
            "ablation": ablation,
            "seconds": round(time.time() - t0, 1),
        }
        self.write(result, labels)
        return result

    def ablation(self, f: float, base: dict, L: int) -> dict:
        d = self.out / f"ablation-{ftag(f)}"
        main = self.out / ftag(f)
        pruned_dir = main / "pruned" if (main / "pruned" / PROVENANCE_FILE).exists() else d / "pruned"
        prov = self.pruned(f, pruned_dir)
        rows = {}
        for variant in VARIANTS:
            if variant == "none":
                model_dir, vprov = pruned_dir, prov
            elif variant == "both" and (main / "healed" / PROVENANCE_FILE).exists() and \
                    tuple(self.cfg.heal.train) == ("lora", "projector"):
                model_dir = main / "healed"
                vprov = Provenance.read(model_dir)
            else:
                train = ("lora", "projector") if variant == "both" else (variant,)
                model_dir = d / variant
                vprov = self.healed(pruned_dir, model_dir, train)
            eval_path = (main / "eval.json") if model_dir == main / "healed" else d / f"eval-{variant}.json"
            report = self.evaluation(model_dir, eval_path, base)
            rows[variant] = {"dir": str(Path(model_dir).resolve()), **self.point(f, report, vprov)}
        return {"fraction": f, "layers_removed": block_size(f, L), "removed_layers": prov.removed_layers,
                "variants": rows}

    # ---- outputs --------------------------------------------------------------------------------
    def write(self, result: dict, labels: list[str]) -> None:
        from . import plots

        curves: dict = {}
        for p in [{"fraction": 0.0, "relative_degradation": {lab: {s: 0.0 for s in result["base"]["scores"]}
                                                                for lab in labels}}] + result["points"]:
            for label, by_split in p["relative_degradation"].items():
                for split, deg in by_split.items():
                    iv = (p.get("interval") or {}).get(label, {}).get(split) or (None, None)
                    curves.setdefault(label, {}).setdefault(split, []).append((p["fraction"], deg, *iv))
        ylabels = {lab: "relative WER degradation" if lab == "transcribe" else "relative BLEU drop (1 - BLEU/BLEU_base)"
                   for lab in labels}
        plots.degradation_curves(curves, self.out / "degradation.png", TOLERANCE, result["max_fraction_transcribe"],
                                 ylabels, title=f"{result['model']['decoder_layers']}-layer decoder, pruned + healed "
                                                f"({'+'.join(self.cfg.heal.train)}, {self.cfg.heal.steps} steps"
                                                + (f"; mean and 95% interval of {self.cfg.seeds} seeds"
                                                   if self.cfg.seeds > 1 else "") + ")")
        abl = result["ablation"]
        write_json(self.out / "ablation.json", {**stamp("slimspeech sweep"), "tolerance": TOLERANCE, **abl})
        (self.out / "ablation.md").write_text(ablation_markdown(abl, result["base"]["scores"]))
        (self.out / "sweep.md").write_text(sweep_markdown(result))
        write_json(self.out / "sweep.json", result)


def _metric(s: dict) -> str:
    return f"WER {s['wer']:.2f}" if "wer" in s else f"BLEU {s['bleu']:.2f}"


def _cell(score: dict, deg, ok: bool, interval: list | None = None) -> str:
    d = "n/a" if deg is None else f"{deg:+.3f}"
    if interval:
        d += f" [{interval[0]:+.3f}, {interval[1]:+.3f}]"
    return f"{_metric(score)} ({d}{'' if ok else ' ✗'})"


def ablation_markdown(abl: dict, base_scores: dict) -> str:
    splits = list(base_scores)
    labels = list(next(iter(base_scores.values())))
    cols = [(s, t) for s in splits for t in labels]
    lines = [f"# Healing ablation at fraction {abl['fraction']} ({abl['layers_removed']} layers removed: "
             f"{abl['removed_layers']})", "",
             "Cells: score (relative degradation vs the unpruned base; ✗ = over the 0.25 tolerance).", "",
             "| healing | " + " | ".join(f"{s} {t}" for s, t in cols) + " |", "|---|" + "---|" * len(cols),
             "| base (unpruned) | " + " | ".join(_metric(base_scores[s][t]) for s, t in cols) + " |"]
    names = {"none": "none (pruned only)", "lora": "LoRA only", "projector": "projector only",
             "both": "LoRA + projector"}
    for v, r in abl["variants"].items():
        lines.append(f"| {names[v]} | " + " | ".join(
            _cell(r["scores"][s][t], r["relative_degradation"][t][s], r["within_tolerance"][t][s]) for s, t in cols)
            + " |")
    return "\n".join(lines) + "\n"


def sweep_markdown(result: dict) -> str:
    base = result["base"]["scores"]
    splits, labels = list(base), list(next(iter(base.values())))
    cols = [(s, t) for s in splits for t in labels]
    lines = [f"# Pruning sweep of {result['model']['dir']}", "",
             f"{result['base']['decoder_layers']} decoder layers; tolerance {result['tolerance']} relative degradation "
             f"on every split. Largest fraction within tolerance: "
             + ", ".join(f"{k} {v}" for k, v in result["max_fraction"].items()) + ".", ""]
    seeds = result.get("seeds", 1)
    if seeds > 1:
        other = "point" if result["select_rule"] == "upper" else "upper"
        used = ", ".join(str(r["seed"]) for r in result["points"][0]["runs"])
        lines += [f"{seeds} healing runs per fraction (seeds {used}); cells: mean score (mean relative degradation [95% Student-t interval over the {seeds} runs]). "
                  + ("Rule: a fraction passes when the interval's upper bound is within the tolerance on every split"
                     if result["select_rule"] == "upper" else
                     "Rule: a fraction passes when the mean degradation is within the tolerance on every split")
                  + f" (--select-rule {result['select_rule']}); by the {other} rule the largest fractions would be: "
                  + ", ".join(f"{k} {v}" for k, v in result["max_fraction_by_rule"][other].items()) + ".", ""]
    else:
        lines += ["One healing run per fraction (--seeds 1): no interval; a fraction passes when its degradation is "
                  "within the tolerance on every split (--select-rule point).", ""]
    lines += ["| fraction | layers left | removed | " + " | ".join(f"{s} {t}" for s, t in cols) + " |",
              "|---|---|---|" + "---|" * len(cols),
              f"| 0 | {result['base']['decoder_layers']} | - | " + " | ".join(_metric(base[s][t]) for s, t in cols) + " |"]
    for p in result["points"]:
        lines.append(f"| {p['fraction']} | {p['decoder_layers']} | {p['removed_layers']} | " + " | ".join(
            _cell(p["scores"][s][t], p["relative_degradation"][t][s], p["within_tolerance"][t][s],
                  (p.get("interval") or {}).get(t, {}).get(s)) for s, t in cols)
            + " |")
    sv = result["analysis"]["speech_vs_text_spearman"]
    if sv:
        lines += ["", "Speech vs text block ranking (Spearman, per block size, mean): "
                  + ", ".join(f"{t} {v}" for t, v in sv.items()) + "."]
    lines += ["", ablation_markdown(result["ablation"], base).replace("# ", "## ", 1)]
    return "\n".join(lines)


def sweep(model_dir, train, eval_data, out, cfg: SweepConfig | None = None, **kw) -> dict:
    return Sweep(model_dir, train, eval_data, out, cfg or SweepConfig(), **kw).run()


#: sweep's flags of HealConfig fields are --heal-<field>; these kept their older names too
HEAL_ALIASES = {"lora_r": ["--lora-r"], "lora_alpha": ["--lora-alpha"], "seed": ["--seed"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech sweep", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the unpruned base model dir")
    p.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help="training manifest(s) for healing")
    p.add_argument("--eval-data", nargs="+", required=True, metavar="MANIFEST", help="one manifest per split")
    p.add_argument("--analysis-data", nargs="+", default=None, metavar="MANIFEST", help="default: --data")
    p.add_argument("--out", required=True, help="sweep dir (re-run with the same flags to resume)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_options(p, SweepConfig, title="sweep")
    # the healing flags of `slimspeech heal`, prefixed; the tasks are the sweep's own --tasks
    add_options(p, HealConfig, prefix="heal-", exclude=("tasks",), aliases=HEAL_ALIASES, title="healing")
    return p


def config_from_parsed(args: argparse.Namespace) -> SweepConfig:
    """The SweepConfig of parsed sweep flags, its ``heal`` from the ``--heal-*`` ones and the sweep's ``--tasks``."""
    cfg = config_from_args(SweepConfig, args)
    cfg.heal = config_from_args(HealConfig, args, prefix="heal-", exclude=("tasks",), tasks=cfg.tasks)
    return cfg


def main(argv: list[str]) -> int:
    import torch

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_parsed(args)
    r = sweep(args.model, args.data, args.eval_data, args.out, cfg, analysis_data=args.analysis_data,
              device=args.device)
    print(f"sweep of {len(r['points'])} fractions x {r['seeds']} healing run(s) -> {args.out}/sweep.json; largest "
          f"fraction within {r['tolerance']} (rule {r['select_rule']}): transcribe {r['max_fraction_transcribe']}, all tasks {r['max_fraction']['all_tasks']}")
    return 0
