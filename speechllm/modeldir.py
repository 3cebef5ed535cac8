"""The self-describing model dir: ``speechllm.json`` (what it is) + ``provenance.json`` (where it came from).

    model = load_model("path/to/dir")      # any family
    model.save("out/dir", provenance=prov.to_dict())   # prov: a speechllm.provenance.Provenance

Saves are atomic: everything is written into a hidden sibling temp dir, which then replaces
the target in one rename, so a crash never leaves a half-written model dir behind.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import ModelDirError

SPEC_FILE = "speechllm.json"
PROVENANCE_FILE = "provenance.json"
FORMAT_VERSION = 1
FAMILIES = {
    "slam": "speechllm.families.slam:SlamSpeechLLM",
    "qwen2_audio": "speechllm.families.qwen2_audio:Qwen2AudioSpeechLLM",
    "voxtral": "speechllm.families.voxtral:VoxtralSpeechLLM",
    "granite_speech": "speechllm.families.granite_speech:GraniteSpeechSpeechLLM",
}
DEMO_DIR = Path(__file__).parent / "assets" / "demo"


def default_model_dir() -> Path:
    """The embedded demo model shipped inside the package."""
    if not (DEMO_DIR / SPEC_FILE).is_file():
        raise ModelDirError(f"the embedded demo model is missing from {DEMO_DIR}: pass --model DIR")
    return DEMO_DIR


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be read by others (a server's user)
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a fresh temp dir next to ``path``; on success it replaces ``path`` (old one removed)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _import_hint(path: Path) -> str:
    """For a published dir of a source ``slimspeech import`` reads: the command that makes a model dir of it."""
    from .importers import HF_SOURCES

    try:
        model_type = read_json(path / "config.json").get("model_type")
    except (OSError, ValueError, AttributeError):
        return ""
    source = HF_SOURCES.get(model_type)
    if not source:
        return ""
    return f" (a {model_type} dir: import it first, slimspeech import {source} {path} --out MODEL_DIR)"


def read_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model dir not found: {path} (pass an existing model dir)")
    spec_path = path / SPEC_FILE
    if not spec_path.is_file():
        raise ModelDirError(f"{path} is not a slimspeech model dir: it has no {SPEC_FILE}{_import_hint(path)}")
    try:
        spec = read_json(spec_path)
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{spec_path} is not valid JSON ({exc}): re-export the model") from None
    if spec.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{spec_path} has format_version {spec.get('format_version')!r}; "
                            f"this slimspeech reads {FORMAT_VERSION}: re-export the model")
    if spec.get("family") not in FAMILIES:
        raise ModelDirError(f"{spec_path}: unknown family {spec.get('family')!r} "
                            f"(known: {', '.join(FAMILIES)})")
    return spec


def read_provenance(path: str | Path) -> dict:
    """``provenance.json`` of a model dir as written ({} without one): what ``model.provenance`` holds.
    For the typed, schema-upgraded view use ``speechllm.provenance.Provenance.read(path)``."""
    from .provenance import read_dict  # the one module that reads and writes provenance; it imports this one

    return read_dict(path)


def check_weight_files(path: str | Path) -> None:
    """Every ``*.safetensors`` under the model dir must open (header and size agree); a truncated or
    corrupt file raises ModelDirError naming it (relative to the dir, so no machine path leaks into
    an API answer). Reads headers only."""
    from safetensors import safe_open

    path = Path(path)
    for file in sorted(path.rglob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception as exc:  # safetensors raises SafetensorError for truncation, bad headers, ...
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ModelDirError(f"{file.relative_to(path)} is unreadable ({reason}): the file is truncated or "
                                "corrupt; copy or export the model dir again") from None


def family_class(name: str):
    module, _, attr = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def load_model(path: str | Path | None = None, *, device: str = "cpu", dtype=None):
    """Load any model dir (default: the embedded demo model) for inference, in eval mode."""
    import torch

    path = Path(path) if path is not None else default_model_dir()
    spec = read_spec(path)
    check_weight_files(path)
    model = family_class(spec["family"]).load(path, spec, dtype=dtype or torch.float32)
    model.source_dir = path
    return model.to(device).eval()
