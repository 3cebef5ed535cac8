"""Family ``voxtral``: VoxtralForConditionalGeneration (Voxtral-Mini-3B-2507, Voxtral-Small-24B-2507) with its
mistral-common (Tekken) tokenizer.

Model dir: ``speechllm.json`` + ``hf/`` (config, weights under the published names ``audio_tower.*``,
``multi_modal_projector.linear_{1,2}.weight``, ``language_model.model.*``, ``language_model.lm_head.weight``;
``tekken.json``; the WhisperFeatureExtractor's preprocessor_config.json) + ``provenance.json``.

Why this family builds its own inputs (``model_inputs``): VoxtralProcessor takes no (text, audio) pair; its
prompts are token sequences that mistral-common builds (control tokens such as ``[INST]`` or ``[TRANSCRIBE]``
are never parsed from text). Here a prompt template names them in brackets, e.g. the transcription mode of
mistral-common's ``encode_transcription`` (InstructTokenizerV7):

    <s>[INST][BEGIN_AUDIO]{audio}[/INST]lang:{lang}[TRANSCRIBE]

A bracketed name the Tekken tokenizer has as a special token becomes that token; the text between is encoded
as mistral-common encodes it (no BOS/EOS); ``{audio}`` becomes the ``[AUDIO]`` run mistral-common's audio
encoder gives the clip (the clip padded to whole 30 s chunks, 12.5 tokens per second: 375 per chunk).
tests/speechllm/test_import_hf.py checks the ids against mistral-common's own requests.

Features (B_chunks, 128, 3000): the clip padded to whole 30 s chunks, Whisper log-mel of the dir's feature
extractor, cut into 3000-frame chunks, as VoxtralProcessor does. Each chunk is encoded alone (no padding mask
is needed), so a batch gives the same embeddings as its clips one by one. The answer ends with ``</s>``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import torch

from .hf_audio import HFAudioSpeechLLM
from .qwen2_audio import QWEN2_AUDIO

# mistralai/Voxtral-Mini-3B-2507's model.safetensors.index.json has Qwen2-Audio's names (transformers'
# conversion_mapping.py maps "voxtral" onto the "qwen2_audio" renames), and the parts live where Qwen2-Audio's do
VOXTRAL = dataclasses.replace(QWEN2_AUDIO, family="voxtral", model_class="VoxtralForConditionalGeneration",
                              model_inputs=("input_ids", "attention_mask", "input_features"))
#: a bracketed control-token name in a template (or <s>, </s>, <unk>, <pad>)
CONTROL = re.compile(r"(\[/?[A-Z][A-Z_]*\]|</?s>|<unk>|<pad>)")
AUDIO_SLOT = "\0"


class VoxtralSpeechLLM(HFAudioSpeechLLM):
    table = VOXTRAL

    def __init__(self, spec: dict, processor, model):
        super().__init__(spec, processor, model)
        mistral = processor.tokenizer.tokenizer  # mistral_common MistralTokenizer
        self.tekken = mistral.instruct_tokenizer.tokenizer
        self.audio_encoder = mistral.instruct_tokenizer.audio_encoder
        if self.audio_encoder is None:
            raise ValueError("this tekken.json has no audio section: not a Voxtral tokenizer")

    @property
    def audio_token(self) -> str:
        return "[AUDIO]"

    def template_ids(self, text: str) -> list[int]:
        """A template piece -> ids: bracketed special tokens as such, the rest as plain text."""
        ids: list[int] = []
        for piece in CONTROL.split(text):
            if not piece:
                continue
            if CONTROL.fullmatch(piece):
                try:
                    ids.append(self.tekken.get_special_token(piece))
                    continue
                except ValueError:  # not one of this tokenizer's special tokens: it is text
                    pass
            ids += self.tekken.encode(piece, bos=False, eos=False)
        return ids

    def prompt_ids(self, task, wav) -> tuple[list[int], np.ndarray]:
        """-> (the prompt's ids with the clip's [AUDIO] run, the clip padded to whole chunks)."""
        from mistral_common.tokens.tokenizers.audio import Audio

        before, after = self.prompts.render(task)
        enc = self.audio_encoder.encode_audio(Audio(np.asarray(wav, dtype=np.float32), 16000, format="wav"))
        begin = self.audio_encoder.special_ids.begin_audio
        # mistral-common's audio chunk is [BEGIN_AUDIO] + [AUDIO] x n; the template names [BEGIN_AUDIO] itself
        audio = enc.tokens[1:] if enc.tokens and enc.tokens[0] == begin else enc.tokens
        return self.template_ids(before) + audio + self.template_ids(after), enc.audio.audio_array

    def model_inputs(self, tasks, wavs) -> dict:
        fe = self.processor.feature_extractor
        rows, chunks = [], []
        for task, wav in zip(tasks, wavs):
            ids, padded = self.prompt_ids(task, wav)
            rows.append(ids)
            feats = fe(padded, sampling_rate=fe.sampling_rate, return_tensors="pt", padding=False,
                       truncation=False).input_features[0]  # (n_mels, 3000 x chunks)
            chunks.append(feats.reshape(fe.feature_size, -1, fe.nb_max_frames).transpose(0, 1))
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, T - len(r):] = torch.tensor(r)
            mask[i, T - len(r):] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "input_features": torch.cat(chunks)}

    def text_ids(self, text: str) -> list[int]:
        return self.tekken.encode(text, bos=False, eos=False)
