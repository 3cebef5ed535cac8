"""Word timestamps from a CTC head: the transcript's tokens force-aligned over the encoder's CTC posteriors.

    from speechllm.align import WordAligner, ctc_forced_align, word_timestamps_unavailable
    aligner = WordAligner.load("speechllm/assets/demo")       # encoder + CTC head + tokenizer, no decoder
    aligner.words(wav, "the small dog sees the red ball")     # [Word("the", 0.2, 0.36), ...] seconds
    path = ctc_forced_align(log_probs, targets, blank)        # (T, C) -> (T,) target index per frame, -1 blank
    word_timestamps_unavailable(spec)                          # None, or why this model cannot give them

Which models: the ``slam`` family with a ``ctc_embed`` or ``ctc_compress`` projector (the demo models).
Their CTC head was trained on the decoder's own tokens of the transcript (``model.text_ids(text)``,
prune_tools/train.py stage ``ctc``), so the transcript's tokens are exactly its label sequence and
no other vocabulary or mapping is needed. Other models have no frame-level view of which token was
spoken when, and get no word timestamps (the server answers 400, saying why).

How: the CTC topology over the S target tokens (blank, y1, blank, y2, ..., yS, blank: 2S+1 states;
a state may stay, move one on, or skip the blank between two different tokens), and the most likely
path through it (Viterbi, max-product in log space) over the T encoder frames, O(T * S) in numpy.
torchaudio's ``forced_align`` does the same, but torchaudio has no build for the pinned torch
2.13.0+cpu; ``tests/speechllm/test_align.py`` checks this one against a brute-force search of every
path on small inputs.

A word's time. Tokens are grouped into words by the tokenizer's character offsets; punctuation
tokens are aligned but not timed (CTC emits a "?" anywhere, often at the clip's end). A word starts
at the first frame its first token holds. CTC is peaky: a token holds the one or two frames of its
spike and blank holds the rest, so the last token's spike is not where the word ends (it ended
280 ms early on the median of 20 demo clips). The word goes on after it while there is sound (a
frame's level within 40 dB of the clip's loudest and 12 dB over its quietest tenth, quiet gaps of
up to two frames bridged), up to the next word's start. Frames are the encoder's (mel hop x its
downsampling: 40 ms for the demo encoder, 20 ms for Whisper's). On the demo model, 20 clips of two
sentences joined by a 0.5-1.0 s silence: the first sentence's last word ends +3 ms, the second's
first word starts +39 ms from the silence's edges (medians; tests/server/test_word_timestamps.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import SlimError

#: projector kinds with a CTC head over the decoder's vocabulary (speechllm.projector)
CTC_PROJECTORS = ("ctc_embed", "ctc_compress")


class AlignmentError(SlimError):
    """Word timestamps this model cannot give."""

    param = "timestamp_granularities"


def word_timestamps_unavailable(spec: dict) -> str | None:
    """None when a model dir's spec (speechllm.json) can give word timestamps, else the reason why not."""
    family = spec.get("family")
    kind = (spec.get("projector") or {}).get("kind", "stack_mlp")
    if family != "slam" or kind not in CTC_PROJECTORS:
        what = f"family {family}" if family != "slam" else f"projector kind {kind}"
        return (f"it has no CTC head ({what}): word timestamps come from a CTC alignment, which only slam "
                f"models with a {' or '.join(CTC_PROJECTORS)} projector have")
    return None


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the clip's start
    end: float

    def to_openai(self, offset: float = 0.0) -> dict:
        return {"word": self.word, "start": round(self.start + offset, 3), "end": round(self.end + offset, 3)}


