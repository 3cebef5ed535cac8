"""``slimspeech import qwen2-audio``: a published Qwen2-Audio dir (Qwen2-Audio-7B or -7B-Instruct) -> a
``qwen2_audio`` model dir.

    slimspeech import qwen2-audio --hf Qwen2-Audio-7B-Instruct/ --languages fr,de --out models/qwen2-audio
    slimspeech import qwen2-audio --hf Qwen2-Audio-7B/ --variant base --out models/qwen2-audio-base

    from speechllm.importers.qwen2_audio_parts import import_qwen2_audio
    out = import_qwen2_audio("Qwen2-Audio-7B-Instruct/", "models/qwen2-audio", languages="fr,de")

The published layout (huggingface.co/Qwen/Qwen2-Audio-7B and /Qwen2-Audio-7B-Instruct; the replica in
``speechllm.builders.qwen2_audio_replica`` writes the same, scaled down):

- ``config.json``: ``architectures`` [Qwen2AudioForConditionalGeneration], ``model_type`` qwen2_audio,
  ``audio_token_index`` 151646 (the id of ``<|AUDIO|>``), ``audio_config`` (qwen2_audio_encoder: 128 mel bins,
  d_model 1280, 32 layers, max_source_positions 1500) and a sparse ``text_config`` (model_type qwen2 and the
  fields that differ from Qwen2Config's defaults only: vocab_size 156032, intermediate_size 11008,
  max_position_embeddings 8192, rms_norm_eps 1e-5, bos 151643, eos 151645, ...; hidden_size 4096 and 32 layers
  are the defaults), so sizes are read through ``AutoConfig``, which fills the defaults in.
- weights: ``model-0000i-of-00005.safetensors`` + ``model.safetensors.index.json``, tensors ``audio_tower.*``,
  ``multi_modal_projector.linear.{weight,bias}`` (weight (4096, 1280)), ``language_model.model.*``,
  ``language_model.lm_head.weight`` (transformers' conversion_mapping.py reads these names).
- ``preprocessor_config.json``: WhisperFeatureExtractor, feature_size 128, chunk_length 30 (the window: longer
  audio is cut), hop_length 160, n_fft 400, ``processor_class`` Qwen2AudioProcessor.
- tokenizer: ``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json`` (Qwen2Tokenizer) with
  the special tokens ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645, ``<|AUDIO|>``
  151646, ``<|audio_bos|>`` 151647, ``<|audio_eos|>`` 151648 (processing_qwen2_audio.py's defaults).
- Instruct only: a chat template (``chat_template.json``; the ChatML template of processing_qwen2_audio.py's
  ``default_chat_template``: a default system turn, then ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n``
  and the text in the user turn, ``<|im_start|>assistant\\n`` to answer; a turn ends with ``<|im_end|>``).
- ``generation_config.json`` (sampling settings: slimspeech decodes greedily and reads none of them).

Checked against sources stored here: the config nesting and values (copies of the published config.json in public
code), the key names (transformers' conversion_mapping.py), the tokens and template (processing_qwen2_audio.py), the
prompts and decoding (QwenLM/Qwen2-Audio). From the model pages, not checked offline: the shard count, the
generation_config.json values, the chat template's file name; the import depends on none of them.

The variant (``--variant auto``): instruct when the dir holds a chat template (chat_template.json or .jinja, or
``chat_template`` in tokenizer_config.json / processor_config.json), else base.

Prompts: QwenLM/Qwen2-Audio's evaluation (eval_audio/evaluate_asr.py, evaluate_st.py) puts
``<|audio_bos|><|AUDIO|><|audio_eos|>`` before each item's instruction; the instructions of its evaluation data
("Detect the language and recognize the speech: <|en|>", "Detect the language and translate the speech into
German: <|en|>") are not in the repository itself but are what users' reproductions of those scripts send; they are
the defaults here:

- base: ``<|audio_bos|>{audio}<|audio_eos|>Detect the language and recognize the speech: <|{lang}|>``, and for
  translation ``...Detect the language and translate the speech into {lang_name}: <|en|>`` (en: the source
  language); the answer ends with the tokenizer's EOS ``<|endoftext|>``.
- instruct: the same instruction inside the dir's own chat template (rendered at import time with the audio
  first, as the model card's examples put it); the answer ends with ``<|im_end|>`` (``"eos_token"`` in
  speechllm.json).

``--prompt-transcribe`` / ``--prompt-translate`` replace the instruction (``{lang}``, ``{lang_name}``: the
target; ``{src}``: the source language), or the whole template when the text holds ``{audio}``. Qwen2-Audio's
scripts decode greedily with up to 256 new tokens (the default here).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import SlimError
from . import ShapeMismatchError, SourceError
from .hf_parts import (HFDirSource, check_dtype, check_out, command_line, hf_parser, languages_of, load_hf_model,
                       need_shape, read_hf_dir, run_import, save_import, task_prompts)

log = logging.getLogger(__name__)

SOURCE = "qwen2-audio"
TITLE = "Qwen2-Audio"
AUDIO_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
#: the audio span of evaluate_asr.py / evaluate_st.py; {audio} is where the processor expands <|AUDIO|>
AUDIO_SPAN = "<|audio_bos|>{audio}<|audio_eos|>"
DEFAULT_TRANSCRIBE = "Detect the language and recognize the speech: <|{lang}|>"
DEFAULT_TRANSLATE = "Detect the language and translate the speech into {lang_name}: <|{src}|>"
#: the end of a ChatML turn: what an Instruct answer stops at
CHAT_EOS = "<|im_end|>"
DEFAULT_MAX_NEW_TOKENS = 256
VARIANTS = ("auto", "base", "instruct")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def has_chat_template(path: Path) -> bool:
    import json

    if (path / "chat_template.json").is_file() or (path / "chat_template.jinja").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        f = path / name
        if f.is_file():
            try:
                if json.loads(f.read_text()).get("chat_template"):
                    return True
            except ValueError:
                pass
    return False


def render_prompts(processor, variant: str, prompt_transcribe: str | None, prompt_translate: str | None,
                   langs: dict, source_language: str) -> dict[str, str]:
    """The task templates, ``{audio}`` where the processor's ``<|AUDIO|>`` goes."""
    def template(text: str) -> str:
        text = text.replace("{src}", source_language)
        if "{audio}" in text:
            return text
        if variant == "base":
            return AUDIO_SPAN + text
        chat = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": text}]}]
        rendered = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        if rendered.count(processor.audio_token) != 1:
            raise SourceError(f"the chat template renders {rendered.count(processor.audio_token)} "
                              f"{processor.audio_token} tokens for one audio: pass whole templates with {{audio}} "
                              "(--prompt-transcribe, --prompt-translate) or --variant base", param="hf")
        return rendered.replace(processor.audio_token, "{audio}")

    return task_prompts(template, prompt_transcribe, prompt_translate, langs, (DEFAULT_TRANSCRIBE, DEFAULT_TRANSLATE))


