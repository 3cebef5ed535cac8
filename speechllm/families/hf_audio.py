"""One adapter for Hugging Face ``*ForConditionalGeneration`` speech LLMs whose language model is a
standard causal LM: a family is an ``HFAudioTable`` (the model class, where its parts live, its
published weight names) plus, where its processor needs it, one method that builds the model's inputs.

    class Qwen2AudioSpeechLLM(HFAudioSpeechLLM):          # speechllm/families/qwen2_audio.py
        table = HFAudioTable(family="qwen2_audio", model_class="Qwen2AudioForConditionalGeneration",
                             language_model="model.language_model", encoder="model.audio_tower",
                             projector=("model.multi_modal_projector",), ...)

    model = load_model("models/qwen2-audio")                # any family, speechllm.modeldir
    inputs = model.embed([Task("transcribe")], [wav])      # (B, T, D) left-padded prompt embeddings

Model dir: ``speechllm.json`` + ``hf/`` (the HF model dir with its processor, weights under the names the
published checkpoints use: ``HFAudioTable.published``) + ``provenance.json``.

How the prompt embeddings are made without copying any HF merge code: the family's processor turns
(prompt text with the audio placeholder, waveform) into ``input_ids`` (the placeholder expanded to one
token per audio frame), ``attention_mask`` and the audio features; the HF model's own ``forward``
encodes the audio, projects it and scatters it into the token embeddings, then calls its language
model. A forward pre-hook on that language model sees the merged ``inputs_embeds`` (B, T, D) and
raises, which stops the forward right there (the decoder layers never run). Padding rows are dropped
with the attention mask, so each clip gives its own (T_i, D) prompt; ``SpeechLLM.assemble`` left-pads
them again, and generation, layer surgery, analysis and healing only ever see the language model.

``HFAudioTable.encode_each_clip``: run the processor and the audio encoder one clip at a time, for
encoders with no padding mask (Granite-Speech's conformer: in a batch, a short clip's frames would
attend to the zeros padding it), so that a batch gives the same embeddings as its clips one by one.
The decoder still runs batched.

Optional ``speechllm.json`` fields read here: ``eos_token`` (the token that ends an answer, when it is
not the tokenizer's EOS: ``<|im_end|>`` for chat-template prompts).
"""

from __future__ import annotations

import copy
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..modeldir import FORMAT_VERSION, PROVENANCE_FILE, SPEC_FILE, atomic_dir, read_provenance, write_json
from .base import SpeechLLM

#: the sub-dir of a model dir holding the HF model dir
HF_DIR = "hf"
#: published checkpoints are sharded at about this size (model-0000i-of-0000n.safetensors + index)
MAX_SHARD_SIZE = "5GB"


@dataclass(frozen=True)
class HFAudioTable:
    """What one HF speech-LLM family is. Paths are attribute paths inside the HF model (in memory).

    ``published``: (in-memory state-dict prefix, published checkpoint prefix) pairs, applied on save so that
    an exported ``hf/`` has the key names of the published checkpoints (transformers 5 renames them on
    load; its own ``save_pretrained`` does not always rename them back, see ``published_state_dict``).
    ``model_inputs``: the processor outputs the HF model's ``forward`` takes.
    """

    family: str
    model_class: str
    language_model: str
    lm_head: str
    encoder: str
    projector: tuple[str, ...]
    published: tuple[tuple[str, str], ...]
    model_inputs: tuple[str, ...]
    encode_each_clip: bool = False

    def hf_class(self):
        return getattr(importlib.import_module("transformers"), self.model_class)


class _Captured(Exception):
    def __init__(self, embeds):
        self.embeds = embeds


