"""``slimspeech analyze``: which blocks of decoder layers are redundant (the paper's Figure 1).

    slimspeech analyze --model M --data data/bench/dev.jsonl --out runs/analysis \\
        [--inputs speech,text] [--tasks transcribe,translate:fr,translate:de] [--tokens last|mean|both] [--limit 200] \\
        [--end own|task|content] [--text-source reference|source]

For every start layer l and block size n: d(l, n) = arccos(cos(h_l, h_{l+n})) / pi, the angular
distance between the residual stream entering layer l and entering layer l + n (Gromov et al.
2024); a small distance means layers l .. l+n-1 barely change the representation, so the block
is a candidate for removal. ``h_0`` is the embedding output and ``h_L`` (the input to a notional
layer L) is the last layer's output *before* the final norm, captured by a hook: HF's
``hidden_states[-1]`` is after the norm and would distort every block that ends at L.

Token reduction (``--tokens``):
- ``last`` (default): the state at each utterance's last non-padded token, averaged over utterances;
- ``mean``: averaged over every non-padded token of every utterance (ShortGPT-style block influence;
  tokens are pooled, so longer utterances weigh more).

Inputs (``--inputs``), each per task:
- ``speech``: the task prompt with the audio spliced in (what the model sees when serving), no target;
- ``text``: the task's reference text through the decoder alone, ``[BOS] + text tokens``: the
  transcript for ``transcribe``, the translation for ``translate:fr`` / ``translate:de``.

Like with like (defaults: as above): with ``last``, the speech input's compared token is the task
tag and the text input's the last word. ``--end task`` puts the text in the audio's place of the
task prompt (``[BOS] <|en|> text <|transcribe|>``), so both end with the task tag; ``--end
content`` cuts the speech prompt right after the audio, so both end at their last content token.
``--text-source source`` gives every task's text input the English source transcript, so a
translation is analysed on what the speech says rather than on its translation.

States are taken in float32; cosines and the running sums are float64 (L+1, L+1) matrices per
condition, so memory does not grow with the number of utterances.

Outputs in ``--out``: ``analysis.json`` (``model``: dir, layer count, weight fingerprint and the
dtype it was loaded in, so ``prune`` refuses an analysis of another model; ``matrix[n-1][l]`` per
condition; the best block per n; agreement = Spearman rank correlation over blocks between speech
and text and between tasks, and whether the best blocks coincide), ``distances.csv``,
``best_blocks.csv``, ``analysis.md`` and ``heatmaps_<tokens>.png`` (one panel per input x task,
block size vs start layer, white dots on the best block per size, speech-vs-text Spearman in the
title).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechllm.audio import load_audio
from speechllm.devices import DTYPE_CHOICES, resolve_device, resolve_dtype
from speechllm.errors import SlimError
from speechllm.modeldir import default_model_dir, load_model, read_json, write_json
from speechllm.provenance import ModelRef, stamp, stamped_by
from speechllm.tasks import Task, parse_task

from .rows import DEFAULT_TASKS, load_rows, parse_tasks, reference

log = logging.getLogger(__name__)

INPUTS = ("speech", "text")
TOKENS = ("last", "mean")
AVERAGE = "average"  # the pseudo-task: the mean of the per-task matrices of one input
ANALYSIS_FILE = "analysis.json"
#: where the speech and the text input end (``--end``); the last token is what ``last`` compares
ENDS = {"own": "each input ends where it does by itself: speech at the prompt's last token (the task tag), "
               "text at its last word",
        "task": "both end with the task tag: the text goes in the audio's place of the task prompt",
        "content": "both end at their last content token: the speech prompt is cut right after the audio, "
                   "the text is [BOS] + text"}
#: the text input's text (``--text-source``)
TEXT_SOURCES = {"reference": "the task's reference (the transcript; for a translation, the translation)",
                "source": "the English source transcript for every task (what the speech says)"}
DEFINITION = ("d(l, n) = arccos(cos(h_l, h_{l+n})) / pi; h_l = residual stream entering decoder layer l "
              "(h_0 = embeddings, h_L = last layer output before the final norm); matrix[n-1][l], "
              "null where l + n > L; last = last non-padded token averaged over utterances, "
              "mean = averaged over all non-padded tokens (pooled)")


# ---------------------------------------------------------------------------------------------
# model identity


def model_identity(model, model_dir=None) -> dict:
    """The analysed model as a ``ModelRef`` dict: dir, family, layers, the fingerprint of the weights as
    loaded and the dtype they were loaded in (``prune`` needs both to recognise them)."""
    return ModelRef.of(model, model_dir).to_dict()


# ---------------------------------------------------------------------------------------------
# residual-stream states and the running sums


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B,) index of each row's last non-padded token (left or right padding)."""
    T = mask.shape[1]
    return T - 1 - mask.flip(1).to(torch.long).argmax(1)


