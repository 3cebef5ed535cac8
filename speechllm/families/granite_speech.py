"""Family ``granite_speech``: GraniteSpeechForConditionalGeneration (granite-speech-3.3-2b / -8b), with the log-mel
features computed here instead of by GraniteSpeechFeatureExtractor.

Model dir: ``speechllm.json`` + ``hf/`` (config with ``has_lora_adapter`` false: the audio LoRA is merged into the
language model at import; weights under the published names ``encoder.*``, ``projector.*``,
``language_model.model.*``; the tokenizer with its chat template; ``preprocessor_config.json`` and
``processor_config.json`` as published, so transformers' GraniteSpeechProcessor reads the dir where torchaudio
is installed) + ``provenance.json``.

Why our own features: transformers' GraniteSpeechFeatureExtractor builds ``torchaudio.transforms.MelSpectrogram``
and torchaudio has no build for torch 2.13 (the newest, 2.11, pins its own torch). ``GraniteLogMel`` computes the
same thing with ``torch.stft`` (tests/speechllm/test_import_hf.py checks it against a NumPy reference written from
the published settings): for a clip of S samples at 16 kHz

    power   |STFT|^2: n_fft 512, hop 160, a periodic Hann window of 400 samples centred in the 512, the clip
            reflect-padded by 256 at both ends (centre=True): S // 160 + 1 frames x 257 bins
    mel     x the triangular HTK-scale filters (mel = 2595 log10(1 + f / 700)), 80 bands from 0 to 8 kHz, unnormalised
    log     log10(max(mel, 1e-10)); floored 8 below the clip's maximum; / 4 + 1
    stack   an odd last frame dropped, frames paired: (T // 2, 160), the encoder's input_dim

and the clip gives ceil(((S // 160 + 1) // 2) / 15) x 3 audio tokens (the Q-Former turns each window of 15 encoder
frames into 15 / 5 queries). Each clip is encoded alone (``encode_each_clip``): the conformer has no padding mask,
so in a padded batch a short clip's frames would attend to the padding (and transformers' own extractor computes
a batch's features after padding it, so its batched features differ at each short clip's end); one by one, the
features and the audio embeddings are those of the clip alone. The decoder still runs batched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..modeldir import write_json
from .hf_audio import HFAudioSpeechLLM, HFAudioTable

GRANITE_SPEECH = HFAudioTable(
    family="granite_speech",
    model_class="GraniteSpeechForConditionalGeneration",
    language_model="model.language_model",
    lm_head="lm_head",
    encoder="model.encoder",
    projector=("model.projector",),
    # ibm-granite/granite-speech-3.3-*'s names (transformers' conversion_mapping.py "granite_speech" entry)
    published=(("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.encoder.", "encoder."), ("model.projector.", "projector.")),
    model_inputs=("input_ids", "attention_mask", "input_features", "input_features_mask"),
    encode_each_clip=True,
)
AUDIO_TOKEN = "<|audio|>"


def _hz_to_mel_htk(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def htk_mel_filters(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None):
    """(n_fft // 2 + 1, n_mels) triangular filters on the HTK mel scale, peak 1, no area normalisation (the
    filters torchaudio's MelSpectrogram uses by default: mel_scale "htk", norm None)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz_htk(np.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2))
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rise = (freqs[:, None] - lower) / (center - lower)
    fall = (upper - freqs[:, None]) / (upper - center)
    return torch.from_numpy(np.maximum(0.0, np.minimum(rise, fall)).astype(np.float32))


class GraniteLogMel:
    """Granite-Speech's encoder input from a waveform (the module docstring has the math).

        fe = GraniteLogMel.from_pretrained("hf/")          # preprocessor_config.json
        feats = fe.features(wav)                            # (T // 2, 2 * n_mels) float32
        fe.num_audio_tokens(len(wav))                       # audio tokens the Q-Former makes of it
    """

    feature_extractor_type = "GraniteSpeechFeatureExtractor"

    def __init__(self, sampling_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                 n_mels: int = 80, projector_window_size: int = 15, projector_downsample_rate: int = 5):
        self.sampling_rate, self.n_fft, self.win_length, self.hop_length = sampling_rate, n_fft, win_length, hop_length
        self.n_mels = n_mels
        self.projector_window_size, self.projector_downsample_rate = projector_window_size, projector_downsample_rate
        # torch.stft centres a shorter window inside n_fft, as torchaudio's Spectrogram does
        self.window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        self.filters = htk_mel_filters(n_mels, n_fft, sampling_rate).double()

    @classmethod
    def from_dict(cls, d: dict) -> "GraniteLogMel":
        """From a preprocessor_config.json: the published nesting (``melspec_kwargs``) or transformers 5's flat one."""
        mel = {**d, **(d.get("melspec_kwargs") or {})}
        return cls(sampling_rate=int(mel.get("sample_rate", d.get("sampling_rate", 16000))),
                   n_fft=int(mel.get("n_fft", 512)), win_length=int(mel.get("win_length", 400)),
                   hop_length=int(mel.get("hop_length", 160)), n_mels=int(mel.get("n_mels", 80)),
                   projector_window_size=int(d.get("projector_window_size", 15)),
                   projector_downsample_rate=int(d.get("projector_downsample_rate", 5)))

    @classmethod
    def from_pretrained(cls, path) -> "GraniteLogMel":
        return cls.from_dict(json.loads((Path(path) / "preprocessor_config.json").read_text()))

    def to_dict(self) -> dict:
        return {"feature_extractor_type": self.feature_extractor_type, "sampling_rate": self.sampling_rate,
                "melspec_kwargs": {"sample_rate": self.sampling_rate, "n_fft": self.n_fft,
                                   "win_length": self.win_length, "hop_length": self.hop_length, "n_mels": self.n_mels},
                "projector_window_size": self.projector_window_size,
                "projector_downsample_rate": self.projector_downsample_rate,
                "processor_class": "GraniteSpeechProcessor"}

    def features(self, wav) -> torch.Tensor:
        """(S,) waveform -> (T // 2, 2 * n_mels), T = S // hop + 1 (computed in float64, returned float32)."""
        x = torch.as_tensor(np.asarray(wav), dtype=torch.float64)
        if x.numel() <= self.n_fft // 2:
            # reflect padding needs more samples than it pads; silence after a clip this short is what it would hear
            x = torch.nn.functional.pad(x, (0, self.n_fft // 2 + 1 - x.numel()))
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        mel = (self.filters.T @ spec.abs() ** 2).T  # (T, n_mels)
        logmel = torch.log10(mel.clamp(min=1e-10))
        logmel = torch.maximum(logmel, logmel.max() - 8.0) / 4 + 1
        if logmel.shape[0] % 2:
            logmel = logmel[:-1]
        return logmel.reshape(-1, 2 * self.n_mels).float()

    def num_audio_tokens(self, n_samples: int) -> int:
        frames = max(n_samples, self.n_fft // 2 + 1) // self.hop_length + 1
        windows = math.ceil((frames // 2) / self.projector_window_size)
        return windows * (self.projector_window_size // self.projector_downsample_rate)


class GraniteSpeechInputs:
    """The tokenizer + GraniteLogMel, standing in for transformers' GraniteSpeechProcessor (which builds its
    torchaudio extractor on load). Saves the published processor files."""

    def __init__(self, tokenizer, feature_extractor: GraniteLogMel, audio_token: str = AUDIO_TOKEN):
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.audio_token = audio_token

    @classmethod
    def from_pretrained(cls, path) -> "GraniteSpeechInputs":
        from transformers import AutoTokenizer

        path = Path(path)
        proc = path / "processor_config.json"
        audio_token = json.loads(proc.read_text()).get("audio_token", AUDIO_TOKEN) if proc.is_file() else AUDIO_TOKEN
        return cls(AutoTokenizer.from_pretrained(path), GraniteLogMel.from_pretrained(path), audio_token)

    def save_pretrained(self, path) -> None:
        path = Path(path)
        self.tokenizer.save_pretrained(path)
        write_json(path / "preprocessor_config.json", self.feature_extractor.to_dict())
        write_json(path / "processor_config.json", {"audio_token": self.audio_token,
                                                    "processor_class": "GraniteSpeechProcessor"})


def _divide(scale: float):
    def hook(_module, _args, output):
        return output / scale
    return hook


class GraniteSpeechSpeechLLM(HFAudioSpeechLLM):
    table = GRANITE_SPEECH

    def __init__(self, spec: dict, processor, model):
        super().__init__(spec, processor, model)
        # Granite's logits are lm_head(h) / logits_scaling (GraniteForCausalLM, vLLM's Granite, and transformers 4's
        # GraniteSpeech, whose language model was a GraniteForCausalLM); transformers 5.19's GraniteSpeech applies
        # its own lm_head without the division: greedy tokens are the same, log-probs and training losses are not
        scale = float(getattr(self.text_config(), "logits_scaling", 1.0) or 1.0)
        if scale != 1.0 and not self._applies_logits_scaling():
            model.lm_head.register_forward_hook(_divide(scale))

    @torch.no_grad()
    def _applies_logits_scaling(self) -> bool:
        """Whether the HF model's forward divides by logits_scaling itself (one token through it, and by hand)."""
        x = self.model.get_input_embeddings().weight[:1][None]
        full = self.model(inputs_embeds=x).logits
        plain = self.model.lm_head(self.decoder_stack()(inputs_embeds=x).last_hidden_state)
        return not torch.allclose(full, plain)

    @classmethod
    def load_processor(cls, hf_dir: Path):
        return GraniteSpeechInputs.from_pretrained(hf_dir)

    def model_inputs(self, tasks, wavs) -> dict:
        """One clip (encode_each_clip): input_ids (1, T) with <|audio|> x n, input_features (1, F, 160),
        input_features_mask (1, n)."""
        (task,), (wav,) = tasks, wavs
        fe = self.processor.feature_extractor
        n = fe.num_audio_tokens(len(wav))
        before, after = self.prompts.render(task)
        ids = self.text_ids(before) + [self.audio_token_id] * n + self.text_ids(after)
        feats = fe.features(wav)
        return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                "input_features": feats[None], "input_features_mask": torch.ones(1, n, dtype=torch.bool)}

    @property
    def audio_token_id(self) -> int:
        return self.model.config.audio_token_index
