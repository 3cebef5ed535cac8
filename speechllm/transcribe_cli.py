"""``slimspeech transcribe``: one line of text per audio file.

    slimspeech transcribe clip.wav                                    # the embedded demo model
    slimspeech transcribe --model DIR --task translate --target-lang fr a.wav b.flac
    slimspeech transcribe --dtype bfloat16 clip.wav                   # faster on a CPU with AVX512-BF16 / AMX

Every file is decoded and checked before the model loads, so a bad file costs nothing: it is one
``error: ...`` line on stderr and exit code 2 (see speechllm.audio for what a file may be).
"""

from __future__ import annotations

import argparse

from .audio import load_audio
from .devices import DTYPE_CHOICES, resolve_dtype
from .generate import transcribe
from .modeldir import default_model_dir, load_model, read_spec
from .tasks import PromptBook


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech transcribe", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files: wav, flac, ogg, webm, mp4/m4a, mp3, aac")
    p.add_argument("--model", default=None, help="model dir (default: the embedded demo model)")
    p.add_argument("--task", default="transcribe", help="transcribe | translate")
    p.add_argument("--target-lang", default=None, help="target language of translate (e.g. fr, de)")
    p.add_argument("--batch-size", type=int, default=8, help="clips decoded together (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="most tokens generated per clip (default: the model's max_new_tokens)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                   help="weights and activations (default: float32; auto: bfloat16 on CUDA, else float32; "
                        "bfloat16 is faster on a CPU with AVX512-BF16 or AMX)")
    return p


def main(argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # stdout/stderr stay one line per file / per error
    model_dir = args.model or default_model_dir()
    spec = read_spec(model_dir)
    task = PromptBook.from_spec(spec).resolve(args.task, args.target_lang)
    limit = float(spec.get("max_audio_seconds", 30.0))
    wavs = [load_audio(f, max_seconds=limit) for f in args.files]
    model = load_model(model_dir, device=args.device, dtype=resolve_dtype(args.dtype, args.device))
    for text in transcribe(model, wavs, [task] * len(wavs), args.max_new_tokens, args.batch_size):
        print(text, flush=True)
    return 0