def residual_states(model, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor | None = None, select=None) -> list[torch.Tensor]:
    """Run the decoder stack once; -> L+1 float32 tensors, ``[l]`` = the residual stream entering layer l.

    Forward pre-hooks on every decoder layer take h_0 .. h_{L-1}; a pre-hook on the final norm
    (or, without one, a forward hook on the last layer) takes h_L before the norm. ``select``
    reduces each (B, T, D) state as it is captured (e.g. to the last token, (B, D)), so only what
    is needed stays in memory. The stack runs without the LM head, so no (B, T, vocab) logits.
    """
    stack = model.decoder_stack()
    layers = stack.layers
    L = len(layers)
    states: list[torch.Tensor | None] = [None] * (L + 1)

    def keep(i, h):
        h = h.detach().float()
        states[i] = select(h) if select is not None else h

    def pre_hook(i):
        def hook(_module, args, kwargs):
            keep(i, args[0] if args else kwargs["hidden_states"])
        return hook

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    norm = getattr(stack, "norm", None)
    if isinstance(norm, torch.nn.Module):
        handles.append(norm.register_forward_pre_hook(pre_hook(L), with_kwargs=True))
    else:
        handles.append(layers[-1].register_forward_hook(
            lambda _m, _a, out: keep(L, out[0] if isinstance(out, (tuple, list)) else out)))
    try:
        with torch.no_grad():
            stack(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if any(s is None for s in states):
        raise RuntimeError(f"decoder of family {model.family} did not run every layer: states "
                           f"{[i for i, s in enumerate(states) if s is None]} missing")
    return states  # type: ignore[return-value]


def _pairwise_angles(u: torch.Tensor) -> torch.Tensor:
    """(L+1, K, D) unit vectors -> (K, L+1, L+1) angular distances arccos(cos) / pi."""
    cos = torch.einsum("ikd,jkd->kij", u, u).clamp(-1.0, 1.0)
    return torch.arccos(cos) / math.pi


class DistanceAccumulator:
    """Running float64 sums of d(i, j) over utterances (``last``) or tokens (``mean``).

    ``update`` takes one batch; memory is (L+1)^2 per mode whatever the number of utterances.
    """

    def __init__(self, num_layers: int, modes=("last",), token_chunk: int = 2048):
        self.num_layers = num_layers
        self.modes = tuple(modes)
        self.sums = {m: torch.zeros(num_layers + 1, num_layers + 1, dtype=torch.float64) for m in self.modes}
        self.counts = {m: 0 for m in self.modes}
        self.utterances = 0
        self.token_chunk = token_chunk

    def update_states(self, states: list[torch.Tensor], mask: torch.Tensor) -> None:
        """``states``: L+1 of (B, T, D) (or (B, D) last-token vectors when only ``last`` is kept)."""
        mask = mask.to(states[0].device).bool()
        B = mask.shape[0]
        self.utterances += B
        if "last" in self.modes:
            if states[0].dim() == 2:
                u = torch.stack(states)  # (L+1, B, D)
            else:
                idx = last_token_index(mask)
                u = torch.stack([s[torch.arange(B, device=s.device), idx] for s in states])
            u = torch.nn.functional.normalize(u.double(), dim=-1)
            self.sums["last"] += _pairwise_angles(u).sum(0).cpu()
            self.counts["last"] += B
        if "mean" in self.modes:
            if states[0].dim() != 3:
                raise ValueError("mean mode needs full (B, T, D) states")
            tokens = torch.stack([s[mask] for s in states])  # (L+1, N_tokens, D)
            for start in range(0, tokens.shape[1], self.token_chunk):
                u = torch.nn.functional.normalize(tokens[:, start:start + self.token_chunk].double(), dim=-1)
                self.sums["mean"] += _pairwise_angles(u).sum(0).cpu()
            self.counts["mean"] += tokens.shape[1]

    def update(self, model, inputs_embeds, attention_mask, position_ids=None) -> None:
        """Run one batch through the decoder and add its distances."""
        select = None
        if self.modes == ("last",):
            idx = last_token_index(attention_mask)
            select = lambda h: h[torch.arange(h.shape[0], device=h.device), idx.to(h.device)]  # noqa: E731
        states = residual_states(model, inputs_embeds, attention_mask, position_ids, select)
        self.update_states(states, attention_mask)

    def pair_means(self, mode: str) -> torch.Tensor:
        if not self.counts[mode]:
            raise ValueError("no utterances were accumulated")
        return self.sums[mode] / self.counts[mode]

    def matrix(self, mode: str) -> list[list[float | None]]:
        """``[n-1][l]`` = d(l, n) for n = 1..L, l = 0..L-1 (None where l + n > L)."""
        pair = self.pair_means(mode)
        L = self.num_layers
        return [[round(float(pair[l, l + n]), 6) if l + n <= L else None for l in range(L)] for n in range(1, L + 1)]


# ---------------------------------------------------------------------------------------------
# reading a matrix


def best_blocks(matrix: list[list[float | None]]) -> list[dict]:
    """The most redundant (smallest d) block per size n = 1 .. L-1 (removing all L is not allowed)."""
    out = []
    L = len(matrix)
    for n in range(1, L):
        row = matrix[n - 1]
        l = min((i for i, v in enumerate(row) if v is not None), key=lambda i: row[i])
        out.append({"n": n, "start": l, "layers": list(range(l, l + n)), "distance": row[l]})
    return out


def mean_matrix(matrices: list[list[list[float | None]]]) -> list[list[float | None]]:
    return [[None if row[0][l] is None else round(sum(m[l] for m in row) / len(row), 6)
             for l in range(len(row[0]))] for row in zip(*matrices)]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a, b) -> float | None:
    """Spearman rank correlation of two equally long sequences (None if either is constant or < 3)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return round(float(np.corrcoef(ra, rb)[0, 1]), 4)


def agreement(m1, m2) -> dict:
    """How alike two distance matrices rank the blocks.

    ``spearman``: over the blocks of each size n (start layers ranked), averaged over n; it
    ignores that bigger blocks are always farther apart, which would inflate a correlation over
    all blocks at once (``spearman_all_blocks``, also given). ``best_same``: per n, whether the
    two best start layers coincide; ``best_same_fraction`` over n = 1 .. L-1.
    """
    L = len(m1)
    per_n = {}
    for n in range(1, L):
        valid = [l for l, v in enumerate(m1[n - 1]) if v is not None]
        per_n[str(n)] = spearman([m1[n - 1][l] for l in valid], [m2[n - 1][l] for l in valid])
    rhos = [r for r in per_n.values() if r is not None]
    flat1 = [v for row in m1 for v in row if v is not None]
    flat2 = [v for row in m2 for v in row if v is not None]
    b1, b2 = best_blocks(m1), best_blocks(m2)
    same = {str(b["n"]): b["start"] == c["start"] for b, c in zip(b1, b2)}
    return {"spearman": round(float(np.mean(rhos)), 4) if rhos else None,
            "spearman_per_n": per_n, "spearman_all_blocks": spearman(flat1, flat2),
            "best_same": same, "best_same_fraction": round(sum(same.values()) / max(1, len(same)), 4)}


# ---------------------------------------------------------------------------------------------
# inputs


def prompt_ids(model, task) -> tuple[list[int], list[int]]:
    """(token ids before the audio, after it) of ``task``'s prompt, BOS where the model puts it."""
    if hasattr(model, "prompt_ids"):  # slam: BOS at the start or after the audio (bos_position)
        return model.prompt_ids(task)
    before, after = model.prompts.render(task)
    bos = model.tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + model.text_ids(before), model.text_ids(after)


