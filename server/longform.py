"""Long audio: cut a clip into the chunks the model decodes, and join their texts.

    probs = speech_probabilities(wav)                       # speechllm.vad: one per 512 samples (32 ms)
    chunks = plan_speech_chunks(wav, probs, window_s=16.0, merge_seconds=5.0)   # [] when nothing is said
    chunks = plan_chunks(wav, window_s=30.0, overlap_s=0.5) # without a VAD: cuts at the quietest points
    joiner = TextJoiner.for_chunks(chunks)
    for chunk, text in zip(chunks, texts):
        joiner.finish_chunk(text)                           # -> the text to append (or feed(delta) per delta)
    joiner.joined, joiner.parts                             # joined text, one part per chunk

A ``Chunk`` is ``start``/``end``, the samples fed to the model, ``seg_start``/``seg_end``, the span of
the timeline its text is reported for, and ``no_speech_prob``, 1 - the mean speech probability over
that span (0.0 when not measured). ``overlaps_previous`` is true when the chunk was fed audio before
its span (``start < seg_start``): audio its predecessor also decoded.

Speech chunks (``plan_speech_chunks``), from per-window speech probabilities (``VadParams``):

1. speech windows: on at ``threshold`` (0.5), off below ``neg_threshold`` (threshold - 0.15); between
   the two a window keeps the previous window's state (hysteresis: no flicker on a wavering probability);
2. pauses shorter than ``min_silence_s`` (0.3 s) are bridged: gaps between words stay inside a piece,
   pauses between sentences separate pieces; then regions shorter than ``min_speech_s`` (0.25 s) are
   dropped (clicks, breaths);
3. each region is padded by ``pad_before_s`` (0 s) before and ``pad_after_s`` (0.15 s) after, never
   past the midpoint of the pause to a neighbouring region nor past the clip: endings the VAD scores
   low stay in, and pieces never overlap; onsets get no padding because the VAD finds them within a
   window and a model trained on trimmed utterances misreads a first word after leading silence;
4. neighbouring pieces are merged, left to right, while the merged piece (silence between included)
   lasts at most ``merge_seconds`` (0: never merge; never more than the window) and the pause between
   them is at most ``max_merge_gap_s`` (2.0 s): the model was trained on single utterances of a few
   seconds, so a piece is kept near that length instead of filling its window as the energy split did
   (WER 88% on 10 minutes of benchmark sentences), while very short pieces ("yes.") get context;
5. a piece longer than ``window_s`` (continuous speech) is cut by ``plan_chunks`` (below) within it.

No speech region at all gives no chunk: silence and noise are not decoded (the model, given only
silence, makes words up). Speech chunks do not tile the timeline: the pauses between them belong to no
segment.

Energy chunks (``plan_chunks``): a cut is placed at the quietest 100 ms (frame energy, smoothed) in
the second half of the span a chunk may cover, so words are rarely cut. Each chunk after the first
starts ``overlap_s`` before its cut; its segment starts at the cut.

Joining: a word decoded on both sides of an energy cut is dropped from the second text: the longest
run of up to ``max_overlap_words`` words that ends the previous text and starts the next one (never
the whole next text). Only chunks that overlap their predecessor are de-duplicated
(``TextJoiner.for_chunks``): speech chunks share no audio, so a word said twice across a pause ("no.
no, not that") is kept. ``TextJoiner()`` without chunks de-duplicates every chunk (energy chunks).
Streaming uses the same joiner incrementally (``feed``), so streamed deltas add up to the
non-streamed text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_FRAME = 160  # 10 ms
_SMOOTH = 10  # frames: 100 ms
#: samples per speech probability: speechllm.vad.WINDOW_SAMPLES (not imported: this module stays torch-free)
VAD_WINDOW = 512


@dataclass(frozen=True)
class Chunk:
    start: int  # samples fed to the model: [start, end)
    end: int
    seg_start: int  # the part of the timeline this chunk's text is reported for: [seg_start, seg_end)
    seg_end: int
    #: 1 - the VAD's mean speech probability over [seg_start, seg_end); 0.0: not measured
    no_speech_prob: float = 0.0

    def seconds(self, sample_rate: int = SAMPLE_RATE) -> tuple[float, float]:
        return self.seg_start / sample_rate, self.seg_end / sample_rate

    @property
    def overlaps_previous(self) -> bool:
        """Fed audio before its segment, which the previous chunk decoded too: its text may repeat words."""
        return self.start < self.seg_start


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


# ---- speech chunks (VAD) -------------------------------------------------------------------------


@dataclass(frozen=True)
class VadParams:
    """How speech probabilities become pieces (see the module docstring for why these values)."""

    threshold: float = 0.5  # a window at or above this starts / continues speech
    #: a window below this ends speech; in between: as the previous window. None: threshold - 0.15
    #: (silero's convention), so that setting only the threshold moves both
    neg_threshold: float | None = None
    min_speech_s: float = 0.25  # shorter regions are dropped
    min_silence_s: float = 0.3  # shorter pauses do not separate pieces
    #: context kept before a region's onset: none by default, since the VAD's onsets are within a window
    #: of the speech and leading silence cost the demo model words (60 sentences: WER 1.60% with none,
    #: 3.47% with 30 ms, 4.80% with 150 ms, 9.33% with 500 ms)
    pad_before_s: float = 0.0
    #: context kept after a region's end (endings fade below the threshold before they stop)
    pad_after_s: float = 0.15
    max_merge_gap_s: float = 2.0  # pieces are never merged across a longer pause

    def __post_init__(self):
        if self.neg_threshold is None:
            object.__setattr__(self, "neg_threshold", max(0.0, self.threshold - 0.15))
        if not 0.0 <= self.neg_threshold <= self.threshold <= 1.0:
            raise ValueError(f"need 0 <= neg_threshold <= threshold <= 1, got {self.neg_threshold}, {self.threshold}")


def _check_probs(probs: np.ndarray, n_samples: int, window: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if len(probs) != -(-n_samples // window):
        raise ValueError(f"{len(probs)} speech probabilities for {n_samples} samples: expected one per "
                         f"{window} samples ({-(-n_samples // window)}; speechllm.vad.speech_probabilities)")
    return probs


def speech_regions(probs: np.ndarray, n_samples: int, params: VadParams = VadParams(),
                   window: int = VAD_WINDOW, sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Speech as [start, end) sample spans (unpadded, in order, apart by >= min_silence_s)."""
    probs = _check_probs(probs, n_samples, window)
    n = len(probs)
    if n == 0:
        return []
    # hysteresis: each window takes the state of the latest decisive window (>= threshold: on, < neg: off)
    decisive = np.full(n, -1, dtype=np.int8)
    decisive[probs < params.neg_threshold] = 0
    decisive[probs >= params.threshold] = 1
    latest = np.maximum.accumulate(np.where(decisive >= 0, np.arange(n), -1))
    on = np.where(latest >= 0, decisive[np.maximum(latest, 0)], 0).astype(np.int8)
    edges = np.diff(np.concatenate([[0], on, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # windows [start, end)
    min_silence = params.min_silence_s * sample_rate / window
    regions: list[list[int]] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        if regions and a - regions[-1][1] < min_silence:
            regions[-1][1] = b  # a pause between words, not between utterances
        else:
            regions.append([a, b])
    min_speech = params.min_speech_s * sample_rate / window
    return [(a * window, min(b * window, n_samples)) for a, b in regions if b - a >= min_speech]


def no_speech_prob(probs: np.ndarray, start: int, end: int, window: int = VAD_WINDOW) -> float:
    """1 - the mean speech probability of the windows that overlap samples [start, end) (1.0 if none)."""
    span = np.asarray(probs)[start // window: -(-end // window)]
    return 1.0 - float(np.mean(span)) if len(span) else 1.0


def with_no_speech(chunks: Sequence[Chunk], probs: np.ndarray, window: int = VAD_WINDOW) -> list[Chunk]:
    """The chunks with ``no_speech_prob`` measured over their segments (e.g. energy chunks of a VAD-ed clip)."""
    return [replace(c, no_speech_prob=no_speech_prob(probs, c.seg_start, c.seg_end, window)) for c in chunks]


def plan_speech_chunks(wav: np.ndarray, probs: np.ndarray, window_s: float, *, merge_seconds: float = 0.0,
                       overlap_s: float = 0.5, params: VadParams = VadParams(), window: int = VAD_WINDOW,
                       sample_rate: int = SAMPLE_RATE) -> list[Chunk]:
    """The chunks to decode: speech pieces, merged up to ``merge_seconds``, none longer than ``window_s``.

    ``probs``: one speech probability per ``window`` samples of ``wav`` (speechllm.vad). [] when no
    speech was found. Chunks are in order and do not overlap, except the energy-split parts of one
    piece longer than ``window_s`` (``overlaps_previous``).
    """
    total = len(wav)
    probs = _check_probs(probs, total, window)
    regions = speech_regions(probs, total, params, window, sample_rate)
    # pad each region, up to the midpoint of the pause to its neighbour and within the clip
    before, after = int(params.pad_before_s * sample_rate), int(params.pad_after_s * sample_rate)
    pieces = []
    for i, (a, b) in enumerate(regions):
        lo = 0 if i == 0 else (regions[i - 1][1] + a) // 2
        hi = total if i == len(regions) - 1 else (b + regions[i + 1][0]) // 2
        pieces.append((max(lo, a - before), min(hi, b + after)))
    # merge neighbours while the merged piece stays short enough and the pause between them short
    limit = int(min(merge_seconds, window_s) * sample_rate)
    max_gap = params.max_merge_gap_s * sample_rate
    groups: list[list[int]] = []
    for i, (a, b) in enumerate(pieces):
        if groups and b - groups[-1][0] <= limit and regions[i][0] - regions[i - 1][1] <= max_gap:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    window_samples = int(window_s * sample_rate)
    chunks: list[Chunk] = []
    for a, b in groups:
        if b - a <= window_samples:
            chunks.append(Chunk(a, b, a, b))
        else:  # continuous speech longer than the model's window: cut at its quietest points
            chunks += [Chunk(c.start + a, c.end + a, c.seg_start + a, c.seg_end + a)
                       for c in plan_chunks(wav[a:b], window_s, overlap_s, sample_rate)]
    chunks = with_no_speech(chunks, probs, window)
    log.debug("%.1f s: %d speech regions -> %d chunks (merge_seconds=%s)", total / sample_rate, len(regions),
              len(chunks), merge_seconds)
    return chunks


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
    """Joins chunk texts in order; incrementally (``feed`` deltas) or whole (``finish_chunk``).

    ``overlaps[i]``: whether chunk i's text may repeat the end of the previous text (its audio overlaps
    the previous chunk's); only those are de-duplicated. None: every chunk after the first is.
    """

    def __init__(self, max_overlap_words: int = 4, overlaps: Sequence[bool] | None = None):
        self.max_words = max_overlap_words
        self.overlaps = None if overlaps is None else list(overlaps)
        self.parts: list[str] = []
        self.text = ""
        self._new_chunk()

    @classmethod
    def for_chunks(cls, chunks: Sequence[Chunk], max_overlap_words: int = 4) -> TextJoiner:
        """A joiner that de-duplicates only the chunks that overlap their predecessor."""
        return cls(max_overlap_words, [c.overlaps_previous for c in chunks])

    def _new_chunk(self) -> None:
        i = len(self.parts)
        dedupe = i > 0 and (self.overlaps is None or (i < len(self.overlaps) and self.overlaps[i]))
        self._raw = ""
        self._skip: int | None = None if dedupe else 0  # None: unresolved until enough words
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
