"""``slimspeech import <source>``: bring a speech LLM trained elsewhere into a slimspeech model dir.

    slimspeech import slam --encoder WHISPER_DIR --llm CAUSAL_LM_DIR --projector model.pt --out DIR
    slimspeech import qwen2-audio --hf Qwen2-Audio-7B-Instruct/ --out DIR
    slimspeech import voxtral --hf Voxtral-Mini-3B-2507/ --languages fr,de --out DIR
    slimspeech import granite-speech --hf granite-speech-3.3-2b/ --languages fr,de --out DIR
    slimspeech import --help                      # the sources

    from speechllm.importers import import_slam   # the Python API (speechllm.importers.slam_parts)
    from speechllm.importers import import_qwen2_audio   # (speechllm.importers.qwen2_audio_parts)
    from speechllm.importers import import_voxtral       # (speechllm.importers.voxtral_parts)
    from speechllm.importers import import_granite_speech   # (speechllm.importers.granite_speech_parts)

Each source has a module here that reads the published layout (recorded in that module with where each
fact comes from), checks that the parts fit together before any weight is loaded, and writes an
ordinary model dir (``speechllm.json`` + ``provenance.json`` naming the sources, their sha256 and the
command), which ``load_model``, ``slimspeech inspect``, ``prune``, ``heal`` and ``serve`` take as they are.
An import never instantiates the model it refuses.
"""

from __future__ import annotations

import importlib

from ..errors import SlimError

#: source name -> ("module:function" taking argv, one line of help); imported when it runs
IMPORTERS: dict[str, tuple[str, str]] = {
    "slam": ("speechllm.importers.slam_parts:main",
             "SLAM-LLM: Hugging Face Whisper encoder + linear projector (model.pt) + causal LM (+ PEFT LoRA)"),
    "qwen2-audio": ("speechllm.importers.qwen2_audio_parts:main",
                    "Qwen2-Audio-7B / -7B-Instruct: a published Hugging Face dir (--hf DIR)"),
    "voxtral": ("speechllm.importers.voxtral_parts:main",
                "Voxtral-Mini-3B / -Small-24B (2507): a published Hugging Face dir (--hf DIR; needs mistral-common)"),
    "granite-speech": ("speechllm.importers.granite_speech_parts:main",
                       "granite-speech-3.3-2b / -8b: a published Hugging Face dir (--hf DIR), audio LoRA merged"),
}

#: config.json model_type -> the source (and its flag) that imports a dir of it
HF_SOURCES = {"qwen2_audio": "qwen2-audio --hf", "voxtral": "voxtral --hf", "granite_speech": "granite-speech --hf",
              "whisper": "slam --encoder"}


class SourceError(SlimError):
    """A source checkpoint that cannot be imported: a missing file, an unknown architecture, a layout we
    do not read."""

    param = "source"


class ShapeMismatchError(SourceError):
    """Two sources that do not fit together: the projector and the encoder or the LLM."""


class AdapterMismatchError(ShapeMismatchError):
    """A LoRA adapter trained on another base model than the LLM given."""

    param = "lora"


def add_shared_options(p, *, transcribe_help: str, translate_help: str, max_new_tokens: int,
                       dtypes=("float32", "float16", "bfloat16"), dtype_help: str = "auto: as stored",
                       source_language_help: str = "the spoken language's code (default en)") -> None:
    """The options every ``slimspeech import <source>`` takes after its sources: the prompts, the languages, the
    answer length, the dtype and ``--out`` (each source's parser adds its own sources first)."""
    p.add_argument("--prompt-transcribe", default=None, metavar="TEXT", help=transcribe_help)
    p.add_argument("--prompt-translate", default=None, metavar="TEXT", help=translate_help)
    p.add_argument("--languages", default=None, metavar="CODES",
                   help="translation targets, e.g. fr,de or xx=Name (default: transcription only)")
    p.add_argument("--source-language", default="en", help=source_language_help)
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"most tokens generated per clip (default {max_new_tokens})")
    p.add_argument("--dtype", default="auto", choices=["auto", *dtypes], help=dtype_help)
    p.add_argument("--out", required=True, metavar="DIR", help="the model dir to write")


def usage() -> str:
    width = max(map(len, IMPORTERS))
    lines = ["usage: slimspeech import <source> [options]   (slimspeech import <source> --help)", "", "sources:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in IMPORTERS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """The ``import`` verb: dispatch to the source's own ``main``."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    source, rest = argv[0], argv[1:]
    if source not in IMPORTERS:
        raise SourceError(f"unknown source {source!r}: slimspeech imports {', '.join(IMPORTERS)} "
                          "(slimspeech import --help)")
    module, _, func = IMPORTERS[source][0].partition(":")
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


def __getattr__(name: str):
    # the Python API without importing torch/transformers when only the verb table is read
    if name == "import_slam":
        from .slam_parts import import_slam

        return import_slam
    if name == "import_qwen2_audio":
        from .qwen2_audio_parts import import_qwen2_audio

        return import_qwen2_audio
    if name == "import_voxtral":
        from .voxtral_parts import import_voxtral

        return import_voxtral
    if name == "import_granite_speech":
        from .granite_speech_parts import import_granite_speech

        return import_granite_speech
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
