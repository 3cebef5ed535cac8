"""``slimspeech import <source>``: bring a speech LLM trained elsewhere into a slimspeech model dir.

    slimspeech import slam --encoder WHISPER_DIR --llm CAUSAL_LM_DIR --projector model.pt --out DIR
    slimspeech import --help                      # the sources

    from speechllm.importers import import_slam   # the Python API (speechllm.importers.slam_parts)

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
}


class SourceError(SlimError):
    """A source checkpoint that cannot be imported: a missing file, an unknown architecture, a layout we
    do not read."""

    param = "source"


class ShapeMismatchError(SourceError):
    """Two sources that do not fit together: the projector and the encoder or the LLM."""


class AdapterMismatchError(ShapeMismatchError):
    """A LoRA adapter trained on another base model than the LLM given."""

    param = "lora"


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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
