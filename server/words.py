"""Word timestamps of served models (``timestamp_granularities[]=word``), from their CTC alignment.

    words = WordTimes()
    words.unavailable(info)                      # None, or why the model cannot give them (a 400 says so)
    words.align(info, audio, chunks, texts, parts)   # in a worker thread -> [Word], seconds in the upload

A served ``slam`` model with a CTC projector gets a ``speechllm.align.WordAligner``: its encoder, CTC
head and tokenizer, a second copy on the CPU beside the engine's (engines own their models; this
keeps the engines untouched and the decoder out of it), loaded on the first request that asks for
words (about 0.3 s for the demo models, a few MB). Each decoded chunk's text is aligned over that
chunk's audio; where chunks overlap, only the words the joined text kept from the chunk are given,
shifted to the upload's timeline. torch is used only once an aligner loads.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

import numpy as np

from speechllm.align import AlignmentError, Word, word_timestamps_unavailable
from speechllm.audio import SAMPLE_RATE
from speechllm.modeldir import read_spec

from .engines.base import ModelInfo
from .longform import Chunk

log = logging.getLogger(__name__)


class WordTimes:
    def __init__(self):
        self._aligners: dict[str, object] = {}
        self._why_not: dict[str, str | None] = {}  # per model: read from its spec once, not per request
        self._lock = threading.Lock()

    def unavailable(self, info: ModelInfo) -> str | None:
        if info.name not in self._why_not:
            self._why_not[info.name] = word_timestamps_unavailable(read_spec(info.path))
        return self._why_not[info.name]

    def _aligner(self, info: ModelInfo):
        with self._lock:  # one load per model, even when its first requests come together
            if info.name not in self._aligners:
                from speechllm.align import WordAligner

                self._aligners[info.name] = WordAligner.load(info.path)
                log.info("model %r: word aligner loaded (encoder + CTC head on cpu)", info.name)
            return self._aligners[info.name]

    def align(self, info: ModelInfo, audio: np.ndarray, chunks: Sequence[Chunk], texts: Sequence[str],
              parts: Sequence[str]) -> list[Word]:
        """The words of the joined text with their times in ``audio``: chunk i's text ``texts[i]`` aligned
        over its audio, keeping the words of ``parts[i]`` (what the joiner kept of it: a suffix)."""
        aligner = self._aligner(info)
        out: list[Word] = []
        for chunk, text, part in zip(chunks, texts, parts):
            keep = len(part.split())
            if not keep:
                continue
            try:
                words = aligner.words(audio[chunk.start:chunk.end], text)
            except AlignmentError as exc:  # a chunk too short for its text: its words go without times
                log.warning("model %r: no word times for a chunk at %.2f s: %s", info.name,
                            chunk.start / SAMPLE_RATE, exc)
                continue
            offset = chunk.start / SAMPLE_RATE
            out += [Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3)) for w in words[-keep:]]
        return out
