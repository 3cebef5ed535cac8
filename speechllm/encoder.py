"""Whisper-style speech encoder: conv front end (downsampling) + pre-LN transformer, with padding masks.

    enc = SpeechEncoder(EncoderConfig(n_mels=80, d_model=256, layers=4))
    h, lengths = enc(features, feature_lengths)   # (B, n_mels, T) -> (B, T / downsample, d_model)

Unlike HF's WhisperEncoder it does not require every clip padded to the full window: the
padding mask keeps each clip's output independent of the batch it runs in.
Saved as ``encoder/config.json`` + ``encoder/model.safetensors``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_TYPE = "slimspeech_whisper_encoder"


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
