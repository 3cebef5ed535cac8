"""Projectors: encoder states (B, T, d_enc) -> audio embeddings in the decoder's space (B, ceil(T/k), d_dec).

Kinds (``ProjectorConfig.kind``):
- ``stack_mlp`` (SLAM-ASR): concatenate k consecutive frames, then a 2-layer MLP. ``activation``
  ``relu`` is SLAM-LLM's linear projector (``EncoderProjectorConcat``: linear1 -> ReLU -> linear2
  over k concatenated frames, github.com/X-LANCE/SLAM-LLM src/slam_llm/models/projector.py);
  ``speechllm.importers.slam_parts`` maps its checkpoint names onto ``mlp.0`` / ``mlp.2``.
- ``ctc_embed``: a CTC head over the decoder's vocabulary (+ blank) on every frame; the
  posteriors of k frames are SUMMED (CTC spikes are one frame wide, a mean would halve
  them) and multiplied into the decoder's own embedding table, the missing word mass goes to
  a learned blank vector, and a zero-initialised MLP on the stacked frames adds a residual.
  This puts audio tokens into the decoder's embedding space from the first step, which is
  what lets a small decoder learn to read audio on a CPU budget (README, "The built-in benchmark and the demo model").
- ``ctc_compress``: the same CTC head and embedding product, after CTC compression (Gaido et
  al. 2021, "CTC-based compression for direct speech translation"; Wu et al. 2023, CTC prompts
  for decoder-only ASR): blank frames are dropped and each run of frames with the same greedy
  label becomes ONE audio token, the run's word posteriors (renormalised without the blank)
  times the embedding table plus a zero-initialised MLP on the run's mean encoder state. The
  decoder gets about one audio token per text token in order, so transcription is an aligned
  copy and translation is text translation from soft token embeddings; sequences are ~3x
  shorter than ``ctc_embed``'s. The number of audio tokens depends on the audio (a clip
  with no non-blank frame keeps its most word-like frame, so no prompt is empty).
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
    stack: int = 2  # frames per audio token (ctc_compress: 1, its tokens are CTC runs)
    hidden_dim: int = 1024
    vocab_size: int | None = None  # ctc_embed: decoder vocabulary; blank id = vocab_size
    activation: str = "gelu"  # stack_mlp's MLP: gelu (ours) or relu (SLAM-LLM's linear projector)

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


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class StackMLPProjector(nn.Module):
    """(B, T, in_dim) -> (B, ceil(T/k), out_dim): k frames concatenated in time order ([f0 | f1 | ...],
    (B, T/k, k*in_dim)), then Linear -> activation -> Linear (``mlp.0`` / ``mlp.2``)."""

    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"unknown stack_mlp activation {cfg.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        self.config = cfg
        self.mlp = nn.Sequential(nn.Linear(cfg.stack * cfg.in_dim, cfg.hidden_dim), ACTIVATIONS[cfg.activation](),
                                 nn.Linear(cfg.hidden_dim, cfg.out_dim))

    def forward(self, h, lengths, embed_table=None):
        x, out_lengths = stack_frames(h, lengths, self.config.stack)
        return self.mlp(x), out_lengths, None


class _CTCProjector(nn.Module):
    """A CTC head over the decoder's vocabulary (+ blank) and a zero-initialised MLP residual on
    ``mlp_frames`` stacked encoder frames: what ``ctc_embed`` and ``ctc_compress`` share."""

    def __init__(self, cfg: ProjectorConfig, mlp_frames: int):
        super().__init__()
        if not cfg.vocab_size:
            raise ValueError(f"{cfg.kind} projector needs vocab_size (the decoder's vocabulary)")
        self.config = cfg
        self.ctc_head = nn.Linear(cfg.in_dim, cfg.vocab_size + 1)
        self.mlp = nn.Sequential(nn.Linear(mlp_frames * cfg.in_dim, cfg.hidden_dim), nn.GELU(),
                                 nn.Linear(cfg.hidden_dim, cfg.out_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    @property
    def blank_id(self) -> int:
        return self.config.vocab_size


class CTCEmbedProjector(_CTCProjector):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__(cfg, cfg.stack)
        self.blank = nn.Parameter(torch.zeros(cfg.out_dim))

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


class CTCCompressProjector(_CTCProjector):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__(cfg, 1)

    @staticmethod
    def segments(logits: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy CTC runs: -> (segment index per frame (B, T), -1 for dropped frames; segments per clip (B,))."""
        B, T, V1 = logits.shape
        best = logits.argmax(-1)
        valid = torch.arange(T, device=logits.device)[None, :] < lengths[:, None]
        keep = (best != V1 - 1) & valid
        empty = ~keep.any(1)
        if empty.any():  # all blank: keep the frame with the least blank probability
            blank_logp = logits.float().log_softmax(-1)[..., -1].masked_fill(~valid, float("inf"))
            rows = empty.nonzero(as_tuple=True)[0]
            keep[rows, blank_logp[rows].argmin(1)] = True
        prev_keep = F.pad(keep[:, :-1], (1, 0), value=False)
        prev_best = F.pad(best[:, :-1], (1, 0), value=-1)
        start = keep & (~prev_keep | (best != prev_best))
        seg = start.long().cumsum(1) - 1
        return seg.masked_fill(~keep, -1), start.sum(1)

    def forward(self, h, lengths, embed_table):
        """(B, T, d_enc) -> (embeds (B, N, d_dec), lengths (B,), ctc_logits (B, T, V+1)); N = most runs in a clip."""
        V = self.config.vocab_size
        logits = self.ctc_head(h)
        seg, n = self.segments(logits.detach(), lengths)
        B, T, _ = h.shape
        N = int(n.max())
        frames = seg.ge(0).view(-1).nonzero(as_tuple=True)[0]
        slot = (torch.arange(B, device=h.device)[:, None] * N + seg).view(-1)[frames]
        # the softmax of the kept frames only (most frames are blank or padding): the same values per row
        probs = logits.reshape(B * T, V + 1)[frames].float().softmax(-1)[:, :V]
        words = probs.new_zeros(B * N, V).index_add_(0, slot, probs)
        words = words / words.sum(-1, keepdim=True).clamp(min=1e-6)
        states = h.new_zeros(B * N, h.shape[-1]).index_add_(0, slot, h.reshape(B * T, -1)[frames])
        count = h.new_zeros(B * N).index_add_(0, slot, torch.ones_like(slot, dtype=h.dtype))
        states = states / count.clamp(min=1)[:, None]
        emb = words.to(h.dtype) @ embed_table[:V].to(h.dtype) + self.mlp(states)
        # slots past a clip's last run are zero (they are cut off by the lengths)
        filled = (torch.arange(N, device=h.device)[None, :] < n[:, None]).view(-1, 1)
        return (emb * filled.to(emb.dtype)).view(B, N, -1), n, logits


PROJECTORS = {"stack_mlp": StackMLPProjector, "ctc_embed": CTCEmbedProjector, "ctc_compress": CTCCompressProjector}


def build_projector(cfg: ProjectorConfig) -> nn.Module:
    if cfg.kind not in PROJECTORS:
        raise ValueError(f"unknown projector kind {cfg.kind!r}: choose one of {', '.join(PROJECTORS)}")
    return PROJECTORS[cfg.kind](cfg)
