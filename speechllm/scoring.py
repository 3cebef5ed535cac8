"""Scores: WER (jiwer) for transcription, BLEU and chrF (sacrebleu) for translation; used offline
(``slimspeech evaluate``, ``train``) and live (the server's shadow mode), so both measure alike.
jiwer and sacrebleu come with the ``prune`` and ``serve`` extras (not the core: ``slimspeech
transcribe`` never imports this module).

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


def utterance_wer(ref: str, hyp: str) -> float | None:
    """One utterance's WER as a fraction over normalised texts (None when the reference is empty)."""
    r, h = normalize(ref), normalize(hyp)
    if not r:
        return None
    return float(jiwer.wer(r, h)) if h else 1.0


def agreement_wer(ref: str, hyp: str) -> float:
    """How far one model's text is from another's on the same audio (``ref``: the reference model's):
    ``utterance_wer``, except that two empty texts agree (0) and any words against an empty one count
    as 1. Shadow mode and ``slimspeech evaluate``'s disagreement both score with it."""
    w = utterance_wer(ref, hyp)
    if w is None:
        return 1.0 if normalize(hyp) else 0.0
    return w


def sentence_chrf(ref: str, hyp: str) -> float:
    """One sentence's chrF (0-100, sacrebleu's defaults)."""
    return float(sacrebleu.sentence_chrf(hyp, [ref]).score)


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