def text_inputs(model, texts: list[str], task=None):
    """Texts through the decoder alone, left padded -> DecoderInputs: ``[BOS] + text tokens`` each, or with
    ``task`` the text in the audio's place of the task prompt (``[BOS] <|en|> text <|transcribe|>`` for the
    demo model's prompts)."""
    emb = model.lm.get_input_embeddings()
    bos = model.tokenizer.bos_token_id
    before, after = prompt_ids(model, task) if task is not None else ([bos] if bos is not None else [], [])
    prompts = []
    for text in texts:
        content = model.text_ids(text)
        ids = before + content + after
        if not ids:
            raise SlimError(f"empty text input {text!r}: every utterance needs a non-empty reference")
        prompts.append(emb(torch.tensor(ids, dtype=torch.long, device=model.device)))
    return model.assemble(prompts)


def speech_inputs(model, task, wavs: list, end: str = "own"):
    """The task prompt with each clip's audio spliced in -> DecoderInputs; ``end="content"`` cuts every
    prompt right after its audio, so each row ends at its last audio position (the last content token)."""
    x = model.embed([task] * len(wavs), wavs)
    if end != "content":
        return x
    after = prompt_ids(model, task)[1]
    k = len(after)
    if k == 0:
        return x
    tail = model.lm.get_input_embeddings()(torch.tensor(after, dtype=torch.long, device=x.inputs_embeds.device))
    # left padded: every row ends with the same k prompt tokens; check they are what we cut
    if not torch.allclose(x.inputs_embeds[:, -k:].float(), tail.float().expand(len(wavs), -1, -1), atol=1e-5):
        raise SlimError(f"--end content: the {model.family} model's prompt for {task} does not end with the "
                        "tokens of its template's text after {audio}: use --end own or task", param="end")
    cut = x.inputs_embeds.shape[1] - k
    return dataclasses.replace(x, inputs_embeds=x.inputs_embeds[:, :cut], attention_mask=x.attention_mask[:, :cut],
                               position_ids=None if x.position_ids is None else x.position_ids[:, :cut],
                               prompt_lengths=[n - k for n in x.prompt_lengths])


