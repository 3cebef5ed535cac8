"""Family ``slam``: Whisper-style encoder -> projector -> any HF causal-LM decoder (the paper's setup).

Model dir:
    speechllm.json          format, family, prompts, languages, feature settings, projector config,
                            encoder kind ("encoder": {"kind": "hf_whisper"}; absent: slimspeech),
                            bos_position ("start", the default, or "after_audio")
    encoder/                config.json + model.safetensors (speechllm.encoder.SpeechEncoder), or a Hugging
                            Face Whisper encoder + preprocessor_config.json (kind hf_whisper)
    projector.safetensors
    decoder/                a plain HF causal-LM dir with its tokenizer (AutoModelForCausalLM and vLLM load it)
    provenance.json         parent model, removed layers, analysis, healing, eval metrics

Prompt per sample: [BOS] prefix-tokens [audio embeddings] suffix-tokens, shapes (T_i, D). With
``"bos_position": "after_audio"`` the BOS opens the suffix instead: prefix [audio] [BOS] suffix, the order
SLAM-LLM trains with (src/slam_llm/datasets/speech_dataset.py: the audio placeholders, then
``tokenizer.encode(prompt)``, which starts with BOS).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..audio import FeatureSettings, LogMel
from ..encoder import HF_WHISPER, encoder_kind, load_encoder
from ..errors import ModelDirError
from ..modeldir import FORMAT_VERSION, PROVENANCE_FILE, SPEC_FILE, atomic_dir, write_json
from ..projector import ProjectorConfig, build_projector
from ..tasks import Task
from .base import SpeechLLM


#: where the tokenizer's BOS goes: before the whole prompt, or right after the audio (SLAM-LLM)
BOS_POSITIONS = ("start", "after_audio")


class SlamSpeechLLM(SpeechLLM):
    family = "slam"
    projector_prefixes = ("projector",)
    decoder_prefixes = ("decoder",)

    def __init__(self, spec: dict, tokenizer, encoder, projector, decoder):
        super().__init__(spec, tokenizer)
        self.encoder = encoder
        self.projector = projector
        self.decoder = decoder
        if encoder_kind(spec) == HF_WHISPER:
            # the checkpoint's own feature extractor: 30 s padding and Whisper's log-mel, as it was trained
            self.features = encoder.features
        else:
            self.features = LogMel(FeatureSettings(**spec["features"]))
        self.bos_position = spec.get("bos_position", "start")
        if self.bos_position not in BOS_POSITIONS:
            raise ModelDirError(f"speechllm.json has bos_position {self.bos_position!r}: "
                                f"use one of {', '.join(BOS_POSITIONS)}")
        self._prompt_ids: dict[Task, tuple[list[int], list[int]]] = {}

    @property
    def lm(self):
        return self.decoder

    def decoder_stack(self):
        return self.decoder.get_decoder()

    def encode(self, features: torch.Tensor, lengths: torch.Tensor):
        """(B, n_mels, T) -> audio embeddings (B, N, D), (B,) lengths, CTC logits or None, encoder lengths."""
        h, enc_lengths = self.encoder(features.to(self.device, self.dtype), lengths)
        emb, out_lengths, ctc = self.projector(h, enc_lengths, self.decoder.get_input_embeddings().weight)
        return emb, out_lengths, ctc, enc_lengths

    def prompt_ids(self, task: Task) -> tuple[list[int], list[int]]:
        if task not in self._prompt_ids:
            before, after = self.prompts.render(task)
            bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
            if self.bos_position == "after_audio":
                self._prompt_ids[task] = (self.text_ids(before), bos + self.text_ids(after))
            else:
                self._prompt_ids[task] = (bos + self.text_ids(before), self.text_ids(after))
        return self._prompt_ids[task]

    def embed_prompts(self, tasks, wavs):
        feats, lengths = self.features(wavs)
        return self.embed_features(tasks, feats, lengths)

    def embed_features(self, tasks, feats, lengths):
        audio, audio_lengths, ctc, enc_lengths = self.encode(feats, lengths)
        emb = self.decoder.get_input_embeddings()
        out = []
        for i, task in enumerate(tasks):
            before, after = self.prompt_ids(task)
            ids = torch.tensor(before + after, dtype=torch.long, device=audio.device)
            tok = emb(ids).to(audio.dtype)
            out.append(torch.cat([tok[: len(before)], audio[i, : int(audio_lengths[i])], tok[len(before):]]))
        return out, {"ctc_logits": ctc, "ctc_lengths": enc_lengths}

    def save(self, path, provenance: dict | None = None) -> Path:
        if provenance is not None:
            self.provenance = provenance
        with atomic_dir(path) as tmp:
            spec = {**self.spec, "format_version": FORMAT_VERSION, "family": self.family}
            write_json(tmp / SPEC_FILE, spec)
            self.encoder.save(tmp / "encoder")
            save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()},
                      str(tmp / "projector.safetensors"))
            self.decoder.save_pretrained(tmp / "decoder")
            self.tokenizer.save_pretrained(tmp / "decoder")
            write_json(tmp / PROVENANCE_FILE, self.provenance)
        return Path(path)

    def saved_decoder(self) -> tuple[str, str]:
        return "decoder", "model.layers."

    def text_decoder_dir(self, model_dir: Path, scratch: Path) -> Path:
        return Path(model_dir) / "decoder"  # the model dir's own decoder/

    @classmethod
    def load(cls, path: Path, spec: dict, dtype=torch.float32) -> "SlamSpeechLLM":
        from ..modeldir import read_provenance

        tokenizer = AutoTokenizer.from_pretrained(path / "decoder")
        decoder = AutoModelForCausalLM.from_pretrained(path / "decoder", dtype=dtype)
        kind = encoder_kind(spec)
        encoder = load_encoder(path / "encoder", kind, dtype=dtype)
        n_mels = (spec.get("features") or {}).get("n_mels")
        if kind == HF_WHISPER and n_mels is not None and encoder.feature_extractor.feature_size != n_mels:
            raise ModelDirError(f"{path / 'speechllm.json'} says {n_mels} mel bins but "
                                f"encoder/preprocessor_config.json makes {encoder.feature_extractor.feature_size}: "
                                "re-import the model")
        projector = build_projector(ProjectorConfig(**spec["projector"]))
        projector.load_state_dict(load_file(str(path / "projector.safetensors")))
        model = cls(spec, tokenizer, encoder, projector, decoder).to(dtype)
        model.provenance = read_provenance(path)
        return model
