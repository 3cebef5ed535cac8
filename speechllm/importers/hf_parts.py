"""What every ``slimspeech import`` of a published Hugging Face speech-LLM dir shares (qwen2-audio, voxtral,
granite-speech): reading the dir from its configs and safetensors headers, loading it with every weight
accounted for, prompts, and writing the model dir with its provenance.

    src = read_hf_dir(Path("Qwen2-Audio-7B-Instruct"), ("qwen2_audio",), "Qwen2-Audio")
    model, info = load_hf_model(Qwen2AudioForConditionalGeneration, src, "auto")
    write_import(Qwen2AudioSpeechLLM(spec, processor, model), out, provenance)

A published dir (the layout ``save_pretrained`` writes, as the model pages list it): ``config.json`` (the
architecture, ``model_type``, the nested ``text_config`` / ``audio_config``), the weights as
``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
(its ``weight_map``: tensor name -> shard), ``generation_config.json``, the processor's files
(``preprocessor_config.json`` and the tokenizer's). Nothing is instantiated before the configs and the
tensor headers agree, and a load that leaves a weight of the model unread (another layout) is refused:
transformers would otherwise fill it with random values.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import SlimError
from ..provenance import Provenance, source_record
from . import HF_SOURCES, ShapeMismatchError, SourceError, add_shared_options
from .slam_parts import DTYPES, _read_json, parse_languages, read_config_dir

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"


@dataclass
class HFDirSource:
    path: Path
    config: dict  # config.json as written (nested sub-configs may hold only the fields that differ from defaults)
    tensors: dict[str, dict]  # tensor name -> {"dtype", "shape"} from the safetensors headers
    flag: str

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or [self.config.get("model_type")])[0]

    def shape(self, suffix: str) -> list[int] | None:
        """The shape of the one tensor whose name ends with ``suffix`` (None: no such tensor)."""
        hits = [v["shape"] for k, v in self.tensors.items() if k.endswith(suffix)]
        return hits[0] if len(hits) == 1 else None


def read_hf_dir(path: Path, model_types: tuple[str, ...], title: str, flag: str = "--hf") -> HFDirSource:
    """Check a published HF dir (config.json of one of ``model_types``, every weight file present and readable)
    and read its tensor headers; -> HFDirSource. No weight is read."""
    from ..inspect import read_header  # safetensors headers only: the 8-byte length + JSON

    path, cfg = read_config_dir(
        path, flag, f"a Hugging Face {title} dir", lambda c: c.get("model_type") in model_types,
        lambda c: f"; {flag} takes a Hugging Face {title} dir (model_type {' or '.join(model_types)})"
                  + (f": import this one with slimspeech import {HF_SOURCES[c['model_type']]} {path}"
                     if c.get("model_type") in HF_SOURCES else ""))
    if (path / INDEX_FILE).is_file():
        index = _read_json(path / INDEX_FILE, flag)
        files = sorted(set((index.get("weight_map") or {}).values()))
        if not files:
            raise SourceError(f"{path / INDEX_FILE} has no weight_map: the download is incomplete",
                              param=flag.lstrip("-"))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise SourceError(f"{path} is missing {len(missing)} of the {len(files)} weight shards its {INDEX_FILE} "
                              f"lists ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): download "
                              "them too", param=flag.lstrip("-"))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        other = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("consolidated*"))
        hint = (f" ({', '.join(other)} is another format: slimspeech reads the transformers safetensors weights)"
                if other else "")
        raise SourceError(f"{path} has no weights (model.safetensors or {INDEX_FILE} is missing){hint}",
                          param=flag.lstrip("-"))
    tensors: dict[str, dict] = {}
    for f in files:
        try:
            tensors.update(read_header(path / f))
        except SlimError as exc:  # a truncated download
            raise SourceError(str(exc), param=flag.lstrip("-")) from None
    return HFDirSource(path, cfg, tensors, flag)


def need_shape(src: HFDirSource, suffix: str, want: tuple[int, ...], what: str, fix: str) -> None:
    """ShapeMismatchError unless the tensor named ``...suffix`` has shape ``want``."""
    got = src.shape(suffix)
    if got is None:
        raise SourceError(f"unknown architecture: {src.path} has no tensor named ...{suffix} ({what}); the weights are "
                          "not of the layout this import reads", param=src.flag.lstrip("-"))
    if tuple(got) != tuple(want):
        raise ShapeMismatchError(f"{src.path}: {what} {suffix} has shape {tuple(got)} but config.json implies "
                                 f"{tuple(want)}: {fix}", param=src.flag.lstrip("-"))


def load_hf_model(model_class, src: HFDirSource, dtype: str):
    """``model_class.from_pretrained`` with every weight of the model read from the dir; -> the model in eval mode."""
    torch_dtype = "auto" if dtype == "auto" else DTYPES[dtype]
    model, info = model_class.from_pretrained(src.path, dtype=torch_dtype, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = [k for k, *_ in info.get("mismatched_keys") or []]
    if missing or mismatched:
        names = missing or mismatched
        raise SourceError(f"{src.path}: {len(names)} weights of {model_class.__name__} are "
                          f"{'not in the checkpoint' if missing else 'of other shapes there'} "
                          f"(e.g. {', '.join(names[:3])}): the weights are not of the published layout this "
                          "transformers reads", param=src.flag.lstrip("-"))
    if unexpected:
        log.warning("%s: %d tensors of the checkpoint are not used by %s (e.g. %s)", src.path, len(unexpected),
                    model_class.__name__, ", ".join(unexpected[:3]))
    return model.eval()


def check_out(out) -> Path:
    """``out`` may be new, empty or a model dir (replaced): never another folder (a typo like ``--out .``)."""
    from ..modeldir import SPEC_FILE

    out_path = Path(out)
    if out_path.exists() and not (out_path / SPEC_FILE).is_file() and any(out_path.iterdir()):
        raise SlimError(f"--out {out_path} exists and is not a slimspeech model dir: choose a new path (an existing "
                        "model dir is replaced)", param="out")
    return out_path


def check_dtype(dtype: str) -> None:
    if dtype != "auto" and dtype not in DTYPES:
        raise SlimError(f"unknown --dtype {dtype!r}: choose auto, {', '.join(DTYPES)}", param="dtype")


def languages_of(languages) -> dict[str, str]:
    return languages if isinstance(languages, dict) else parse_languages(languages)


def task_prompts(template, prompt_transcribe: str | None, prompt_translate: str | None, langs: dict,
                 defaults: tuple[str, str]) -> dict[str, str]:
    """The task templates: ``template(text)`` of the given or default (transcribe, translate) text; translate only
    with target languages (``--prompt-translate`` without ``--languages`` is refused)."""
    prompts = {"transcribe": template(prompt_transcribe or defaults[0])}
    if langs:
        prompts["translate"] = template(prompt_translate or defaults[1])
    elif prompt_translate:
        raise SlimError("--prompt-translate needs --languages (the target languages)", param="languages")
    return prompts


def command_line(source: str, argv: list[str]) -> str:
    return f"slimspeech import {source} " + shlex.join(argv)


def save_import(model, out: Path, source: str, command: str, src: HFDirSource, source_format: str, **extra) -> Path:
    """Write the imported ``model`` to ``out`` with its provenance (speechllm.provenance: the source dir's files and
    sha256, the command, the layout read); -> ``out``."""
    prov = Provenance.imported(source, model, command=command, sources={"hf": source_record(src.path)},
                               source_format={"hf": source_format, **extra})
    return model.save(out, provenance=prov.to_dict())


def hf_parser(source: str, description: str, hf_help: str, **shared):
    """The parser of ``slimspeech import <source>``: ``--hf DIR``, then the options every import takes
    (``shared``: ``add_shared_options``'s keywords)."""
    import argparse

    p = argparse.ArgumentParser(prog=f"slimspeech import {source}", description=description)
    p.add_argument("--hf", required=True, metavar="DIR", help=hf_help)
    add_shared_options(p, dtypes=tuple(DTYPES), **shared)
    return p


def run_import(source: str, title: str, parser, import_fn, argv: list[str]) -> int:
    """A ``slimspeech import <source> --hf DIR ...`` verb: parse ``argv``, run ``import_fn(hf, out, **options)``
    (each option by its dest name), print one result line."""
    from transformers.utils import logging as hf_logging

    options = vars(parser.parse_args(argv))
    hf_logging.disable_progress_bar()  # the verb prints one result line
    out = import_fn(options.pop("hf"), options.pop("out"), command=command_line(source, argv), **options)
    fmt = Provenance.read(out).extra["source_format"]
    print(f"imported {title} -> {out}: {fmt['hf']}")
    return 0