def input_texts(rows: list[dict], task, text_source: str = "reference") -> list[str]:
    """The text input's texts: the task's reference (``reference``), or the English source transcript for
    every task (``source``: a translation analysed on what the speech says, not on its translation)."""
    if text_source == "source":
        return [reference(r, Task("transcribe")) for r in rows]
    return [reference(r, task) for r in rows]


def analyze_model(model, rows: list[dict], *, inputs=INPUTS, tasks=None, tokens=("last",), batch_size: int = 8,
                  model_dir=None, progress: bool = True, end: str = "own", text_source: str = "reference") -> dict:
    """Accumulate d(l, n) for every (input, task) over ``rows`` (manifest rows); -> the analysis dict.

    ``end``: where both inputs end (``ENDS``); ``text_source``: the text input's text (``TEXT_SOURCES``)."""
    t0 = time.time()
    if end not in ENDS:
        raise SlimError(f"unknown --end {end!r}: choose from {', '.join(ENDS)}", param="end")
    if text_source not in TEXT_SOURCES:
        raise SlimError(f"unknown --text-source {text_source!r}: choose from {', '.join(TEXT_SOURCES)}",
                        param="text_source")
    tasks = model.resolve_tasks(list(tasks) if tasks else [parse_task(t) for t in DEFAULT_TASKS.split(",")])
    for name in inputs:
        if name not in INPUTS:
            raise SlimError(f"unknown input {name!r}: choose from {', '.join(INPUTS)}", param="inputs")
    for name in tokens:
        if name not in TOKENS:
            raise SlimError(f"unknown token reduction {name!r}: choose from {', '.join(TOKENS)}", param="tokens")
    if not rows:
        raise SlimError("no utterances to analyze: the manifest is empty", param="data")
    L = model.num_decoder_layers
    model.eval()
    identity = model_identity(model, model_dir)
    results: dict = {tok: {inp: {} for inp in inputs} for tok in tokens}
    counts: dict = {}
    for inp in inputs:
        for task in tasks:
            texts = input_texts(rows, task, text_source) if inp == "text" else None
            acc = DistanceAccumulator(L, tokens)
            batches = range(0, len(rows), batch_size)
            for s in tqdm(batches, desc=f"{inp}/{task.label}", disable=not progress, mininterval=10, leave=False):
                chunk = rows[s:s + batch_size]
                if inp == "speech":
                    wavs = [load_audio(r["audio"], max_seconds=model.max_audio_seconds) for r in chunk]
                    with torch.no_grad():
                        x = speech_inputs(model, task, wavs, end)
                else:
                    with torch.no_grad():
                        x = text_inputs(model, texts[s:s + batch_size], task if end == "task" else None)
                acc.update(model, x.inputs_embeds, x.attention_mask, x.position_ids)
            counts[f"{inp}/{task.label}"] = acc.utterances
            for tok in tokens:
                m = acc.matrix(tok)
                results[tok][inp][task.label] = {"utterances": acc.utterances, "units": acc.counts[tok],
                                                 "matrix": m, "best": best_blocks(m)}
            log.info("%s/%s: %d utterances", inp, task.label, acc.utterances)
    for tok in tokens:
        for inp in inputs:
            if len(tasks) > 1:
                m = mean_matrix([results[tok][inp][t.label]["matrix"] for t in tasks])
                results[tok][inp][AVERAGE] = {"utterances": len(rows), "matrix": m, "best": best_blocks(m),
                                              "of_tasks": [t.label for t in tasks]}
    agree: dict = {}
    for tok in tokens:
        a: dict = {"speech_vs_text": {}, "between_tasks": {}}
        if "speech" in inputs and "text" in inputs:
            for task in tasks:
                a["speech_vs_text"][task.label] = agreement(results[tok]["speech"][task.label]["matrix"],
                                                            results[tok]["text"][task.label]["matrix"])
        for inp in inputs:
            a["between_tasks"][inp] = {
                f"{t1.label}|{t2.label}": agreement(results[tok][inp][t1.label]["matrix"],
                                                    results[tok][inp][t2.label]["matrix"])
                for t1, t2 in itertools.combinations(tasks, 2)}
        agree[tok] = a
    return {
        **stamp("slimspeech analyze"),
        "model": identity,
        "definition": DEFINITION,
        "inputs": list(inputs), "tasks": [t.label for t in tasks], "tokens": list(tokens),
        "alignment": {"end": end, "text_source": text_source,
                      "definition": f"{ENDS[end]}; text input: {TEXT_SOURCES[text_source]}"},
        "data": {"utterances": len(rows), "counts": counts},
        "results": results,
        "agreement": agree,
        "seconds": round(time.time() - t0, 2),
    }


