"""Family ``qwen2_audio``: Qwen2AudioForConditionalGeneration and its processor.

Model dir: ``speechllm.json`` + ``hf/`` (the HF model dir: config, weights, tokenizer with the
audio tokens, WhisperFeatureExtractor) + ``provenance.json``. Prompts put ``{audio}`` where the
processor's ``<|AUDIO|>`` token goes; the processor expands it to one token per audio frame and
HF's own merge code splices the audio features in. We capture the merged embeddings at the
entrance of the language model, so generation, surgery and analysis stay family-agnostic.
Other HF audio LLMs with ``model.language_model.layers`` (Voxtral, Granite Speech) fit the same adapter.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoProcessor, Qwen2AudioForConditionalGeneration

from ..modeldir import FORMAT_VERSION, PROVENANCE_FILE, SPEC_FILE, atomic_dir, read_provenance, write_json
from .base import SpeechLLM


class _Captured(Exception):
    def __init__(self, embeds):
        self.embeds = embeds


class Qwen2AudioSpeechLLM(SpeechLLM):
    family = "qwen2_audio"
    projector_prefixes = ("model.model.multi_modal_projector",)
    decoder_prefixes = ("model.model.language_model",)

    def __init__(self, spec: dict, processor, model: Qwen2AudioForConditionalGeneration):
        super().__init__(spec, processor.tokenizer)
        self.processor = processor
        self.model = model

    @property
    def lm(self):
        return self.model

    def decoder_stack(self):
        return self.model.model.language_model

    def text_config(self):
        return self.model.config.text_config

    def embed_prompts(self, tasks, wavs):
        texts = []
        for task in tasks:
            before, after = self.prompts.render(task)
            texts.append(before + self.processor.audio_token + after)
        proc = self.processor(text=texts, audio=[np.asarray(w, dtype=np.float32) for w in wavs],
                              sampling_rate=self.processor.feature_extractor.sampling_rate,
                              return_tensors="pt", padding=True)

        # HF's Qwen2AudioModel.forward encodes the audio, merges it into the token embeddings and only
        # then calls the language model: the merged (B, T, D) inputs_embeds exist nowhere else. A
        # pre-hook on the language model sees them and raises, which stops forward right there, so
        # the decoder layers never run (no wasted compute) and no HF merge code is copied here.
        def grab(_module, _args, kwargs):
            raise _Captured(kwargs["inputs_embeds"])

        hook = self.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model.model(input_ids=proc["input_ids"].to(self.device),
                             attention_mask=proc["attention_mask"].to(self.device),
                             input_features=proc["input_features"].to(self.device, self.dtype),
                             feature_attention_mask=proc["feature_attention_mask"].to(self.device))
            raise RuntimeError("Qwen2Audio language model was not called")
        except _Captured as c:
            embeds = c.embeds
        finally:
            hook.remove()
        mask = proc["attention_mask"].bool()
        return [embeds[i][mask[i].to(embeds.device)] for i in range(len(tasks))], {}

    def save(self, path, provenance: dict | None = None) -> Path:
        if provenance is not None:
            self.provenance = provenance
        with atomic_dir(path) as tmp:
            write_json(tmp / SPEC_FILE, {**self.spec, "format_version": FORMAT_VERSION, "family": self.family})
            self.model.save_pretrained(tmp / "hf")
            self.processor.save_pretrained(tmp / "hf")
            write_json(tmp / PROVENANCE_FILE, self.provenance)
        return Path(path)

    def text_decoder_dir(self, model_dir: Path, scratch: Path) -> Path:
        """The language model (pruned or not) as a Qwen2ForCausalLM dir under ``scratch``."""
        text = copy.deepcopy(self.text_config())
        text.architectures = ["Qwen2ForCausalLM"]
        lm = AutoModelForCausalLM.from_config(text, dtype=self.dtype)
        lm.model.load_state_dict(self.decoder_stack().state_dict())
        lm.lm_head.load_state_dict(self.model.lm_head.state_dict())
        dest = Path(scratch) / "decoder"
        with atomic_dir(dest) as tmp:
            lm.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return dest

    @classmethod
    def load(cls, path: Path, spec: dict, dtype=torch.float32) -> "Qwen2AudioSpeechLLM":
        processor = AutoProcessor.from_pretrained(path / "hf")
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path / "hf", dtype=dtype)
        out = cls(spec, processor, model)
        out.provenance = read_provenance(path)
        return out