def check_source(src: HFDirSource) -> tuple[object, int, int]:
    """Configs and headers agree; -> (the full config, text hidden size, decoder layers)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(src.path)  # fills the sparse text_config's defaults in
    text, audio = config.text_config, config.audio_config
    pre = src.path / "preprocessor_config.json"
    if not pre.is_file():
        raise SourceError(f"{pre} is missing: --hf needs Qwen2-Audio's feature extractor config", param="hf")
    if not any((src.path / f).is_file() for f in TOKENIZER_FILES):
        raise SourceError(f"{src.path} has no tokenizer ({' or '.join(TOKENIZER_FILES)} is missing)", param="hf")
    import json

    fe = json.loads(pre.read_text())
    if int(fe.get("feature_size", audio.num_mel_bins)) != audio.num_mel_bins:
        raise ShapeMismatchError(f"{src.path}: the audio encoder takes {audio.num_mel_bins} mel bins but "
                                 f"preprocessor_config.json makes {fe.get('feature_size')}: the files come from "
                                 "different checkpoints", param="hf")
    need_shape(src, "multi_modal_projector.linear.weight", (text.hidden_size, audio.d_model), "the projector",
               "the config and the weights come from different checkpoints")
    need_shape(src, "embed_tokens.weight", (text.vocab_size, text.hidden_size), "the token embeddings",
               "the config and the weights come from different checkpoints")
    return config, int(text.hidden_size), int(text.num_hidden_layers)


def import_qwen2_audio(hf, out, *, variant: str = "auto", prompt_transcribe: str | None = None,
                       prompt_translate: str | None = None, languages: str | dict | None = None,
                       source_language: str = "en", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, dtype: str = "auto",
                       command: str | None = None) -> Path:
    """Import the Qwen2-Audio dir ``hf`` into the qwen2_audio model dir ``out``; -> ``out``.

    ``variant``: base, instruct or auto (instruct when the dir has a chat template); ``prompt_*``: an instruction
    or a whole template with ``{audio}``; ``languages``: "fr,de" or {code: name}, the translation targets (a
    translate prompt only when given); ``dtype``: auto keeps the stored dtype. Raises SourceError /
    ShapeMismatchError before loading any weight when the dir is not a Qwen2-Audio dir or its files disagree.
    """
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from ..families.qwen2_audio import Qwen2AudioSpeechLLM
    from ..modeldir import FORMAT_VERSION
    from ..tasks import PromptBook

    check_dtype(dtype)
    if variant not in VARIANTS:
        raise SlimError(f"unknown --variant {variant!r}: choose {', '.join(VARIANTS)}", param="variant")
    langs = languages_of(languages)
    if command is None:
        command = command_line(SOURCE, ["--hf", str(hf), "--out", str(out)])
    out_path = check_out(out)
    # 1. configs, headers and the tokenizer, before any weight is loaded
    src = read_hf_dir(Path(hf), ("qwen2_audio",), TITLE)
    config, hidden, layers = check_source(src)
    if variant == "auto":
        variant = "instruct" if has_chat_template(src.path) else "base"
    processor = AutoProcessor.from_pretrained(src.path)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in AUDIO_TOKENS + ((CHAT_EOS,) if variant == "instruct" else ())}
    absent = [t for t, i in ids.items() if i is None or i == tok.unk_token_id]
    if absent:
        raise SourceError(f"{src.path}: the tokenizer has no {', '.join(absent)} token: it is not Qwen2-Audio's "
                          "tokenizer", param="hf")
    if ids["<|AUDIO|>"] != config.audio_token_index:
        raise ShapeMismatchError(f"{src.path}: config.json's audio_token_index {config.audio_token_index} is not the "
                                 f"tokenizer's <|AUDIO|> ({ids['<|AUDIO|>']}): the files come from different "
                                 "checkpoints", param="hf")
    prompts = render_prompts(processor, variant, prompt_transcribe, prompt_translate, langs, source_language)
    PromptBook(prompts, langs, source_language)  # a template without {audio} (or with two) fails here

    # 2. the model, every weight read
    log.info("loading %s (%s) from %s", TITLE, variant, src.path)
    model = load_hf_model(Qwen2AudioForConditionalGeneration, src, dtype)

    # 3. the model dir
    fe = processor.feature_extractor
    spec = {"format_version": FORMAT_VERSION, "family": "qwen2_audio", "prompts": prompts, "languages": langs,
            "source_language": source_language, "max_audio_seconds": float(fe.chunk_length),
            "max_new_tokens": int(max_new_tokens)}
    if variant == "instruct":
        spec["eos_token"] = CHAT_EOS
    a = config.audio_config
    fmt = (f"Qwen2-Audio {variant} ({src.architecture}): encoder {a.encoder_layers} layers, d_model {a.d_model}, "
           f"{a.num_mel_bins} mel bins, {fe.chunk_length} s window; linear projector {a.d_model} -> {hidden}; "
           f"{config.text_config.model_type} decoder {layers} layers, hidden {hidden}")
    save_import(Qwen2AudioSpeechLLM(spec, processor, model), out_path, SOURCE, command, src, fmt, variant=variant)
    log.info("wrote %s", out_path)
    return out_path


def build_parser():
    p = hf_parser(SOURCE, "Import a published Qwen2-Audio dir (Qwen2-Audio-7B or -7B-Instruct) as a qwen2_audio "
                  "model dir.", "the Hugging Face Qwen2-Audio dir (config.json, weights, preprocessor_config.json, "
                  "tokenizer)",
                  transcribe_help=f"instruction (default {DEFAULT_TRANSCRIBE!r}) or a whole template with {{audio}}",
                  translate_help=f"the same for translate (default {DEFAULT_TRANSLATE!r}; {{lang}}, {{lang_name}}: the "
                                 "target, {src}: the source)",
                  max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                  source_language_help="the spoken language's code (default en): {src} in the prompts")
    p.add_argument("--variant", default="auto", choices=VARIANTS,
                   help="prompt format: base (audio + instruction) or instruct (the dir's chat template); auto: "
                        "instruct when the dir has a chat template")
    return p

def main(argv: list[str]) -> int:
    return run_import(SOURCE, TITLE, build_parser(), import_qwen2_audio, argv)
