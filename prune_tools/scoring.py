"""Scores: WER (jiwer) for transcription, BLEU and chrF (sacrebleu) for translation.

WER normalisation (both reference and hypothesis): Unicode NFKC, lowercase, every character
that is not a letter, digit, apostrophe or space becomes a space (so "ball?" == "ball"),
apostrophes at word edges are dropped, whitespace collapsed. BLEU/chrF use sacrebleu's defaults
(13a tokenisation, case-sensitive) on the raw texts, as MT papers report them.
"""

from __future__ import annotations

import re
import unicodedata

import jiwer
import sacrebleu

_NON_WORD = re.compile(r"[^\w' ]+")
_EDGE_APOS = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("_", " ")
    text = _EDGE_APOS.sub(" ", _NON_WORD.sub(" ", text))
    return " ".join(text.split())


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER in percent over normalised texts (an empty hypothesis counts as all deletions)."""
    r = [normalize(x) for x in refs]
    h = [normalize(x) for x in hyps]
    keep = [i for i, x in enumerate(r) if x]
    if not keep:
        raise ValueError("all references are empty: cannot compute WER")
    return 100.0 * jiwer.wer([r[i] for i in keep], [h[i] for i in keep])


def bleu(refs: list[str], hyps: list[str]) -> float:
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def chrf(refs: list[str], hyps: list[str]) -> float:
    return float(sacrebleu.corpus_chrf(hyps, [refs]).score)


def score_task(task_label: str, refs: list[str], hyps: list[str]) -> dict:
    """``{"wer": ...}`` for transcribe, ``{"bleu": ..., "chrf": ...}`` for translate_*; plus counts."""
    out: dict = {"n": len(refs)}
    if task_label.startswith("translate"):
        out.update(bleu=round(bleu(refs, hyps), 2), chrf=round(chrf(refs, hyps), 2))
    else:
        out.update(wer=round(wer(refs, hyps), 2))
    return out
