"""Voice activity: the probability that each 32 ms window of 16 kHz audio holds speech (Silero VAD).

    from speechllm.vad import WINDOW_SAMPLES, speech_probabilities
    probs = speech_probabilities(wav)   # wav: (S,) float32, 16 kHz mono -> (ceil(S / 512),) float32 in [0, 1]
    # probs[i] covers wav[i * WINDOW_SAMPLES:(i + 1) * WINDOW_SAMPLES] (the last window is zero-padded)

A thin wrapper over the ``silero-vad`` package (a dependency; its TorchScript model ships inside the
wheel, so nothing is ever downloaded). The model is loaded once, on first use, and shared by all
threads; calls are thread-safe and independent (each starts from the model's initial state, as
silero's own ``get_speech_timestamps`` does), so the same audio always gives the same array.
``server.longform.plan_speech_chunks`` turns the probabilities into the chunks a server decodes.

Speed. Silero's streaming API takes one 512-sample window per call and carries an LSTM state from
call to call: 60 s of audio took 1.5 s on one thread here (about 40x real time), mostly per-call
overhead. The model is a per-window feature extractor + convolutional encoder followed by one LSTM
cell and a per-window head, and only the LSTM depends on earlier windows. So this module runs the
extractor and encoder on a whole block of windows at once (1024 windows, about 33 s, bounds the
memory), the LSTM over the block in one fused ``torch.nn.LSTM`` call loaded with the cell's weights,
and the head on all outputs: same numbers as the streaming API (within 2e-6), about 0.15 s per
60 s on one thread here, **about 400x real time** (the encoder is three quarters of it).

Feeding the streaming API a batch of parallel streams (one per stretch of audio) was also measured
(about 140x): its LSTM state turned out to matter for seconds, so stream starts changed the
probabilities (by up to 0.6 several seconds in, even after a 2 s warm-up) and made them depend on
how the audio was cut. The fused path keeps exactly the streaming semantics. It reaches into the
TorchScript model's submodules, which are not a public API, so at load it is checked against the
streaming API on a probe signal; if the structure differs or the numbers disagree (a future wheel),
a warning is logged and the streaming API is used instead (40x, serialized by a lock).
"""

from __future__ import annotations

import functools
import logging
import threading

import numpy as np
import torch

from .audio import SAMPLE_RATE

log = logging.getLogger(__name__)

#: samples per speech probability (32 ms at 16 kHz): silero's window at this rate
WINDOW_SAMPLES = 512
_CONTEXT = 64  # samples of the previous window that silero prepends to each window at 16 kHz
_BLOCK = 1024  # windows per encoder call (~33 s): bounds the memory of the batched encoder (19 MB at 600 s
# of audio against 55 MB with 4096 windows, and no slower)
_MAX_PROBE_DIFF = 1e-4

_load_lock = threading.Lock()


def _import_silero():
    # `silero_vad.model` calls torch.set_num_threads(1) when it is imported, which would silently slow
    # every other torch computation in this process (the speech model on CPU): keep the caller's setting.
    # Under a lock so that two first calls cannot save and restore each other's changed value.
    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    return silero_vad


