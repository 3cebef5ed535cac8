"""Projectors: encoder states (B, T, d_enc) -> audio embeddings in the decoder's space (B, ceil(T/k), d_dec).

Kinds (``ProjectorConfig.kind``):
- ``stack_mlp`` (SLAM-ASR): concatenate k consecutive frames, then a 2-layer MLP.
- ``ctc_embed``: a CTC head over the decoder's vocabulary (+ blank) on every frame; the
  posteriors of k frames are SUMMED (CTC spikes are one frame wide, a mean would halve
  them) and multiplied into the decoder's own embedding table, the missing word mass goes to
  a learned blank vector, and a zero-initialised MLP on the stacked frames adds a residual.
  This puts audio tokens into the decoder's embedding space from the first step, which is
  what lets a small decoder learn to read audio on a CPU budget (see shared/notes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProjectorConfig:
    kind: str = "stack_mlp"
    in_dim: int = 256
    out_dim: int = 256
    stack: int = 2
    hidden_dim: int = 1024
    vocab_size: int | None = None  # ctc_embed: decoder vocabulary; blank id = vocab_size

    def to_dict(self) -> dict:
        return asdict(self)


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) -> (B, ceil(T/k), k*D) with frames past each length zeroed first."""
    B, T, D = x.shape
    keep = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    x = x * keep[..., None].to(x.dtype)
    pad = (-T) % k
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(B, (T + pad) // k, k * D), -(-lengths // k)


class StackMLPProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        self.config = cfg
        self.mlp = nn.Sequential(nn.Linear(cfg.stack * cfg.in_dim, cfg.hidden_dim), nn.GELU(),
                                 nn.Linear(cfg.hidden_dim, cfg.out_dim))

    def forward(self, h, lengths, embed_table=None):
        x, out_lengths = stack_frames(h, lengths, self.config.stack)
        return self.mlp(x), out_lengths, None


class CTCEmbedProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        if not cfg.vocab_size:
            raise ValueError("ctc_embed projector needs vocab_size (the decoder's vocabulary)")
        self.config = cfg
        self.ctc_head = nn.Linear(cfg.in_dim, cfg.vocab_size + 1)
        self.blank = nn.Parameter(torch.zeros(cfg.out_dim))
        self.mlp = nn.Sequential(nn.Linear(cfg.stack * cfg.in_dim, cfg.hidden_dim), nn.GELU(),
                                 nn.Linear(cfg.hidden_dim, cfg.out_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    @property
    def blank_id(self) -> int:
        return self.config.vocab_size

    def forward(self, h, lengths, embed_table):
        """-> (embeds (B, N, d_dec), lengths (B,), ctc_logits (B, T, V+1))."""
        k, V = self.config.stack, self.config.vocab_size
        logits = self.ctc_head(h)
        probs = logits.float().softmax(-1).to(h.dtype)
        stacked_p, out_lengths = stack_frames(probs, lengths, k)
        p = stacked_p.view(*stacked_p.shape[:2], k, V + 1).sum(2)[..., :V]
        words = p @ embed_table[:V].to(h.dtype)
        blank = (1.0 - p.sum(-1, keepdim=True)).clamp(min=0.0) * self.blank
        x, _ = stack_frames(h, lengths, k)
        return words + blank + self.mlp(x), out_lengths, logits


PROJECTORS = {"stack_mlp": StackMLPProjector, "ctc_embed": CTCEmbedProjector}


def build_projector(cfg: ProjectorConfig) -> nn.Module:
    if cfg.kind not in PROJECTORS:
        raise ValueError(f"unknown projector kind {cfg.kind!r}: choose one of {', '.join(PROJECTORS)}")
    return PROJECTORS[cfg.kind](cfg)