# ---------------------------------------------------------------------------------------------
# outputs


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def summary_markdown(a: dict, sizes: list[int] | None = None) -> str:
    L = a["model"]["decoder_layers"]
    if sizes is None:
        sizes = list(range(1, L)) if L <= 16 else sorted({max(1, min(L - 1, round(f * L)))
                                                           for f in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)})
    lines = [f"# Decoder-layer redundancy: {a['model']['dir']}", "",
             f"{L} decoder layers, fingerprint `{a['model']['fingerprint']}`, {a['data']['utterances']} utterances. "
             f"{a['definition']}.", ""]
    for tok in a["tokens"]:
        conds = [(inp, task) for inp in a["inputs"] for task in a["results"][tok][inp]]
        lines += [f"## Best block per size ({tok} token)", "",
                  "| n | " + " | ".join(f"{i} {t}" for i, t in conds) + " |",
                  "|---|" + "---|" * len(conds)]
        for n in sizes:
            cells = []
            for inp, task in conds:
                b = a["results"][tok][inp][task]["best"][n - 1]
                cells.append(f"{b['start']}-{b['start'] + n - 1} ({b['distance']:.3f})")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        ag = a["agreement"][tok]
        lines += ["", f"## Agreement ({tok} token)", "",
                  "| pair | Spearman (per n, mean) | Spearman (all blocks) | same best block |", "|---|---|---|---|"]
        for task, r in ag["speech_vs_text"].items():
            lines.append(f"| speech vs text, {task} | {_fmt(r['spearman'])} | {_fmt(r['spearman_all_blocks'])} | "
                         f"{r['best_same_fraction']:.0%} of n |")
        for inp, pairs in ag["between_tasks"].items():
            for pair, r in pairs.items():
                lines.append(f"| {inp}: {pair.replace('|', ' vs ')} | {_fmt(r['spearman'])} | "
                             f"{_fmt(r['spearman_all_blocks'])} | {r['best_same_fraction']:.0%} of n |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(a: dict, out: str | Path, plots: bool = True) -> Path:
    from . import plots as figs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = ["distances.csv", "best_blocks.csv", "analysis.md"]
    def blocks(r):  # every (n, start, distance) of the matrix
        return [(n, l, v) for n, row in enumerate(r["matrix"], start=1) for l, v in enumerate(row) if v is not None]

    for name, pick in (("distances.csv", blocks),
                       ("best_blocks.csv", lambda r: [(b["n"], b["start"], b["distance"]) for b in r["best"]])):
        with open(out / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["tokens", "input", "task", "n", "start", "end", "distance"])
            for tok, by_input in a["results"].items():
                for inp, by_task in by_input.items():
                    for task, r in by_task.items():
                        w.writerows([tok, inp, task, n, l, l + n - 1, v] for n, l, v in pick(r))
    (out / "analysis.md").write_text(summary_markdown(a))
    if plots:
        for tok, by_input in a["results"].items():
            panels = [(f"{inp} / {task}", r["matrix"], r["best"])
                      for inp, by_task in by_input.items() for task, r in by_task.items()]
            title = f"angular distance d(l, n), {tok} token, {a['model']['decoder_layers']} layers"
            sv = a["agreement"][tok]["speech_vs_text"]
            if sv:
                title += "; speech vs text Spearman: " + ", ".join(f"{t} {_fmt(r['spearman'])}" for t, r in sv.items())
            cols = max(len(by_task) for by_task in by_input.values())
            figs.heatmap_grid(panels, out / f"heatmaps_{tok}.png", title=title, cols=cols)
            files.append(f"heatmaps_{tok}.png")
    a = {**a, "files": files}
    write_json(out / ANALYSIS_FILE, a)
    return out / ANALYSIS_FILE


def read_analysis(path: str | Path) -> dict:
    """Read an analysis.json (or the dir holding it); SlimError if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / ANALYSIS_FILE
    if not path.is_file():
        raise SlimError(f"analysis file not found: {path} (run `slimspeech analyze --out DIR` first)",
                        param="analysis")
    try:
        a = read_json(path)
    except ValueError as exc:
        raise SlimError(f"{path} is not valid JSON ({exc}): re-run slimspeech analyze", param="analysis") from None
    if stamped_by(a) != "slimspeech analyze" or "results" not in a or "model" not in a:
        raise SlimError(f"{path} is not an analysis written by slimspeech analyze", param="analysis")
    return a


def run(model_dir, manifests: list[str], out, *, inputs=INPUTS, tasks=None, tokens=("last",), limit=None,
        batch_size: int = 8, device: str = "cpu", dtype: str = "float32", plots: bool = True, end: str = "own",
        text_source: str = "reference") -> dict:
    rows = load_rows(manifests, limit)  # first: a bad manifest costs no model load
    device = resolve_device(device)
    model = load_model(model_dir, device=device, dtype=resolve_dtype(dtype, device))
    a = analyze_model(model, rows, inputs=inputs, tasks=tasks, tokens=tokens, batch_size=batch_size,
                      model_dir=model_dir, end=end, text_source=text_source)
    a["data"]["manifests"] = [str(Path(m).resolve()) for m in manifests]
    a["data"]["limit"] = limit
    a["device"], a["dtype"] = device, dtype
    write_outputs(a, out, plots=plots)
    return a


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech analyze", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model dir (default: the embedded demo model)")
    p.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help="JSONL manifest(s)")
    p.add_argument("--out", required=True, help="output dir (analysis.json, CSV, PNG)")
    p.add_argument("--inputs", default="speech,text", help="speech,text (either alone)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated tasks (default: {DEFAULT_TASKS})")
    p.add_argument("--tokens", default="last", choices=("last", "mean", "both"),
                   help="last non-padded token (default), mean over all tokens, or both")
    p.add_argument("--limit", type=int, default=None, help="first N utterances")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per forward pass (default: 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                   help="weights and activations (default: float32; auto: bfloat16 on CUDA, else float32); "
                        "states are compared in float32 whatever this is")
    p.add_argument("--end", default="own", choices=tuple(ENDS),
                   help="where both inputs end (the token --tokens last compares): own (default) = " + ENDS["own"]
                        + "; task = " + ENDS["task"] + "; content = " + ENDS["content"])
    p.add_argument("--text-source", default="reference", choices=tuple(TEXT_SOURCES),
                   help="the text input's text: reference (default) = " + TEXT_SOURCES["reference"] + "; source = "
                        + TEXT_SOURCES["source"])
    p.add_argument("--no-plots", action="store_true", help="skip the heatmap PNGs")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    inputs = tuple(x.strip() for x in args.inputs.split(",") if x.strip())
    tokens = TOKENS if args.tokens == "both" else (args.tokens,)
    a = run(args.model or default_model_dir(), args.data, args.out, inputs=inputs, tasks=parse_tasks(args.tasks),
            tokens=tokens, limit=args.limit, batch_size=args.batch_size, device=args.device,
            dtype=args.dtype, plots=not args.no_plots, end=args.end, text_source=args.text_source)
    tok = tokens[0]
    first = a["inputs"][0]
    best = a["results"][tok][first][a["tasks"][0]]["best"]
    sv = a["agreement"][tok]["speech_vs_text"].get(a["tasks"][0])
    mid = best[len(best) // 2] if best else None
    print(f"analysis of {a['model']['decoder_layers']} layers on {a['data']['utterances']} utterances -> "
          f"{Path(args.out) / ANALYSIS_FILE}"
          + (f"; best {mid['n']}-layer block ({first}/{a['tasks'][0]}): {mid['start']}-{mid['start'] + mid['n'] - 1}"
             if mid else "")
          + (f"; speech vs text Spearman {sv['spearman']}" if sv else ""))
    return 0
