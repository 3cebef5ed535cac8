"""``slimspeech import granite-speech``: a published Granite-Speech dir (granite-speech-3.3-2b / -8b) -> a
``granite_speech`` model dir, its audio LoRA merged into the language model.

    slimspeech import granite-speech --hf granite-speech-3.3-2b/ --languages fr,de --out models/granite-speech

    from speechllm.importers.granite_speech_parts import import_granite_speech
    out = import_granite_speech("granite-speech-3.3-2b/", "models/granite-speech", languages="fr,de")

No torchaudio needed: the log-mel features are speechllm.families.granite_speech.GraniteLogMel.

The published layout (huggingface.co/ibm-granite/granite-speech-3.3-2b and -8b; the replica in
``speechllm.builders.granite_speech_replica`` writes the same, scaled down):

- ``config.json``: ``architectures`` [GraniteSpeechForConditionalGeneration], ``model_type`` granite_speech,
  ``encoder_config`` (granite_speech_encoder: a conformer, input_dim 160 = 2 stacked frames of 80 mel bins,
  hidden_dim 1024, context_size 200, CTC output_dim), ``projector_config`` (blip_2_qformer: a 2-layer Q-Former),
  ``window_size`` 15 and ``downsample_rate`` 5 (15 encoder frames -> 3 audio tokens), ``text_config`` (granite:
  GraniteForCausalLM with embedding_multiplier, residual_multiplier, attention_multiplier, logits_scaling, tied
  embeddings), ``audio_token_index`` (``<|audio|>``, the last token: 49159 of 49160), ``has_lora_adapter`` true.
- weights: ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``: ``encoder.*``,
  ``projector.{query,qformer.*,linear.*}``, ``language_model.model.*`` (the lm_head is the tied embedding).
- the audio LoRA beside them, PEFT's layout: ``adapter_config.json`` (LORA on q_proj, v_proj) +
  ``adapter_model.safetensors``. transformers loads it with peft and enables it only when audio is given (the
  model's ``generate``): every slimspeech task has audio, so it is merged into the weights here (W += s B A,
  speechllm.importers.slam_parts.merge_lora; tests check it against peft's own loading). Adapter names are read in
  the published layout (``language_model.model.layers...``), the in-memory one, or relative to the language model.
- processor: ``preprocessor_config.json`` (GraniteSpeechFeatureExtractor: sampling_rate 16000, melspec_kwargs
  n_fft 512, win_length 400, hop_length 160, n_mels 80; projector_window_size 15, projector_downsample_rate 5),
  ``processor_config.json`` (audio_token ``<|audio|>``), the GPT-2 style tokenizer (``vocab.json``,
  ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json`` with Granite's chat template),
  ``generation_config.json``.

Checked against sources stored here: the rendered prompt (vLLM's granite-speech test), the feature and token-count
math (feature_extraction_granite_speech.py), the key names (conversion_mapping.py), the adapter living in the model
dir (vLLM's test: "Audio lora co-exists directly in the model directory"), transformers 4's language model computing
logits / logits_scaling (modeling_granite_speech.py before 5.0). From the model page, not checked offline: the config
values (encoder width, CTC output_dim), the adapter's rank and the names inside adapter_model.safetensors (read here
in three layouts), the chat template beyond a system + user turn.

Prompts: the model card's (and vLLM's granite-speech test's) transcription request, rendered through the dir's
chat template once at import: a system turn (the card's, with its fixed date, so the prompt never depends on the
day it is rendered: Granite's template would otherwise insert today's) and the user turn
``<|audio|>can you transcribe the speech into a written format?``; translation asks
``<|audio|>can you translate the speech into {lang_name}?`` (ours: the card lists English-to-X translation without
a fixed prompt). The answer ends with ``<|end_of_text|>`` (the tokenizer's EOS). The card decodes up to 200 new tokens.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from . import AdapterMismatchError, ShapeMismatchError, SourceError
from .hf_parts import (HFDirSource, check_dtype, check_out, command_line, hf_parser, languages_of, load_hf_model,
                       need_shape, read_hf_dir, run_import, save_import, task_prompts)
from .slam_parts import merge_lora, read_adapter

log = logging.getLogger(__name__)

SOURCE = "granite-speech"
TITLE = "Granite-Speech"
SYSTEM_PROMPT = ("Knowledge Cutoff Date: April 2024.\nToday's Date: December 19, 2024.\n"
                 "You are Granite, developed by IBM. You are a helpful AI assistant")
DEFAULT_TRANSCRIBE = "can you transcribe the speech into a written format?"
DEFAULT_TRANSLATE = "can you translate the speech into {lang_name}?"
DEFAULT_MAX_NEW_TOKENS = 200
WINDOW_SECONDS = 30.0
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def render_prompts(tokenizer, audio_token: str, prompt_transcribe: str | None, prompt_translate: str | None,
                   langs: dict) -> dict[str, str]:
    def template(text: str) -> str:
        if "{audio}" in text:
            return text
        if not tokenizer.chat_template:
            raise SourceError("the tokenizer has no chat template: pass whole templates with {audio} "
                              "(--prompt-transcribe, --prompt-translate)", param="hf")
        chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": audio_token + text}]
        rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return rendered.replace(audio_token, "{audio}", 1)

    return task_prompts(template, prompt_transcribe, prompt_translate, langs, (DEFAULT_TRANSCRIBE, DEFAULT_TRANSLATE))


def _without_adapter(src: Path, scratch: Path) -> Path:
    """A dir of links to every file of ``src`` but the adapter's: transformers would otherwise load the LoRA with
    peft (wrapping the Linear layers); it is merged here instead."""
    view = scratch / src.name
    view.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name not in ADAPTER_FILES:
            (view / f.name).symlink_to(f.resolve())
    return view


def adapter_targets(adapter, model, table) -> object:
    """The adapter with each module renamed to the HF model's in-memory name; AdapterMismatchError when a module
    is not a Linear of the language model with the adapter's shapes."""
    import torch

    named = dict(model.named_modules())
    lm_prefix = table.language_model + "."

    def resolve(name: str) -> str | None:
        candidates = [name]
        for ours, theirs in table.published:  # the published full-model layout
            if name.startswith(theirs.rstrip(".")):
                candidates.append(ours.rstrip(".") + name[len(theirs.rstrip(".")):])
        if name.startswith("model."):  # relative to a causal LM (trained on the LLM alone)
            candidates.append(lm_prefix + name[len("model."):])
        return next((c for c in candidates if c in named), None)

    modules = []
    for mod in adapter.modules:
        target = resolve(mod.name)
        layer = named.get(target) if target else None
        if not isinstance(layer, torch.nn.Linear) or not target.startswith(lm_prefix):
            raise AdapterMismatchError(f"the audio LoRA in {adapter.path} targets {mod.name}, which is not a Linear "
                                       f"layer of this model's language model: the adapter is of another model")
        if (layer.out_features, layer.in_features) != (mod.B.shape[0], mod.A.shape[1]):
            raise AdapterMismatchError(f"the audio LoRA in {adapter.path}: {mod.name} maps {mod.A.shape[1]} -> "
                                       f"{mod.B.shape[0]} but the model's {target} maps {layer.in_features} -> "
                                       f"{layer.out_features}: the adapter is of another model")
        modules.append(replace(mod, name=target))
    return replace(adapter, modules=modules)


