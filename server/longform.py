"""Long audio: split a clip longer than the model's window at quiet points, and join the texts.

    chunks = plan_chunks(wav, window_s=30.0, overlap_s=0.5)    # [Chunk(start, end, seg_start, seg_end)]
    joiner = TextJoiner()
    for chunk, text in zip(chunks, texts):
        joiner.finish_chunk(text)                             # -> the text to append
    joiner.joined, joiner.parts                               # joined text, one part per chunk

A cut is placed at the quietest 100 ms (frame energy, smoothed) in the second half of the
span a chunk may cover, so words are rarely cut. Each chunk after the first starts
``overlap_s`` before its cut; its segment (the timestamps reported) starts at the cut. A word
decoded on both sides of a cut is dropped from the second text: the longest run of up to
``max_overlap_words`` words that ends the previous text and starts the next one (never the
whole next text).
Streaming uses the same joiner incrementally (``feed``), so streamed deltas add up to the
non-streamed text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
_FRAME = 160  # 10 ms
_SMOOTH = 10  # frames: 100 ms


@dataclass(frozen=True)
class Chunk:
    start: int  # samples fed to the model: [start, end)
    end: int
    seg_start: int  # the part of the timeline this chunk's text is reported for: [seg_start, seg_end)
    seg_end: int

    def seconds(self, sample_rate: int = SAMPLE_RATE) -> tuple[float, float]:
        return self.seg_start / sample_rate, self.seg_end / sample_rate


def frame_energy(wav: np.ndarray) -> np.ndarray:
    """(S,) -> (S // 10 ms,) mean energy per 10 ms frame, smoothed over 100 ms."""
    n = len(wav) // _FRAME
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    e = (wav[: n * _FRAME].astype(np.float64) ** 2).reshape(n, _FRAME).mean(axis=1)
    k = min(_SMOOTH, n)
    return np.convolve(e, np.ones(k) / k, mode="same")


def plan_chunks(wav: np.ndarray, window_s: float, overlap_s: float = 0.5,
                sample_rate: int = SAMPLE_RATE) -> list[Chunk]:
    """Chunks of at most ``window_s`` seconds covering ``wav``; one chunk when it fits."""
    total = len(wav)
    window = int(window_s * sample_rate)
    if total <= window:
        return [Chunk(0, total, 0, total)]
    overlap = int(overlap_s * sample_rate)
    if overlap * 4 > window:  # keep most of each window for new audio
        overlap = window // 4
    energy = frame_energy(wav)
    cuts = [0]
    while True:
        cut = cuts[-1]
        lead = overlap if cut > 0 else 0
        reach = cut + window - lead  # the farthest the next cut may be
        if total <= reach:
            break
        lo, hi = (cut + (window - lead) // 2) // _FRAME, reach // _FRAME
        region = energy[lo:hi]
        # the quietest frame; among equally quiet ones the latest (longer chunks, fewer cuts)
        best = lo + (len(region) - 1 - int(np.argmin(region[::-1]))) if len(region) else reach // _FRAME
        cuts.append(max(cut + _FRAME, min(best * _FRAME, reach)))
    cuts.append(total)
    return [Chunk(max(0, a - (overlap if a > 0 else 0)), b, a, b) for a, b in zip(cuts[:-1], cuts[1:])]


_WORD = re.compile(r"\S+")


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def overlap_end(previous: str, text: str, max_words: int) -> int:
    """Index into ``text`` after its leading words that repeat the end of ``previous`` (0: none).

    At most ``max_words`` words, and never all of ``text``: a chunk keeps at least one word.
    """
    prev = [_norm(w) for w in previous.split()[-max_words:]]
    words = list(_WORD.finditer(text))
    for k in range(min(len(prev), len(words) - 1, max_words), 0, -1):
        head = [_norm(m.group()) for m in words[:k]]
        if head == prev[-k:] and any(head):
            return words[k - 1].end()
    return 0


class TextJoiner:
    """Joins chunk texts in order; incrementally (``feed`` deltas) or whole (``finish_chunk``)."""

    def __init__(self, max_overlap_words: int = 4):
        self.max_words = max_overlap_words
        self.parts: list[str] = []
        self.text = ""
        self._new_chunk()

    def _new_chunk(self) -> None:
        self._raw = ""
        self._skip: int | None = 0 if not self.parts else None  # unresolved until enough words
        self._emitted = 0  # chars of _raw[_skip:] already given out

    def _resolve(self, final: bool) -> None:
        if self._skip is None and (final or len(self._raw.split()) > self.max_words):
            self._skip = overlap_end(self.text, self._raw, self.max_words)

    def _pending(self) -> str:
        """New output for this chunk beyond what was emitted (with the joining space)."""
        if self._skip is None:
            return ""
        part = self._raw[self._skip:].lstrip()
        new = part[self._emitted:]
        if not new:
            return ""
        sep = " " if self._emitted == 0 and self.text else ""
        self._emitted = len(part)
        self.text += sep + new
        return sep + new

    def feed(self, delta: str) -> str:
        """A text delta of the current chunk -> the text to emit now ('' while it may be overlap)."""
        self._raw += delta
        self._resolve(final=False)
        return self._pending()

    def finish_chunk(self, full_text: str) -> str:
        """The current chunk's final text -> the rest to emit; starts the next chunk."""
        self._raw = full_text  # the final text wins if streamed deltas ever disagreed with it
        self._resolve(final=True)
        out = self._pending()
        self.parts.append(self._raw[self._skip:].strip())
        self._new_chunk()
        return out

    @property
    def joined(self) -> str:
        """The joined text of the finished chunks (== the concatenated output when deltas agree)."""
        return " ".join(p for p in self.parts if p)
