"""Family ``qwen2_audio``: Qwen2AudioForConditionalGeneration and its processor (Qwen2-Audio-7B and -Instruct).

Model dir: ``speechllm.json`` + ``hf/`` (the HF model dir: config, weights under the published names,
tokenizer with the audio tokens, WhisperFeatureExtractor) + ``provenance.json``. Prompts put ``{audio}``
where the processor's ``<|AUDIO|>`` token goes; the processor expands it to one token per audio frame
(ceil of the real mel frames / 4: transformers' processing_qwen2_audio.py) and the HF model's own merge
splices the audio features in (speechllm.families.hf_audio).

Published weight names (Qwen/Qwen2-Audio-7B and -Instruct, model.safetensors.index.json; the same as
transformers' conversion_mapping.py ``qwen2_audio`` entry reads): ``audio_tower.*``,
``multi_modal_projector.linear.*``, ``language_model.model.*`` (embed_tokens, layers, norm),
``language_model.lm_head.weight``.

    slimspeech import qwen2-audio --hf Qwen2-Audio-7B-Instruct/ --out models/qwen2-audio  (speechllm.importers)
"""

from __future__ import annotations

from .hf_audio import HFAudioSpeechLLM, HFAudioTable

QWEN2_AUDIO = HFAudioTable(
    family="qwen2_audio",
    model_class="Qwen2AudioForConditionalGeneration",
    language_model="model.language_model",
    lm_head="lm_head",
    encoder="model.audio_tower",
    projector=("model.multi_modal_projector",),
    published=(("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector.")),
    model_inputs=("input_ids", "attention_mask", "input_features", "feature_attention_mask"),
)


class Qwen2AudioSpeechLLM(HFAudioSpeechLLM):
    table = QWEN2_AUDIO
