"""``slimspeech inspect DIR``: what a model dir holds, from its configs and safetensors headers alone.

    slimspeech inspect speechllm/assets/demo-pruned          # a readable summary
    slimspeech inspect --json models/slam-asr                # the same as JSON

    from speechllm.inspect import inspect_model_dir
    info = inspect_model_dir("models/slam-asr")   # dict: family, encoder / projector / decoder, parameters, ...
    info["parameters"]["decoder_share"]            # e.g. 0.91 for Whisper-large + a 7B LLM

Per part (encoder, projector, decoder): its shape (layers, widths), its parameter count and dtype; the
decoder's share of all parameters (the part layer pruning acts on), the prompts, languages and the
provenance lineage (the chain of model dirs this one derives from, and an import's sources).

Nothing is instantiated and no weight is read: a safetensors file starts with an 8-byte little-endian
header length and a JSON header giving every tensor's dtype and shape (the safetensors format), which
is all the counting needs, so inspecting a 7B model dir takes milliseconds and no torch import.
Parameters are the stored tensors (tied embeddings stored once), what ``model.num_parameters()``
counts after loading.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
from collections import Counter
from pathlib import Path

from .errors import ModelDirError
from .modeldir import read_spec
from .provenance import Provenance, summary_rows

#: safetensors dtype codes -> torch's names (and bytes per element)
DTYPE_NAMES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
               "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1), "I64": ("int64", 8),
               "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1), "BOOL": ("bool", 1)}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def read_header(path: Path) -> dict[str, dict]:
    """{tensor name: {"dtype", "shape"}} from a safetensors file's header (the rest of the file is not read)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 1024 * 1024:  # the format caps headers at 100 MB; more is not a safetensors file
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError) as exc:
        raise ModelDirError(f"{path} is not a readable safetensors file ({exc}): copy or export the model dir "
                            "again") from None
    header.pop("__metadata__", None)
    return header


