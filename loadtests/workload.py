"""What a load test sends: clips from a JSONL manifest, tasks, and the request form of the OpenAI audio API.

    clips = load_clips("data/bench/test-clean.jsonl", limit=32)
    tasks = parse_tasks("transcribe,translate:fr")
    path, form = request_form(tasks[0], "pruned", stream=True)   # -> "/v1/audio/transcriptions", {...}

The manifest is read here (JSONL rows with ``audio`` relative to the manifest's folder, and
``duration`` when known), not through ``prune_tools``: a load test needs only the HTTP API.
Every model gets the same sequence of (clip, task) pairs (``Workload.item(j)``), so the j-th
request to ``pruned`` and the j-th to ``base`` carry the same audio and task.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LoadTestError

MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg",
        ".webm": "audio/webm", ".m4a": "audio/mp4"}


@dataclass(frozen=True)
class Clip:
    id: str
    filename: str
    audio: bytes
    seconds: float

    @property
    def mime(self) -> str:
        return MIME.get(Path(self.filename).suffix.lower(), "application/octet-stream")


@dataclass(frozen=True)
class TaskSpec:
    name: str  # transcribe | translate
    target: str | None = None

    @property
    def label(self) -> str:
        """Same label as the server's metrics: ``transcribe`` or ``translate_fr``."""
        return self.name if self.target is None else f"{self.name}_{self.target}"

    @property
    def path(self) -> str:
        return "/v1/audio/transcriptions" if self.name == "transcribe" else "/v1/audio/translations"

    def __str__(self) -> str:
        return self.name if self.target is None else f"{self.name}:{self.target}"


def parse_tasks(text: str) -> list[TaskSpec]:
    """``"transcribe,translate:fr"`` -> TaskSpecs (``translate`` alone: the model's default target)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, target = part.partition(":")
        if name not in ("transcribe", "translate") or (name == "transcribe" and target):
            raise LoadTestError(f"--task {part!r}: use transcribe, translate or translate:LANG (e.g. translate:fr)",
                            param="--task")
        out.append(TaskSpec(name, target or None))
    if not out:
        raise LoadTestError("--task is empty: pass e.g. transcribe or transcribe,translate:fr", param="--task")
    return out


def _duration(path: Path, row: dict) -> float:
    if isinstance(row.get("duration"), (int, float)) and row["duration"] > 0:
        return float(row["duration"])
    import soundfile as sf  # header only: the load test never decodes audio

    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise LoadTestError(f"{path}: not readable audio ({exc}); fix the manifest row or drop it",
                        param="--data") from None
    return info.frames / info.samplerate


def load_clips(manifest: str | os.PathLike, limit: int | None = None) -> list[Clip]:
    """The first ``limit`` rows of a JSONL manifest, their audio read into memory (bytes, as uploaded)."""
    path = Path(manifest)
    if not path.is_file():
        raise LoadTestError(f"manifest {path} not found: pass a .jsonl manifest (e.g. from `slimspeech make-data`)",
                        param="--data")
    clips: list[Clip] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(clips) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio = Path(row["audio"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LoadTestError(f"{path} line {lineno}: expected a JSON object with an 'audio' path",
                                param="--data") from None
            audio = audio if audio.is_absolute() else path.parent / audio
            if not audio.is_file():
                raise LoadTestError(f"{path} line {lineno}: audio file {audio} not found (paths are relative to the "
                                "manifest's folder)", param="--data")
            clips.append(Clip(str(row.get("id", audio.stem)), audio.name, audio.read_bytes(), _duration(audio, row)))
    if not clips:
        raise LoadTestError(f"manifest {path} has no rows", param="--data")
    return clips


def request_form(task: TaskSpec, model: str, *, stream: bool = False,
                 response_format: str = "json") -> tuple[str, dict[str, str]]:
    """-> (URL path, form fields) of one request; the file goes in as the ``file`` field."""
    data = {"model": model, "response_format": response_format}
    if task.target:
        data["target_language"] = task.target
    if stream:
        data["stream"] = "true"
    return task.path, data


@dataclass
class Workload:
    clips: list[Clip]
    tasks: list[TaskSpec]

    def item(self, j: int) -> tuple[Clip, TaskSpec]:
        """The j-th request of any model: the task turns fastest, then the clip."""
        t = len(self.tasks)
        return self.clips[(j // t) % len(self.clips)], self.tasks[j % t]