def published_state_dict(model: nn.Module, table: HFAudioTable) -> dict[str, torch.Tensor]:
    """``model``'s weights under the published names, tied weights once (the first name in state-dict order).

    Why not ``save_pretrained``'s own renaming: in transformers 5.19, for a model built from its config (a
    builder's, or one loaded from a dir written that way), it reverts both the family's mapping and
    the inner model's (``conversion_mapping.py``: ``qwen2_audio`` and ``Qwen2AudioModel``, which Voxtral
    reuses), so ``model.language_model.layers.0...`` is written as ``language_model.model.model.layers.0...``,
    a name no published checkpoint, vLLM or older transformers reads.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for name, tensor in model.state_dict().items():
        # tied weights (Granite's lm_head = embed_tokens) are one storage: safetensors refuses aliases
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and storage in seen:
            continue
        seen.add(storage)
        for ours, theirs in table.published:
            if name.startswith(ours):
                out[theirs + name[len(ours):]] = tensor
                break
        else:
            raise RuntimeError(f"{table.model_class} has a weight {name!r} under none of the known prefixes "
                               f"{[p for p, _ in table.published]}: this transformers version lays the model out "
                               "differently; update HFAudioTable.published")
    return out


class HFAudioSpeechLLM(SpeechLLM):
    """A Hugging Face speech LLM of the family in ``table`` (subclasses set it)."""

    table: ClassVar[HFAudioTable]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        t = cls.__dict__.get("table")
        if t is not None:
            # the HF model is held as self.model, so its module names start with "model."
            cls.family = t.family
            cls.projector_prefixes = tuple(f"model.{p}" for p in t.projector)
            cls.decoder_prefixes = (f"model.{t.language_model}",)

    def __init__(self, spec: dict, processor, model):
        from transformers import GenerationConfig

        super().__init__(spec, processor.tokenizer)
        self.processor = processor
        self.model = model
        # HF generate() fills every field our greedy GenerationConfig leaves unset from model.generation_config:
        # a published one's sampling settings (Qwen2-Audio's repetition_penalty 1.1, top_k, ...) would change
        # greedy decoding, and the vLLM engine would not apply them. It is kept to be saved as it came.
        self.hub_generation_config = model.generation_config
        model.generation_config = GenerationConfig()

    # ---- where the parts are ---------------------------------------------------------------
    def _module(self, path: str) -> nn.Module:
        return functools.reduce(getattr, path.split("."), self.model)

    @property
    def lm(self):
        return self.model

    def decoder_stack(self):
        return self._module(self.table.language_model)

    def text_config(self):
        return self.model.config.get_text_config(decoder=True)

    @property
    def eos_token_id(self) -> int:
        token = self.spec.get("eos_token")
        if token is None:
            return self.tokenizer.eos_token_id
        return self.tokenizer.convert_tokens_to_ids(token)

    @property
    def audio_token(self) -> str:
        return self.processor.audio_token

    # ---- prompts ---------------------------------------------------------------------------
    def prompt_text(self, task) -> str:
        """The task's template with the processor's audio placeholder where ``{audio}`` is."""
        before, after = self.prompts.render(task)
        return before + self.audio_token + after

    def model_inputs(self, tasks, wavs) -> dict:
        """The HF model's ``forward`` inputs for (task, waveform) pairs: input_ids (B, T) with the audio
        placeholder expanded, attention_mask (B, T), the audio features. Families whose processor does
        not take (text, audio) override this."""
        proc = self.processor(text=[self.prompt_text(t) for t in tasks],
                              audio=[np.asarray(w, dtype=np.float32) for w in wavs],
                              sampling_rate=self.processor.feature_extractor.sampling_rate,
                              return_tensors="pt", padding=True)
        return {k: proc[k] for k in self.table.model_inputs}

    def _merged_embeddings(self, inputs: dict) -> torch.Tensor:
        """(B, T, D): the language model's input embeddings as the HF model's own forward builds them."""
        def grab(_module, _args, kwargs):
            raise _Captured(kwargs["inputs_embeds"])

        moved = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                 for k, v in inputs.items()}
        hook = self.decoder_stack().register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self._module(self.table.language_model.rsplit(".", 1)[0])(**moved)
            raise RuntimeError(f"{self.table.model_class}'s language model was not called")
        except _Captured as c:
            return c.embeds
        finally:
            hook.remove()

    def embed_prompts(self, tasks, wavs):
        groups = [[i] for i in range(len(wavs))] if self.table.encode_each_clip else [list(range(len(wavs)))]
        out: list[torch.Tensor | None] = [None] * len(wavs)
        for idx in groups:
            inputs = self.model_inputs([tasks[i] for i in idx], [wavs[i] for i in idx])
            embeds = self._merged_embeddings(inputs)
            mask = inputs["attention_mask"].bool().to(embeds.device)
            for row, i in enumerate(idx):
                out[i] = embeds[row][mask[row]]
        return out, {}

    # ---- files -----------------------------------------------------------------------------
    def save(self, path, provenance: dict | None = None) -> Path:
        if provenance is not None:
            self.provenance = provenance
        with atomic_dir(path) as tmp:
            write_json(tmp / SPEC_FILE, {**self.spec, "format_version": FORMAT_VERSION, "family": self.family})
            # the names are already the published ones: no reverse conversion on top
            decoding, self.model.generation_config = self.model.generation_config, self.hub_generation_config
            try:
                self.model.save_pretrained(tmp / HF_DIR, state_dict=published_state_dict(self.model, self.table),
                                           save_original_format=False, max_shard_size=MAX_SHARD_SIZE)
            finally:
                self.model.generation_config = decoding
            self.processor.save_pretrained(tmp / HF_DIR)
            # transformers 5 nests the feature extractor's settings in processor_config.json; the published dirs
            # (and transformers 4, vLLM's processors) read them from preprocessor_config.json
            self.save_feature_extractor(tmp / HF_DIR)
            write_json(tmp / PROVENANCE_FILE, self.provenance)
        return Path(path)

    def save_feature_extractor(self, hf_dir: Path) -> None:
        import json

        fe = getattr(self.processor, "feature_extractor", None)
        path = hf_dir / "preprocessor_config.json"
        if fe is not None and not path.is_file():
            fe.save_pretrained(hf_dir)
            # as published: the file names the processor AutoProcessor builds around it
            write_json(path, {**json.loads(path.read_text()), "processor_class": type(self.processor).__name__})

    def saved_decoder(self) -> tuple[str, str]:
        # the published name of the language model's layers (Qwen2-Audio: language_model.model.layers.)
        ours = self.table.language_model + "."
        return HF_DIR, dict(self.table.published)[ours] + "layers."

    def text_decoder_dir(self, model_dir: Path, scratch: Path) -> Path:
        """The language model (pruned or not) as a plain causal-LM dir under ``scratch`` (``Qwen2ForCausalLM``,
        ``LlamaForCausalLM``, ``GraniteForCausalLM``: the text config's own class), with the tokenizer."""
        from transformers import AutoModelForCausalLM
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        text = copy.deepcopy(self.text_config())
        text.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[text.model_type]]
        lm = AutoModelForCausalLM.from_config(text, dtype=self.dtype)
        lm.get_decoder().load_state_dict(self.decoder_stack().state_dict())
        lm.get_output_embeddings().load_state_dict(self._module(self.table.lm_head).state_dict())
        dest = Path(scratch) / "decoder"
        with atomic_dir(dest) as tmp:
            lm.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return dest

    @classmethod
    def load_processor(cls, hf_dir: Path):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(hf_dir)

    @classmethod
    def load(cls, path: Path, spec: dict, dtype=torch.float32) -> "HFAudioSpeechLLM":
        processor = cls.load_processor(Path(path) / HF_DIR)
        model = cls.table.hf_class().from_pretrained(Path(path) / HF_DIR, dtype=dtype)
        out = cls(spec, processor, model)
        out.provenance = read_provenance(path)
        return out
