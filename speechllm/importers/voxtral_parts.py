"""``slimspeech import voxtral``: a published Voxtral dir (Voxtral-Mini-3B-2507, Voxtral-Small-24B-2507) -> a
``voxtral`` model dir.

    slimspeech import voxtral --hf Voxtral-Mini-3B-2507/ --languages fr,de --out models/voxtral

    from speechllm.importers.voxtral_parts import import_voxtral
    out = import_voxtral("Voxtral-Mini-3B-2507/", "models/voxtral", languages="fr,de")

Needs ``mistral-common[audio]`` (Voxtral's tokenizer, tekken.json, and its audio token arithmetic; the audio
extra is soundfile + soxr, both already slimspeech dependencies, no torchaudio).

The published layout (huggingface.co/mistralai/Voxtral-Mini-3B-2507; the replica in
``speechllm.builders.voxtral_replica`` writes the same, scaled down):

- ``config.json``: ``architectures`` [VoxtralForConditionalGeneration], ``model_type`` voxtral,
  ``audio_token_id`` 24, ``projector_hidden_act`` gelu, ``hidden_size`` (the text model's), ``audio_config``
  (voxtral_encoder: hidden_size 1280, intermediate_size 5120 = 4 x 1280: the projector takes 4 frames at a time,
  32 layers, 128 mel bins, max_source_positions 1500) and ``text_config`` (llama: hidden 3072, 30 layers,
  head_dim 128, 8 KV heads, vocab 131072, rope_theta 1e8).
- weights: ``model-0000i-of-00002.safetensors`` + ``model.safetensors.index.json`` with ``audio_tower.*``,
  ``multi_modal_projector.linear_1.weight`` (3072, 5120), ``multi_modal_projector.linear_2.weight``,
  ``language_model.model.*``, ``language_model.lm_head.weight``. The same weights in mistral's own format
  (``consolidated.safetensors`` + ``params.json``, for vLLM's ``--load-format mistral``) are not read.
- ``preprocessor_config.json``: WhisperFeatureExtractor, feature_size 128, chunk_length 30, hop 160, n_fft 400,
  ``processor_class`` VoxtralProcessor.
- ``tekken.json``: the Tekken tokenizer (mistral-common): 1000 special tokens (``<s>`` 1, ``</s>`` 2, ``[INST]`` 3,
  ``[/INST]`` 4, ``<pad>`` 11, ``[AUDIO]`` 24, ``[BEGIN_AUDIO]`` 25, ``[TRANSCRIBE]`` 34), then the BPE ranks; its
  ``audio`` section: sampling_rate 16000, frame_rate 12.5, chunk_length_s 30, audio_encoding_config (128 mel
  bins, hop 160, window 400). No tokenizer.json: transformers loads it through MistralCommonBackend.
- ``generation_config.json``.

Checked against sources stored here: the special-token ranks and the audio section (public test code
reproducing Voxtral's tekken.json), the transcription tokens (mistral-common's encode_transcription), the processor
(processing_voxtral.py), the config classes (configuration_voxtral.py), the card (a public copy of its README). From
the model page, not checked offline: tekken.json's ``version`` (v7 in the replica), the shard count and the
generation_config.json values; the import depends on none of them.

Prompts (speechllm.families.voxtral writes control tokens in brackets):

- transcribe: Voxtral's dedicated transcription mode, as mistral-common's ``encode_transcription`` builds it with
  the language set (the model card: "set the language if already known for better accuracy"):
  ``<s>[INST][BEGIN_AUDIO]{audio}[/INST]lang:{lang}[TRANSCRIBE]``.
- translate: Voxtral has no translation mode; the model card's audio-instruct mode (a user turn with the audio,
  then a text instruction, as ``encode_chat_completion`` builds it):
  ``<s>[INST][BEGIN_AUDIO]{audio}Translate this audio into {lang_name}.[/INST]`` (the instruction is ours).
- the answer ends with ``</s>``. The card's settings: temperature 0 for transcription (greedy, as here),
  up to 500 new tokens in its examples (the default here).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from ..errors import SlimError
from . import ShapeMismatchError, SourceError
from .hf_parts import (check_dtype, check_out, command_line, hf_parser, languages_of, load_hf_model, need_shape,
                       read_hf_dir, run_import, save_import, task_prompts)

log = logging.getLogger(__name__)

SOURCE = "voxtral"
TITLE = "Voxtral"
DEFAULT_TRANSCRIBE = "<s>[INST][BEGIN_AUDIO]{audio}[/INST]lang:{lang}[TRANSCRIBE]"
DEFAULT_TRANSLATE_INSTRUCTION = "Translate this audio into {lang_name}."
DEFAULT_MAX_NEW_TOKENS = 500
#: one encoder chunk; longer audio is cut at pauses by the server like every family's (Voxtral itself takes
#: many chunks: up to 30 minutes for transcription, per its card)
WINDOW_SECONDS = 30.0


def instruct_template(instruction: str) -> str:
    """An instruction -> the audio-instruct prompt (a user turn: the audio, then the text)."""
    return instruction if "{audio}" in instruction else "<s>[INST][BEGIN_AUDIO]{audio}" + instruction + "[/INST]"


def require_mistral_common() -> None:
    missing = [m for m in ("mistral_common", "soundfile", "soxr") if importlib.util.find_spec(m) is None]
    if missing:
        raise SlimError(f"Voxtral's tokenizer needs {', '.join(missing)}: pip install 'mistral-common[audio]'",
                        param="hf")


def import_voxtral(hf, out, *, prompt_transcribe: str | None = None, prompt_translate: str | None = None,
                   languages: str | dict | None = None, source_language: str = "en",
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, dtype: str = "auto",
                   command: str | None = None) -> Path:
    """Import the Voxtral dir ``hf`` into the voxtral model dir ``out``; -> ``out``.

    ``prompt_transcribe``: a whole template with ``{audio}`` (control tokens in brackets); ``prompt_translate``: an
    instruction (put into the audio-instruct turn) or a whole template; ``languages``: the translation targets;
    ``dtype``: auto keeps the stored dtype. Raises SourceError / ShapeMismatchError before loading any weight when
    the dir is not a Voxtral dir or its files disagree.
    """
    require_mistral_common()
    from transformers import AutoConfig, AutoProcessor, VoxtralForConditionalGeneration

    from ..families.voxtral import VoxtralSpeechLLM
    from ..modeldir import FORMAT_VERSION
    from ..tasks import PromptBook

    check_dtype(dtype)
    langs = languages_of(languages)
    if command is None:
        command = command_line(SOURCE, ["--hf", str(hf), "--out", str(out)])
    out_path = check_out(out)
    # 1. configs, headers, the tokenizer, before any weight is loaded
    src = read_hf_dir(Path(hf), ("voxtral",), TITLE)
    for name, what in (("preprocessor_config.json", "Voxtral's feature extractor config"),
                       ("tekken.json", "Voxtral's Tekken tokenizer (mistral-common)")):
        if not (src.path / name).is_file():
            raise SourceError(f"{src.path / name} is missing: --hf needs {what}", param="hf")
    config = AutoConfig.from_pretrained(src.path)
    text, audio = config.text_config, config.audio_config
    fe = json.loads((src.path / "preprocessor_config.json").read_text())
    tekken_audio = json.loads((src.path / "tekken.json").read_text()).get("audio")
    if not tekken_audio:
        raise SourceError(f"{src.path / 'tekken.json'} has no audio section: it is a text-only Mistral tokenizer, "
                          "not Voxtral's", param="hf")
    mels = {"audio_config.num_mel_bins": audio.num_mel_bins, "preprocessor_config.json feature_size":
            fe.get("feature_size"), "tekken.json audio num_mel_bins":
            (tekken_audio.get("audio_encoding_config") or {}).get("num_mel_bins")}
    if len(set(mels.values())) != 1:
        raise ShapeMismatchError(f"{src.path}: the mel bins disagree ({', '.join(f'{k} {v}' for k, v in mels.items())})"
                                 ": the files come from different checkpoints", param="hf")
    need_shape(src, "multi_modal_projector.linear_1.weight", (text.hidden_size, audio.intermediate_size),
               "the projector", "the config and the weights come from different checkpoints")
    need_shape(src, "embed_tokens.weight", (text.vocab_size, text.hidden_size), "the token embeddings",
               "the config and the weights come from different checkpoints")
    processor = AutoProcessor.from_pretrained(src.path)
    tekken = processor.tokenizer.tokenizer.instruct_tokenizer.tokenizer
    try:
        audio_id = tekken.get_special_token("[AUDIO]")
    except ValueError:  # the tokenizer has no [AUDIO]
        audio_id = None
    if audio_id != config.audio_token_id:
        raise ShapeMismatchError(f"{src.path}: config.json's audio_token_id {config.audio_token_id} is not "
                                 f"tekken.json's [AUDIO] ({audio_id}): the files come from different checkpoints",
                                 param="hf")
    # an instruction without {audio} goes into the audio-instruct turn (the default transcription has {audio})
    prompts = task_prompts(instruct_template, prompt_transcribe, prompt_translate, langs,
                           (DEFAULT_TRANSCRIBE, DEFAULT_TRANSLATE_INSTRUCTION))
    PromptBook(prompts, langs, source_language)

    # 2. the model, every weight read
    log.info("loading %s from %s", TITLE, src.path)
    model = load_hf_model(VoxtralForConditionalGeneration, src, dtype)

    # 3. the model dir
    spec = {"format_version": FORMAT_VERSION, "family": "voxtral", "prompts": prompts, "languages": langs,
            "source_language": source_language, "max_audio_seconds": WINDOW_SECONDS,
            "max_new_tokens": int(max_new_tokens)}
    fmt = (f"Voxtral ({src.architecture}): encoder {audio.num_hidden_layers} layers, width {audio.hidden_size}, "
           f"{audio.num_mel_bins} mel bins, 30 s chunks; projector {audio.intermediate_size} -> {text.hidden_size} -> "
           f"{text.hidden_size}; {text.model_type} decoder {text.num_hidden_layers} layers, hidden {text.hidden_size}")
    save_import(VoxtralSpeechLLM(spec, processor, model), out_path, SOURCE, command, src, fmt)
    log.info("wrote %s", out_path)
    return out_path


def build_parser():
    return hf_parser(SOURCE, "Import a published Voxtral dir (Voxtral-Mini-3B-2507, Voxtral-Small-24B-2507) as a "
                     "voxtral model dir.", "the Hugging Face Voxtral dir (config.json, weights, "
                     "preprocessor_config.json, tekken.json)",
                     transcribe_help=f"a whole template with {{audio}} (default {DEFAULT_TRANSCRIBE!r}: the "
                                     "transcription mode) or an instruction after the audio",
                     translate_help=f"instruction after the audio (default {DEFAULT_TRANSLATE_INSTRUCTION!r}) or a "
                                    "whole template",
                     max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                     source_language_help="the language the transcription mode is told (lang:xx; default en)")

def main(argv: list[str]) -> int:
    return run_import(SOURCE, TITLE, build_parser(), import_voxtral, argv)