class _Streaming:
    """Silero's public per-window API; the model is stateful, so one call at a time."""

    def __init__(self, jit_model):
        self.model = jit_model
        self.lock = threading.Lock()

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        n = -(-len(wav) // WINDOW_SAMPLES)
        x = np.zeros(n * WINDOW_SAMPLES, dtype=np.float32)  # a copy: the caller's array may be read-only
        x[: len(wav)] = wav
        x = torch.from_numpy(x)
        out = np.empty(n, dtype=np.float32)
        with self.lock, torch.inference_mode():
            self.model.reset_states()  # each call from the initial state: results do not depend on earlier calls
            for i in range(n):
                out[i] = self.model(x[i * WINDOW_SAMPLES:(i + 1) * WINDOW_SAMPLES].unsqueeze(0), SAMPLE_RATE).item()
        return out


class _Fused:
    """The same model split where it is stateless: batched extractor + encoder, one fused LSTM, batched head.

    Holds no state between calls (the LSTM starts from zeros each call), so threads may share it.
    """

    def __init__(self, jit_model):
        inner = jit_model._model  # the 16 kHz network (jit_model._model_8k is the 8 kHz one)
        self.extract = inner.run_extractors
        self.encoder = inner.encoder
        self.head = inner.decoder.decoder
        cell = inner.decoder.rnn.state_dict()
        hidden = cell["weight_hh"].shape[1]
        self.lstm = torch.nn.LSTM(cell["weight_ih"].shape[1], hidden)
        self.lstm.load_state_dict({"weight_ih_l0": cell["weight_ih"], "weight_hh_l0": cell["weight_hh"],
                                   "bias_ih_l0": cell["bias_ih"], "bias_hh_l0": cell["bias_hh"]})
        self.lstm.eval().requires_grad_(False)
        self.hidden = hidden

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        n = -(-len(wav) // WINDOW_SAMPLES)
        x = np.zeros(_CONTEXT + n * WINDOW_SAMPLES, dtype=np.float32)  # a copy: the caller's may be read-only
        x[_CONTEXT:_CONTEXT + len(wav)] = wav
        x = torch.from_numpy(x)
        # window i is fed with the last 64 samples of window i - 1 in front (zeros before the first)
        frames = x.unfold(0, _CONTEXT + WINDOW_SAMPLES, WINDOW_SAMPLES)  # (n, 576), a view
        state = (torch.zeros(1, self.hidden), torch.zeros(1, self.hidden))
        out = []
        with torch.inference_mode():
            for b in range(0, n, _BLOCK):
                feats = self.encoder(self.extract(frames[b:b + _BLOCK])).squeeze(-1)  # (w, hidden)
                hs, state = self.lstm(feats, state)
                out.append(self.head(hs.unsqueeze(-1)).reshape(len(hs), -1).mean(1))
        return torch.cat(out).numpy().astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


def _probe() -> np.ndarray:
    """2 s of a fixed speech-like signal (a pitched buzz with syllable-rate loudness, over noise)."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * (t > 0.4)
    noise = 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return (0.1 * buzz * envelope + noise).astype(np.float32)


@functools.cache
def _runner():
    with _load_lock:
        silero_vad = _import_silero()
        streaming = _Streaming(silero_vad.load_silero_vad())
        try:
            fused = _Fused(streaming.model)
            probe = _probe()
            diff = float(np.abs(fused(probe) - streaming(probe)).max())
        except Exception as exc:  # the TorchScript model's inner structure is not a public API
            log.warning("silero-vad %s: batched path unavailable (%s: %s); using the per-window API (~40x "
                        "real time)", getattr(silero_vad, "__version__", "?"), type(exc).__name__, exc)
            return streaming
        if diff > _MAX_PROBE_DIFF:
            log.warning("silero-vad %s: batched path differs from the per-window API by %.2g on the probe; "
                        "using the per-window API (~40x real time)", getattr(silero_vad, "__version__", "?"), diff)
            return streaming
        log.info("silero-vad %s loaded (batched path, probe difference %.1g)",
                 getattr(silero_vad, "__version__", "?"), diff)
        return fused


def speech_probabilities(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) mono audio at 16 kHz -> (ceil(S / WINDOW_SAMPLES),) float32 speech probabilities.

    Thread-safe; the first call loads the model (well under a second).
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech_probabilities takes {SAMPLE_RATE} Hz audio, not {sample_rate} Hz: resample it first "
                         "(speechllm.audio.load_audio does)")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"speech_probabilities takes mono audio of shape (S,), not {wav.shape}")
    if len(wav) == 0:
        return np.zeros(0, dtype=np.float32)
    return _runner()(wav)
