"""JSONL manifests: one utterance per line.

Each line::

    {"id": "dev-000001", "audio": "audio/dev/dev-000001.flac", "duration": 2.41,
     "text": "the dog sees the cat",
     "translation": {"fr": "le chien voit le chat", "de": "der Hund sieht die Katze"},
     "voice": "en-us", "speed": 160, "pitch": 50, "snr": null}

``audio`` is relative to the manifest's directory on disk; :func:`read_manifest`
returns it resolved to an absolute path. ``snr`` is null for clean audio.
Only ``id``, ``audio`` and ``text`` are required when reading, so external data
sets (e.g. a converted LibriSpeech subset) can use the same reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from speechllm.errors import SlimError

__all__ = ["ManifestError", "REQUIRED_KEYS", "read_manifest", "write_manifest"]

REQUIRED_KEYS = ("id", "audio", "text")


class ManifestError(SlimError):
    """A manifest is missing, malformed, or points at missing audio."""


def read_manifest(path: str | os.PathLike, *, check_audio: bool = True) -> list[dict]:
    """Read a JSONL manifest; ``audio`` comes back as an absolute path.

    Raises ManifestError (one line: what is wrong and how to fix it) when the file is
    missing, a line is not a JSON object, required keys are missing, or (with
    ``check_audio``) audio files do not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found; create it with `slimspeech make-data --out DIR` "
                            "or pass the path of an existing .jsonl manifest")
    base = path.parent.resolve()
    rows: list[dict] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path} line {lineno}: bad JSON ({e.msg}); fix or delete that line") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}; "
                                    "each line must be one utterance object")
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise ManifestError(f"{path} line {lineno}: missing required key(s) {', '.join(missing)}; "
                                    f"every line needs {', '.join(REQUIRED_KEYS)}")
            row = dict(row)
            row["audio"] = str((base / row["audio"]).resolve()) if not os.path.isabs(row["audio"]) else row["audio"]
            rows.append(row)
    if check_audio:
        absent = [r["audio"] for r in rows if not os.path.isfile(r["audio"])]
        if absent:
            shown = ", ".join(absent[:5])
            more = f" (and {len(absent) - 5} more)" if len(absent) > 5 else ""
            raise ManifestError(f"{path}: {len(absent)} of {len(rows)} audio files missing: {shown}{more}; "
                                "regenerate the data with `slimspeech make-data` or fix the paths "
                                "(they are relative to the manifest's folder)")
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows as JSONL. Absolute ``audio`` paths under the manifest's folder are made relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            row = dict(row)
            audio = str(row.get("audio", ""))
            if os.path.isabs(audio):
                try:
                    row["audio"] = Path(audio).resolve().relative_to(base).as_posix()
                except ValueError:
                    row["audio"] = os.path.relpath(Path(audio).resolve(), base)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a manifest
    return path
