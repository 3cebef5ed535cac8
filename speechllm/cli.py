"""The ``slimspeech`` command: one verb table, each verb's function imported only when it runs.

    slimspeech --help
    slimspeech transcribe [--model DIR] [--task translate --target-lang fr] FILE...

A verb is ``"module:function"``; the function takes ``argv`` (list[str]) and returns an exit
code. ``SlimError`` (bad input) becomes one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

VERBS: dict[str, tuple[str, str]] = {
    "make-data": ("prune_tools.data.make:main", "synthesize the built-in en->fr/de speech benchmark"),
    "train": ("prune_tools.train:main", "train the demo SpeechLLM on the benchmark (staged, resumable)"),
    "analyze": ("prune_tools.analyze:main", "measure decoder-layer redundancy (angular distances)"),
    "prune": ("prune_tools.prune:main", "remove a contiguous block of decoder layers"),
    "heal": ("prune_tools.heal:main", "heal a pruned model (LoRA on the decoder + projector)"),
    "evaluate": ("prune_tools.evaluate:main", "WER / BLEU / chrF per split and task, vs a base model"),
    "sweep": ("prune_tools.sweep:main", "prune + heal + evaluate over pruning fractions"),
    "agreement": ("prune_tools.agreement:main", "block-ranking agreement between analyses (the Figure-1 grid)"),
    "export": ("prune_tools.export:main", "export the final shared ASR + AST backbone"),
    "transcribe": ("speechllm.transcribe_cli:main", "transcribe or translate audio files"),
    "serve": ("server.main:cli", "serve models over the OpenAI audio API"),
    "loadtest": ("loadtests.run:main", "latency/throughput under load, pruned vs base, over HTTP"),
    "compare": ("prune_tools.report:main", "one report: size, memory, quality and speed of base vs pruned"),
    "import": ("speechllm.importers:main", "bring a speech LLM trained elsewhere (SLAM-LLM) into a model dir"),
    "inspect": ("speechllm.inspect:main", "a model dir's parts, shapes, parameters, decoder share, prompts, lineage"),
    "twin": ("speechllm.twins:main", "a model dir with random weights at a published model's shape (Llama-3.2-1B, ...)"),
}


def version() -> str:
    """The installed distribution's version (pyproject.toml), or the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("slimspeech")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: slimspeech <verb> [options]   (slimspeech <verb> --help for a verb's options;",
             "       slimspeech --version)", "", "verbs:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .errors import SlimError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        print(f"slimspeech {version()}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}: choose one of {', '.join(VERBS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    module, _, func = VERBS[verb][0].partition(":")
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except SlimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