def check_source(src: HFDirSource, config) -> None:
    enc, text, q = config.encoder_config, config.text_config, config.projector_config
    pre = src.path / "preprocessor_config.json"
    if not pre.is_file():
        raise SourceError(f"{pre} is missing: --hf needs Granite-Speech's feature extractor config", param="hf")
    from ..families.granite_speech import GraniteLogMel

    fe = GraniteLogMel.from_dict(json.loads(pre.read_text()))
    if 2 * fe.n_mels != enc.input_dim:
        raise ShapeMismatchError(f"{src.path}: the encoder takes {enc.input_dim} features per frame but "
                                 f"preprocessor_config.json makes 2 x {fe.n_mels} mel bins: the files come from "
                                 "different checkpoints", param="hf")
    if (fe.projector_window_size, fe.projector_downsample_rate) != (config.window_size, config.downsample_rate):
        raise ShapeMismatchError(f"{src.path}: preprocessor_config.json counts audio tokens for windows of "
                                 f"{fe.projector_window_size} / {fe.projector_downsample_rate} but the projector uses "
                                 f"{config.window_size} / {config.downsample_rate}", param="hf")
    need_shape(src, "encoder.input_linear.weight", (enc.hidden_dim, enc.input_dim), "the encoder's input layer",
               "the config and the weights come from different checkpoints")
    need_shape(src, "projector.linear.weight", (text.hidden_size, q.hidden_size), "the projector's output layer",
               "the config and the weights come from different checkpoints")