def ctc_forced_align(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> np.ndarray:
    """The most likely CTC path of ``targets`` through ``log_probs`` (T, C): (T,) int, for each frame
    the index in ``targets`` of the token it emits, -1 where it emits blank.

    Raises ValueError when no path exists: T frames cannot hold S tokens plus a blank between each
    pair of equal neighbours.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T = lp.shape[0]
    y = np.asarray(targets, dtype=np.int64)
    S = len(y)
    if S == 0:
        return np.full(T, -1, dtype=np.int64)
    repeats = int((y[1:] == y[:-1]).sum())
    if T < S + repeats:
        raise ValueError(f"{T} frames cannot hold {S} tokens ({repeats} repeated neighbours need a blank between)")
    L = 2 * S + 1
    labels = np.full(L, blank, dtype=np.int64)
    labels[1::2] = y
    # a skip from s-2 to s: only onto a token, and not between two equal tokens
    skip = np.zeros(L, dtype=bool)
    skip[3::2] = y[1:] != y[:-1]
    neg = -np.inf
    score = np.full(L, neg)
    score[0], score[1] = lp[0, blank], lp[0, y[0]]
    back = np.zeros((T, L), dtype=np.int8)  # 0: stayed, 1: came from s-1, 2: from s-2
    for t in range(1, T):
        stay = score
        step = np.concatenate(([neg], score[:-1]))
        jump = np.where(skip, np.concatenate(([neg, neg], score[:-2])), neg)
        choices = np.stack([stay, step, jump])
        best = choices.argmax(0)
        score = choices[best, np.arange(L)] + lp[t, labels]
        back[t] = best
    s = L - 1 if score[L - 1] >= score[L - 2] else L - 2
    if not np.isfinite(score[s]):
        raise ValueError("no CTC path: the log-probabilities rule out every alignment")
    states = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        states[t] = s
        s -= back[t, s]
    return np.where(states % 2 == 1, states // 2, -1)


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


class WordAligner:
    """A slam model's encoder and CTC head, and its tokenizer: audio + its transcript -> word times."""

    #: quiet encoder frames inside a word that do not end it (2 x 40 ms for the demo encoder)
    BRIDGE_FRAMES = 2

    def __init__(self, encoder, ctc_head, tokenizer, features, frame_seconds: float, blank: int,
                 sample_rate: int = 16000):
        self.encoder, self.ctc_head, self.tokenizer = encoder, ctc_head, tokenizer
        self.features, self.frame_seconds, self.blank = features, frame_seconds, blank
        self.sample_rate = sample_rate

    @staticmethod
    def _frame_seconds(spec: dict, encoder) -> float:
        feats = spec.get("features") or {}
        hop = feats.get("hop_length", 160) / feats.get("sample_rate", 16000)
        cfg = getattr(encoder, "config", None)
        downsample = getattr(cfg, "downsample", None) if not hasattr(encoder, "feature_extractor") else 2
        return hop * (downsample or 2)  # Whisper's conv2 has stride 2

    @classmethod
    def from_model(cls, model) -> "WordAligner":
        """From a loaded SpeechLLM (shares its modules)."""
        reason = word_timestamps_unavailable({**model.spec, "family": model.family})
        if reason:
            raise AlignmentError(f"no word timestamps from this model: {reason}")
        return cls(model.encoder, model.projector.ctc_head, model.tokenizer, model.features,
                   cls._frame_seconds(model.spec, model.encoder), model.projector.blank_id,
                   (model.spec.get("features") or {}).get("sample_rate", 16000))

    @classmethod
    def load(cls, model_dir: str | Path) -> "WordAligner":
        """From a model dir: the encoder, the projector's CTC head and the tokenizer only (no decoder), on CPU
        in float32."""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from .audio import FeatureSettings, LogMel
        from .encoder import HF_WHISPER, encoder_kind, load_encoder
        from .modeldir import read_spec

        path = Path(model_dir)
        spec = read_spec(path)
        reason = word_timestamps_unavailable(spec)
        if reason:
            raise AlignmentError(f"no word timestamps from {path.name}: {reason}")
        kind = encoder_kind(spec)
        encoder = load_encoder(path / "encoder", kind, dtype=torch.float32).float().eval()
        weights = load_file(str(path / "projector.safetensors"))
        vocab_out, in_dim = weights["ctc_head.weight"].shape
        head = torch.nn.Linear(in_dim, vocab_out)
        head.load_state_dict({"weight": weights["ctc_head.weight"], "bias": weights["ctc_head.bias"]})
        head = head.float().eval()
        features = encoder.features if kind == HF_WHISPER else LogMel(FeatureSettings(**spec["features"]))
        tokenizer = AutoTokenizer.from_pretrained(path / "decoder")
        return cls(encoder, head, tokenizer, features, cls._frame_seconds(spec, encoder), vocab_out - 1,
                   (spec.get("features") or {}).get("sample_rate", 16000))

    def log_probs(self, wav: np.ndarray) -> np.ndarray:
        """(S,) 16 kHz -> (T, V+1) CTC log-posteriors over the clip's encoder frames."""
        import torch

        with torch.inference_mode():
            feats, lengths = self.features([wav])
            param = next(self.encoder.parameters())
            h, enc_lengths = self.encoder(feats.to(param.device, param.dtype), lengths)
            logits = self.ctc_head(h[0, : int(enc_lengths[0])])
            return logits.float().log_softmax(-1).cpu().numpy()

    def words(self, wav: np.ndarray, text: str, log_probs: np.ndarray | None = None) -> list[Word]:
        """Each whitespace-separated word of ``text`` with its start and end in ``wav`` (seconds).

        Raises AlignmentError when the clip has too few frames for the text's tokens."""
        spans = _word_spans(text)
        if not spans:
            return []
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a slow (Python) tokenizer: no character offsets to group tokens by
            raise AlignmentError("the model's tokenizer gives no character offsets (use a fast tokenizer)") from None
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        lp = self.log_probs(wav) if log_probs is None else log_probs
        if any(i >= self.blank for i in ids):  # added tokens the CTC head has no output for
            raise AlignmentError("the transcript holds tokens outside the CTC head's vocabulary")
        try:
            path = ctc_forced_align(lp, ids, self.blank)
        except ValueError as exc:
            raise AlignmentError(f"cannot align the transcript with the audio: {exc}") from None
        first = np.full(len(ids), -1)
        last = np.full(len(ids), -1)
        for t, k in enumerate(path):
            if k >= 0:
                last[k] = t
                if first[k] < 0:
                    first[k] = t
        # punctuation is not spoken: CTC emits it anywhere (a "?" often at the clip's end)
        spoken = [any(c.isalnum() for c in text[a:b]) for a, b in offsets]
        groups = []
        for w_start, w_end in spans:
            tokens = [k for k, (a, b) in enumerate(offsets) if a < w_end and b > w_start]
            said = [k for k in tokens if spoken[k]] or tokens
            if said:  # else a word the tokenizer folded into a neighbour: no token of its own
                groups.append((text[w_start:w_end], min(first[k] for k in said), max(last[k] for k in said) + 1))
        speech = self.speech_frames(wav, len(lp))
        out = []
        fs = self.frame_seconds
        for i, (word, start, end) in enumerate(groups):
            # a token holds the frame of its spike; the word goes on while there is sound, up to the next
            # word, across quiet gaps of up to BRIDGE_FRAMES (a stop consonant's closure)
            stop = groups[i + 1][1] if i + 1 < len(groups) else len(lp)
            while end < stop:
                ahead = speech[end:min(stop, end + self.BRIDGE_FRAMES + 1)]
                if not ahead.any():
                    break
                end += int(np.nonzero(ahead)[0][0]) + 1
            out.append(Word(word, round(float(start * fs), 3), round(float(end * fs), 3)))
        return out

    def speech_frames(self, wav: np.ndarray, frames: int) -> np.ndarray:
        """(frames,) bool: whether each encoder frame's audio is sound rather than silence: its level
        within 40 dB of the clip's loudest frame and 12 dB over its quietest tenth (the noise floor)."""
        n = max(1, int(round(self.frame_seconds * self.sample_rate)))
        x = np.zeros(frames * n, dtype=np.float32)
        x[: min(len(wav), x.size)] = wav[: x.size]
        level = 10 * np.log10(np.mean(x.reshape(frames, n).astype(np.float64) ** 2, axis=1) + 1e-12)
        floor = np.percentile(level, 10)
        return level > max(level.max() - 40.0, floor + 12.0)
