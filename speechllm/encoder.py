"""Speech encoders of the ``slam`` family, one per kind (``speechllm.json`` ``"encoder": {"kind": ...}``).

Kind ``slimspeech`` (the default: a spec without ``encoder`` means it): our Whisper-style encoder, a conv
front end (downsampling) + pre-LN transformer, with padding masks.

    enc = SpeechEncoder(EncoderConfig(n_mels=80, d_model=256, layers=4))
    h, lengths = enc(features, feature_lengths)   # (B, n_mels, T) -> (B, T / downsample, d_model)

Unlike HF's WhisperEncoder it does not require every clip padded to the full window: the
padding mask keeps each clip's output independent of the batch it runs in.
Saved as ``encoder/config.json`` + ``encoder/model.safetensors``.

Kind ``hf_whisper``: a Hugging Face Whisper encoder (``transformers``' WhisperEncoder) and its
WhisperFeatureExtractor, as SLAM-LLM runs Whisper (github.com/X-LANCE/SLAM-LLM,
src/slam_llm/datasets/speech_dataset.py: ``whisper.pad_or_trim`` then log-mel, 80 bins for
large-v1/v2, 128 for v3). Whisper's encoder only takes the full 30 s window (3000 mel frames:
WhisperEncoder checks ``max_source_positions * 2``), so every clip is padded to it alone (the output
never depends on the batch) and keeps its real length: a clip of S samples has ceil(S/160) mel frames
and ceil(S/320) encoder frames (conv2 has stride 2), and only those reach the projector.

    enc = load_encoder(Path("model/encoder"), "hf_whisper")
    feats, lengths = enc.features([wav1, wav2])    # (B, n_mels, 3000) float32, (B,) real mel frames
    h, lengths = enc(feats, lengths)               # (B, T', d_model), (B,) ceil(S/320); T' = max length

Saved as ``encoder/config.json`` (model_type whisper) + ``model.safetensors`` + ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import ModelDirError

MODEL_TYPE = "slimspeech_whisper_encoder"
#: encoder kinds of the slam family; a spec without ``encoder`` is the first
ENCODER_KINDS = ("slimspeech", "hf_whisper")
HF_WHISPER = "hf_whisper"


def encoder_kind(spec: dict) -> str:
    """The encoder kind a model dir's spec names (absent: ``slimspeech``, what every dir before it was)."""
    kind = (spec.get("encoder") or {}).get("kind", ENCODER_KINDS[0])
    if kind not in ENCODER_KINDS:
        raise ModelDirError(f"speechllm.json names encoder kind {kind!r}; this slimspeech knows "
                            f"{', '.join(ENCODER_KINDS)}: upgrade slimspeech or fix the spec")
    return kind


@dataclass
class EncoderConfig:
    n_mels: int = 80
    d_model: int = 256
    layers: int = 4
    heads: int = 4
    ffn_dim: int = 1024
    downsample: int = 4  # a power of 2: one stride-2 conv per factor of 2
    max_source_positions: int = 400  # encoder frames after downsampling (the audio window)

    @property
    def frames_per_second(self) -> float:
        return 100.0 / self.downsample


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's fixed positional embedding, (length, channels)."""
    half = channels // 2
    inv = torch.exp(-math.log(10000) / (half - 1) * torch.arange(half, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


class EncoderBlock(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.heads = cfg.heads
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class SpeechEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.downsample < 1 or cfg.downsample & (cfg.downsample - 1):
            raise ValueError(f"encoder downsample must be a power of 2, got {cfg.downsample}")
        self.config = cfg
        self.conv_in = nn.Conv1d(cfg.n_mels, cfg.d_model, 3, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.d_model, cfg.d_model, 3, stride=2, padding=1)
            for _ in range(int(math.log2(cfg.downsample))))
        self.register_buffer("positions", sinusoids(cfg.max_source_positions, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    @staticmethod
    def _mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
        return x * keep[:, None, :].to(x.dtype)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) features + (B,) frame counts -> (B, T', d_model) states + (B,) lengths."""
        lengths = lengths.to(features.device)
        x = self._mask(F.gelu(self.conv_in(self._mask(features, lengths))), lengths)
        for conv in self.convs:
            lengths = (lengths - 1) // 2 + 1
            x = self._mask(F.gelu(conv(x)), lengths)
        x = x.transpose(1, 2)
        T = x.shape[1]
        if T > self.config.max_source_positions:
            raise ValueError(f"audio of {T} encoder frames exceeds the window of {self.config.max_source_positions}")
        x = x + self.positions[:T].to(x.dtype)
        keep = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x), lengths

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"model_type": MODEL_TYPE, **asdict(self.config)}, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))

    @classmethod
    def load(cls, path: Path) -> "SpeechEncoder":
        cfg = json.loads((path / "config.json").read_text())
        cfg.pop("model_type", None)
        enc = cls(EncoderConfig(**cfg))
        enc.load_state_dict(load_file(str(path / "model.safetensors")))
        return enc


