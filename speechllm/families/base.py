"""The family interface every model adapter implements, and the shared prompt assembly.

A ``SpeechLLM`` turns (audio, task) into decoder inputs:

    inputs = model.embed(tasks, wavs=[wav1, wav2])          # DecoderInputs, left padded
    inputs.inputs_embeds  (B, T, D), inputs.attention_mask (B, T), inputs.position_ids (B, T)
    model.lm.generate(inputs_embeds=..., attention_mask=...)   # the causal LM part

With ``targets`` (training), the target text + EOS is appended and ``labels`` (B, T) holds
its ids (-100 elsewhere).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..errors import TaskError
from ..tasks import PromptBook, Task

log = logging.getLogger(__name__)


@dataclass
class DecoderInputs:
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None = None
    prompt_lengths: list[int] = field(default_factory=list)
    aux: dict = field(default_factory=dict)  # e.g. ctc_logits / ctc_lengths for training losses


class SpeechLLM(nn.Module):
    family: ClassVar[str]
    #: module-name prefixes of the projector (fully trained when healing)
    projector_prefixes: ClassVar[tuple[str, ...]]
    #: module-name prefixes of the decoder (LoRA targets are restricted to these)
    decoder_prefixes: ClassVar[tuple[str, ...]]

    def __init__(self, spec: dict, tokenizer):
        super().__init__()
        self.spec = spec
        self.tokenizer = tokenizer
        self.prompts = PromptBook.from_spec(spec)
        self.provenance: dict = {}
        self.source_dir: Path | None = None

    # ---- what each family provides -------------------------------------------------
    @property
    def lm(self) -> nn.Module:
        """The module with ``forward/generate(inputs_embeds=..., attention_mask=...)`` and an LM head."""
        raise NotImplementedError

    def decoder_stack(self) -> nn.Module:
        """The decoder's base model, whose ``.layers`` is the ModuleList of decoder layers."""
        raise NotImplementedError

    def text_config(self):
        return self.lm.config.get_text_config(decoder=True)

    def embed_prompts(self, tasks: list[Task], wavs: list) -> tuple[list[torch.Tensor], dict]:
        """One (T_i, D) prompt embedding per sample (task prompt with the audio spliced in)."""
        raise NotImplementedError

    def save(self, path, provenance: dict | None = None) -> Path:
        raise NotImplementedError

    def saved_decoder(self) -> tuple[str, str]:
        """Where ``save`` puts the decoder: (the sub-dir of the model dir whose config.json describes it, the
        prefix of its layers' weight names there, e.g. ``"model.layers."``). Other modules' layers (an audio
        encoder's) share the dir under other prefixes."""
        raise NotImplementedError

    def text_decoder_dir(self, model_dir: Path, scratch: Path) -> Path:
        """A plain HF causal-LM dir (config, weights, tokenizer) of this model's decoder, for engines
        that run the decoder alone on prompt embeddings (vLLM). ``scratch``: where to write one if
        the model dir holds none."""
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------
    @property
    def max_audio_seconds(self) -> float:
        return float(self.spec.get("max_audio_seconds", 30.0))

    @property
    def max_new_tokens(self) -> int:
        return int(self.spec.get("max_new_tokens", 128))

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def num_decoder_layers(self) -> int:
        return len(self.decoder_stack().layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def resolve_tasks(self, tasks) -> list[Task]:
        out = []
        for t in tasks:
            if not isinstance(t, Task):
                raise TaskError(f"expected a Task, got {t!r}")
            out.append(self.prompts.resolve(t.name, t.target_lang))
        return out

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def embed(self, tasks: list[Task], wavs: list, targets: list[str] | None = None) -> DecoderInputs:
        tasks = self.resolve_tasks(tasks)
        if len(tasks) != len(wavs):
            raise ValueError(f"{len(tasks)} tasks for {len(wavs)} clips")
        prompts, aux = self.embed_prompts(tasks, wavs)
        return self.assemble(prompts, targets, aux)

    def assemble(self, prompts: list[torch.Tensor], targets: list[str] | None = None,
                 aux: dict | None = None) -> DecoderInputs:
        """Append targets (+EOS) and left-pad the (T_i, D) prompt embeddings into one batch."""
        emb = self.lm.get_input_embeddings()
        seqs, labels = [], []
        for i, p in enumerate(prompts):
            if targets is not None:
                ids = self.text_ids(targets[i]) + [self.eos_token_id]
                t = torch.tensor(ids, device=p.device)
                seqs.append(torch.cat([p, emb(t).to(p.dtype)]))
                labels.append(torch.cat([torch.full((p.shape[0],), -100, device=p.device), t]))
            else:
                seqs.append(p)
        B, T, D = len(seqs), max(s.shape[0] for s in seqs), seqs[0].shape[1]
        x = seqs[0].new_zeros(B, T, D)
        mask = torch.zeros(B, T, dtype=torch.long, device=x.device)
        lab = torch.full((B, T), -100, dtype=torch.long, device=x.device) if targets is not None else None
        for i, s in enumerate(seqs):
            x[i, T - s.shape[0]:] = s
            mask[i, T - s.shape[0]:] = 1
            if lab is not None:
                lab[i, T - s.shape[0]:] = labels[i]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return DecoderInputs(x, mask, pos, lab, [p.shape[0] for p in prompts], aux or {})

    def lora_target_modules(self, names=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")) -> list[str]:
        """Full module names of the decoder's linear projections (never the encoder's)."""
        out = []
        for name, mod in self.named_modules():
            if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in names \
                    and name.startswith(self.decoder_prefixes) and ".layers." in name:
                out.append(name)
        return out

    def describe(self) -> dict:
        """Summary for /v1/models, reports and provenance."""
        return {
            "family": self.family,
            "decoder_layers": self.num_decoder_layers,
            "parameters": self.num_parameters(),
            "weight_bytes": self.weight_bytes(),
            "tasks": self.prompts.supported(),
        }