#: stored buffers that are not parameters: a BatchNorm's running statistics (Granite-Speech's conformer)
BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def _tensors(folder: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        out.update(read_header(file))
    return {k: v for k, v in out.items() if not k.endswith(BUFFER_SUFFIXES)}


def _count(tensors: dict[str, dict]) -> dict:
    """-> {"parameters", "bytes", "dtype"}: the dtype most parameters have (``mixed`` lists them all)."""
    params, nbytes, by_dtype = 0, 0, Counter()
    for t in tensors.values():
        n = 1
        for d in t["shape"]:
            n *= int(d)
        name, size = DTYPE_NAMES.get(t["dtype"], (t["dtype"].lower(), 0))
        params += n
        nbytes += n * size
        by_dtype[name] += n
    dtype = None
    if by_dtype:
        dtype = next(iter(by_dtype)) if len(by_dtype) == 1 else \
            "mixed: " + ", ".join(f"{k} {v / params:.0%}" for k, v in by_dtype.most_common())
    return {"parameters": params, "bytes": nbytes, "dtype": dtype}


def _layer_indices(tensors: dict[str, dict]) -> set[int]:
    return {int(m.group(1)) for name in tensors for m in [_LAYER.search(name)] if m}


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: the model dir is incomplete")
    return json.loads(path.read_text())


def _decoder_part(cfg: dict, tensors: dict[str, dict]) -> dict:
    text = cfg.get("text_config") or cfg
    stored = _layer_indices(tensors)
    part = {"architecture": (cfg.get("architectures") or text.get("architectures") or [None])[0],
            "model_type": text.get("model_type"), "layers": int(text["num_hidden_layers"]),
            "hidden_size": text.get("hidden_size"), "intermediate_size": text.get("intermediate_size"),
            "attention_heads": text.get("num_attention_heads"), "kv_heads": text.get("num_key_value_heads"),
            "vocab_size": text.get("vocab_size"), "tie_word_embeddings": bool(text.get("tie_word_embeddings")),
            **_count(tensors)}
    if stored and len(stored) != part["layers"]:
        part["warning"] = f"config says {part['layers']} layers, the weights hold {len(stored)}"
    return part


def _slam_parts(path: Path, spec: dict) -> dict:
    enc_dir = path / "encoder"
    ecfg = _read_config(enc_dir / "config.json")
    kind = (spec.get("encoder") or {}).get("kind", "slimspeech")
    etensors = _tensors(enc_dir)
    if kind == "hf_whisper":
        if any(k.startswith(("model.decoder.", "decoder.")) for k in etensors):  # a whole Whisper checkpoint
            etensors = {k: v for k, v in etensors.items() if k.startswith(("model.encoder.", "encoder."))}
        pre = enc_dir / "preprocessor_config.json"
        chunk = json.loads(pre.read_text()).get("chunk_length") if pre.is_file() else None
        encoder = {"kind": kind, "architecture": "WhisperEncoder", "layers": ecfg.get("encoder_layers"),
                   "d_model": ecfg.get("d_model"), "heads": ecfg.get("encoder_attention_heads"),
                   "ffn_dim": ecfg.get("encoder_ffn_dim"), "n_mels": ecfg.get("num_mel_bins"),
                   "frames_per_second": 50.0, "padded_seconds": chunk}
    else:
        encoder = {"kind": kind, "architecture": "SpeechEncoder", "layers": ecfg.get("layers"),
                   "d_model": ecfg.get("d_model"), "heads": ecfg.get("heads"), "ffn_dim": ecfg.get("ffn_dim"),
                   "n_mels": ecfg.get("n_mels"), "frames_per_second": 100.0 / ecfg.get("downsample", 4)}
    encoder.update(_count(etensors))
    pcfg = dict(spec.get("projector") or {})
    projector = {**pcfg, **_count(read_header(path / "projector.safetensors")
                                  if (path / "projector.safetensors").is_file() else {})}
    dtensors = _tensors(path / "decoder")
    decoder = _decoder_part(_read_config(path / "decoder" / "config.json"), dtensors)
    return {"encoder": encoder, "projector": projector, "decoder": decoder}


#: families kept as a Hugging Face dir under hf/: (encoder tensor prefix, projector tensor prefix, encoder class)
HF_FAMILIES = {
    "qwen2_audio": ("audio_tower.", "multi_modal_projector.", "Qwen2AudioEncoder"),
    "voxtral": ("audio_tower.", "multi_modal_projector.", "VoxtralEncoder"),
    "granite_speech": ("encoder.", "projector.", "GraniteSpeechCTCEncoder"),
}


def _first(d: dict, *keys):
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _shape(tensors: dict[str, dict], suffix: str) -> list | None:
    return next((v["shape"] for k, v in tensors.items() if k.endswith(suffix)), None)


def _hf_parts(path: Path, spec: dict) -> dict:
    """Encoder, projector and decoder of an hf/ dir, by the published weight names (the first component of a
    name says the part: ``audio_tower.`` / ``encoder.``, ``multi_modal_projector.`` / ``projector.``, the rest is
    the language model)."""
    family = spec["family"]
    enc_prefix, proj_prefix, enc_class = HF_FAMILIES[family]
    cfg = _read_config(path / "hf" / "config.json")
    tensors = _tensors(path / "hf")
    enc = {k: v for k, v in tensors.items() if k.startswith(enc_prefix)}
    proj = {k: v for k, v in tensors.items() if k.startswith(proj_prefix)}
    dec = {k: v for k, v in tensors.items() if k not in enc and k not in proj}
    a = cfg.get("audio_config") or cfg.get("encoder_config") or {}
    text = dict(cfg.get("text_config") or {})
    outer = (cfg.get("architectures") or [family])[0]
    text["architectures"] = [f"{text.get('model_type', 'the')} language model of {outer}"]
    pre = path / "hf" / "preprocessor_config.json"
    fe = json.loads(pre.read_text()) if pre.is_file() else {}
    encoder = {"kind": f"{family}_encoder", "architecture": enc_class,
               "layers": _first(a, "encoder_layers", "num_hidden_layers", "num_layers"),
               "d_model": _first(a, "d_model", "hidden_size", "hidden_dim"),
               "heads": _first(a, "encoder_attention_heads", "num_attention_heads", "num_heads"),
               "ffn_dim": _first(a, "encoder_ffn_dim", "intermediate_size"),
               "n_mels": _first(a, "num_mel_bins") or _first({**fe, **(fe.get("melspec_kwargs") or {})}, "n_mels",
                                                             "feature_size"), **_count(enc)}
    if family == "qwen2_audio":
        lin = _shape(proj, "linear.weight")
        projector = {"kind": "linear", "in_dim": lin[1] if lin else None, "out_dim": lin[0] if lin else None}
    elif family == "voxtral":  # 4 encoder frames stacked (intermediate_size = 4 x width) -> Linear -> GELU -> Linear
        l1, l2 = _shape(proj, "linear_1.weight"), _shape(proj, "linear_2.weight")
        width = encoder["d_model"] or 1
        projector = {"kind": "stack_mlp", "activation": cfg.get("projector_hidden_act"),
                     "stack": l1[1] // width if l1 else None, "in_dim": width, "hidden_dim": l1[0] if l1 else None,
                     "out_dim": l2[0] if l2 else None}
    else:  # Granite-Speech: a window-level Q-Former, window_size frames -> window_size / downsample_rate queries
        q = cfg.get("projector_config") or {}
        lin = _shape(proj, "linear.weight")
        projector = {"kind": "qformer", "stack": cfg.get("downsample_rate"), "window": cfg.get("window_size"),
                     "in_dim": q.get("encoder_hidden_size"), "hidden_dim": q.get("hidden_size"),
                     "out_dim": lin[0] if lin else None, "layers": q.get("num_hidden_layers")}
    projector.update(_count(proj))
    return {"encoder": encoder, "projector": projector, "decoder": _decoder_part(text, dec)}


def inspect_model_dir(path) -> dict:
    """Everything ``slimspeech inspect`` shows, as a dict (see the module docstring); reads no weight."""
    path = Path(path)
    spec = read_spec(path)
    family = spec["family"]
    parts = _slam_parts(path, spec) if family == "slam" else _hf_parts(path, spec)
    counts = {name: part["parameters"] for name, part in parts.items()}
    total = sum(counts.values())
    dtypes = {part["dtype"] for part in parts.values() if part["dtype"]}
    prov = Provenance.read(path)  # any schema, upgraded; an importer's sources and command are in extra
    from .tasks import PromptBook

    book = PromptBook.from_spec(spec)
    info = {
        "dir": str(path), "family": family, "format_version": spec.get("format_version"), **parts,
        "parameters": {"total": total, **counts,
                       "decoder_share": round(counts["decoder"] / total, 4) if total else None},
        "weight_bytes": sum(part["bytes"] for part in parts.values()),
        "dtype": next(iter(dtypes)) if len(dtypes) == 1 else "mixed: " + ", ".join(
            f"{name} {part['dtype']}" for name, part in parts.items()),
        "tasks": book.supported(), "prompts": spec.get("prompts"), "languages": spec.get("languages", {}),
        "source_language": spec.get("source_language", "en"),
        "bos_position": spec.get("bos_position", "start") if family == "slam" else None,
        "max_audio_seconds": spec.get("max_audio_seconds"), "max_new_tokens": spec.get("max_new_tokens"),
        "provenance": prov.summary(path, parts["decoder"]["layers"]),
    }
    return info


def _n(x: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return str(x)


def format_report(info: dict) -> str:
    """The human-readable summary ``slimspeech inspect`` prints."""
    e, p, d, c = info["encoder"], info["projector"], info["decoder"], info["parameters"]
    total = c["total"] or 1
    enc = f"{e['kind']} ({e['architecture']}): {e['layers']} layers, d_model {e['d_model']}, {e['n_mels']} mel bins"
    if e.get("padded_seconds"):
        enc += f", padded to {e['padded_seconds']} s"
    if p.get("kind") == "linear":
        proj = f"linear: {p.get('in_dim')} -> {p.get('out_dim')}"
    elif p.get("kind") == "qformer":
        proj = (f"qformer ({p.get('layers')} layers): windows of {p.get('window')} frames -> "
                f"{(p.get('window') or 0) // (p.get('stack') or 1)} queries, {p.get('in_dim')} -> "
                f"{p.get('hidden_dim')} -> {p.get('out_dim')}")
    elif str(p.get("kind")).startswith("ctc_"):
        proj = (f"{p['kind']}: CTC head {p.get('in_dim')} -> {p.get('vocab_size')} + blank, MLP {p.get('stack')} x "
                f"{p.get('in_dim')} -> {p.get('hidden_dim')} -> {p.get('out_dim')}")
    else:
        act = f" ({p['activation']})" if p.get("kind") == "stack_mlp" and p.get("activation") else ""
        proj = (f"{p.get('kind')}{act}: {p.get('stack')} x {p.get('in_dim')} -> {p.get('hidden_dim')} -> "
                f"{p.get('out_dim')}")
    dec = f"{d['architecture']}: {d['layers']} layers, hidden {d['hidden_size']}, vocab {d['vocab_size']}"
    rows = [("family", f"{info['family']} (format {info['format_version']})")]
    for name, text, part in (("encoder", enc, e), ("projector", proj, p), ("decoder", dec, d)):
        size = f"{_n(part['parameters'])} params, {part['parameters'] / total:.1%}, {part['dtype']}"
        rows.append((name, f"{text}  [{size}]"))
        if part.get("warning"):
            rows.append(("", f"warning: {part['warning']}"))
    rows.append(("parameters", f"{c['total']:,} ({_n(c['total'])}); {info['weight_bytes'] / 1e6:,.1f} MB of weights"))
    share = f"{c['decoder_share']:.1%} of the parameters are the decoder's ({d['layers']} layers)"
    rows.append(("decoder share", share))
    rows.append(("dtype", info["dtype"]))
    langs = ", ".join(f"{k} {v}" for k, v in info["languages"].items())
    rows.append(("tasks", ", ".join(info["tasks"]) + f" (source {info['source_language']}"
                 + (f"; {langs})" if langs else ")")))
    for i, (task, tpl) in enumerate((info["prompts"] or {}).items()):
        rows.append(("prompts" if i == 0 else "", f"{task}: {tpl!r}"))
    if info.get("bos_position"):
        rows.append(("bos", info["bos_position"]))
    rows.append(("window", f"{info['max_audio_seconds']} s audio, up to {info['max_new_tokens']} new tokens"))
    rows += summary_rows(info["provenance"])
    width = max(len(k) for k, _ in rows)
    return "\n".join([info["dir"]] + [f"  {k:<{width}}  {v}" for k, v in rows])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech inspect",
                                description="What a model dir holds, from its configs and safetensors headers "
                                            "alone: parts, shapes, parameters, the decoder's share, prompts, lineage.")
    p.add_argument("model", metavar="DIR", help="a model dir (slam, qwen2_audio, voxtral, granite_speech)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    info = inspect_model_dir(args.model)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0