def import_granite_speech(hf, out, *, prompt_transcribe: str | None = None, prompt_translate: str | None = None,
                          languages: str | dict | None = None, source_language: str = "en",
                          max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, dtype: str = "auto",
                          command: str | None = None) -> Path:
    """Import the Granite-Speech dir ``hf`` into the granite_speech model dir ``out`` (the audio LoRA merged); -> out.

    ``prompt_*``: an instruction (after <|audio|> in the user turn of the chat template) or a whole template with
    ``{audio}``; ``languages``: the translation targets; ``dtype``: auto keeps the stored dtype. Raises SourceError /
    ShapeMismatchError / AdapterMismatchError before loading any weight when the dir's files disagree.
    """
    from transformers import AutoConfig, AutoTokenizer, GraniteSpeechForConditionalGeneration

    from ..families.granite_speech import GRANITE_SPEECH, GraniteLogMel, GraniteSpeechInputs, GraniteSpeechSpeechLLM
    from ..modeldir import FORMAT_VERSION
    from ..tasks import PromptBook

    check_dtype(dtype)
    langs = languages_of(languages)
    if command is None:
        command = command_line(SOURCE, ["--hf", str(hf), "--out", str(out)])
    out_path = check_out(out)
    # 1. configs, headers, tokenizer and adapter, before any weight is loaded
    src = read_hf_dir(Path(hf), ("granite_speech",), TITLE)
    config = AutoConfig.from_pretrained(src.path)
    check_source(src, config)
    audio_token = "<|audio|>"
    if (src.path / "processor_config.json").is_file():
        audio_token = json.loads((src.path / "processor_config.json").read_text()).get("audio_token", audio_token)
    tokenizer = AutoTokenizer.from_pretrained(src.path)
    audio_id = tokenizer.convert_tokens_to_ids(audio_token)
    if audio_id != config.audio_token_index:
        raise ShapeMismatchError(f"{src.path}: config.json's audio_token_index {config.audio_token_index} is not the "
                                 f"tokenizer's {audio_token} ({audio_id}): the files come from different checkpoints",
                                 param="hf")
    adapter = None
    if config.has_lora_adapter:
        if not (src.path / "adapter_config.json").is_file():
            raise SourceError(f"{src.path}: config.json says has_lora_adapter but adapter_config.json is missing: the "
                              "audio LoRA is part of the model (download it too)", param="hf")
        adapter = read_adapter(src.path)
    prompts = render_prompts(tokenizer, audio_token, prompt_transcribe, prompt_translate, langs)
    PromptBook(prompts, langs, source_language)

    # 2. the model without its adapter, then the adapter merged in
    log.info("loading %s from %s", TITLE, src.path)
    with tempfile.TemporaryDirectory(prefix="granite-view-") as scratch:
        view = HFDirSource(_without_adapter(src.path, Path(scratch)), src.config, src.tensors, src.flag)
        model = load_hf_model(GraniteSpeechForConditionalGeneration, view, dtype)
    merged = 0
    if adapter is not None:
        merged = merge_lora(model, adapter_targets(adapter, model, GRANITE_SPEECH))
        log.info("merged the audio LoRA into %d modules", merged)
    model.config.has_lora_adapter = False  # merged: a loader must not look for it

    # 3. the model dir
    processor = GraniteSpeechInputs(tokenizer, GraniteLogMel.from_pretrained(src.path), audio_token)
    spec = {"format_version": FORMAT_VERSION, "family": "granite_speech", "prompts": prompts, "languages": langs,
            "source_language": source_language, "max_audio_seconds": WINDOW_SECONDS,
            "max_new_tokens": int(max_new_tokens)}
    enc, text, q = config.encoder_config, config.text_config, config.projector_config
    fmt = (f"Granite-Speech ({src.architecture}): conformer {enc.num_layers} layers, width {enc.hidden_dim}, "
           f"{enc.input_dim // 2} mel bins x 2; Q-Former {q.num_hidden_layers} layers, {config.window_size} frames -> "
           f"{config.window_size // config.downsample_rate} tokens; {text.model_type} decoder {text.num_hidden_layers} "
           f"layers, hidden {text.hidden_size}" + (f"; audio LoRA merged into {merged} modules" if merged else ""))
    extra = {}
    if adapter is not None:
        extra["lora"] = {"merged_modules": merged, **{k: adapter.config.get(k) for k in
                                                      ("r", "lora_alpha", "use_rslora", "target_modules")}}
    save_import(GraniteSpeechSpeechLLM(spec, processor, model), out_path, SOURCE, command, src, fmt, **extra)
    log.info("wrote %s", out_path)
    return out_path


def build_parser():
    return hf_parser(SOURCE, "Import a published Granite-Speech dir (granite-speech-3.3-2b / -8b) as a granite_speech "
                     "model dir, its audio LoRA merged in.", "the Hugging Face Granite-Speech dir (config.json, "
                     "weights, adapter_config.json + adapter_model.safetensors, preprocessor_config.json, tokenizer)",
                     transcribe_help=f"instruction after <|audio|> (default {DEFAULT_TRANSCRIBE!r}) or a whole "
                                     "template with {audio}",
                     translate_help=f"the same for translate (default {DEFAULT_TRANSLATE!r})",
                     max_new_tokens=DEFAULT_MAX_NEW_TOKENS)

def main(argv: list[str]) -> int:
    return run_import(SOURCE, TITLE, build_parser(), import_granite_speech, argv)