class HFWhisperEncoder(nn.Module):
    """transformers' WhisperEncoder + WhisperFeatureExtractor behind SpeechEncoder's interface.

    ``features(wavs)`` -> (B, n_mels, 3000) float32 + (B,) real mel frames; ``forward`` -> (B, T', d_model)
    states + (B,) real encoder frames, T' = the longest real length in the batch (frames after it are
    the padding's and are never used, so the projector does not run on them).
    """

    kind = HF_WHISPER

    def __init__(self, encoder: nn.Module, feature_extractor):
        super().__init__()
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        cfg = encoder.config
        # Whisper's two convs: conv1 stride 1, conv2 stride 2 (modeling_whisper.WhisperEncoder)
        self.window_frames = cfg.max_source_positions * 2
        if feature_extractor.nb_max_frames != self.window_frames:
            raise ModelDirError(f"the Whisper encoder takes {self.window_frames} mel frames but its "
                                f"preprocessor_config.json pads to {feature_extractor.nb_max_frames}: "
                                "they come from different checkpoints")
        if feature_extractor.feature_size != cfg.num_mel_bins:
            raise ModelDirError(f"the Whisper encoder takes {cfg.num_mel_bins} mel bins but its "
                                f"preprocessor_config.json makes {feature_extractor.feature_size}: "
                                "they come from different checkpoints")

    @property
    def d_model(self) -> int:
        return self.encoder.config.d_model

    @property
    def window_seconds(self) -> float:
        return float(self.feature_extractor.chunk_length)

    def features(self, wavs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_i,) 16 kHz clips -> (B, n_mels, 3000) log-mel padded to the window, (B,) ceil(S_i/160)."""
        fe = self.feature_extractor
        clips = [np.asarray(w, dtype=np.float32) for w in wavs]
        for w in clips:
            if w.size > fe.n_samples:  # the feature extractor would cut it silently
                raise ValueError(f"audio of {w.size / fe.sampling_rate:.1f} s exceeds the Whisper window of "
                                 f"{fe.chunk_length} s")
        # each clip alone, so its padding (and Whisper's per-clip max-based floor over the padded window,
        # which SLAM-LLM's whisper.pad_or_trim + log_mel_spectrogram also sees) never depends on the batch
        feats, lengths = [], []
        for w in clips:
            out = fe(w, sampling_rate=fe.sampling_rate, return_tensors="pt", return_attention_mask=True,
                     padding="max_length")
            feats.append(out["input_features"][0])
            lengths.append(int(out["attention_mask"][0].sum()))  # sample mask taken every hop: ceil(S/160)
        return torch.stack(feats).float(), torch.tensor(lengths, dtype=torch.long)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, 3000) + (B,) mel frames -> (B, T', d_model) + (B,) encoder frames ceil(mel / 2)."""
        if features.shape[-1] != self.window_frames:
            raise ValueError(f"a Whisper encoder takes exactly {self.window_frames} mel frames, got "
                             f"{features.shape[-1]}: use its features()")
        h = self.encoder(input_features=features).last_hidden_state
        out_lengths = (lengths.to(h.device) + 1) // 2  # conv2: kernel 3, stride 2, padding 1
        return h[:, : int(out_lengths.max())], out_lengths

    def save(self, path: Path) -> None:
        """The encoder alone (the Whisper decoder is not part of a SpeechLLM) + its feature extractor."""
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path)
        self.feature_extractor.save_pretrained(path)

    @classmethod
    def load(cls, path: Path, dtype=None) -> HFWhisperEncoder:
        """An ``encoder/`` dir holding a Whisper encoder saved alone (architectures WhisperEncoder) or a
        whole Whisper checkpoint (WhisperForConditionalGeneration / WhisperModel: its encoder is kept)."""
        from transformers import WhisperFeatureExtractor, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        path = Path(path)
        for name in ("config.json", "preprocessor_config.json"):
            if not (path / name).is_file():
                raise ModelDirError(f"{path / name} is missing: an hf_whisper encoder dir needs config.json, "
                                    "the weights and preprocessor_config.json")
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "whisper":
            raise ModelDirError(f"{path / 'config.json'} has model_type {cfg.get('model_type')!r}, not whisper: "
                                "the spec's encoder kind hf_whisper needs a Whisper encoder")
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if "WhisperEncoder" in (cfg.get("architectures") or []):
            encoder = WhisperEncoder.from_pretrained(path, **kwargs)
        else:
            encoder = WhisperModel.from_pretrained(path, **kwargs).get_encoder()
        return cls(encoder, WhisperFeatureExtractor.from_pretrained(path))


def load_encoder(path: Path, kind: str, dtype=None) -> nn.Module:
    """The ``encoder/`` dir of a slam model dir as its kind's module (see the module docstring)."""
    path = Path(path)
    if kind == HF_WHISPER:
        return HFWhisperEncoder.load(path, dtype)
    cfg_path = path / "config.json"
    if cfg_path.is_file() and json.loads(cfg_path.read_text()).get("model_type") == "whisper":
        raise ModelDirError(f"{path} holds a Hugging Face Whisper encoder but speechllm.json does not say so: "
                            'add "encoder": {"kind": "hf_whisper"} to it')
    return SpeechEncoder.load(path)
