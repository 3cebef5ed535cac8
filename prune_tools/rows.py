"""Manifest rows as the verbs use them: reading them, the task list, and a row's reference text per task.

    from prune_tools.rows import DEFAULT_TASKS, load_rows, parse_tasks, reference

    rows = load_rows(["data/bench/dev.jsonl"], limit=100)     # list of dicts, audio paths absolute
    for task in parse_tasks(DEFAULT_TASKS):                    # [Task("transcribe"), Task("translate", "fr"), ...]
        refs = [reference(r, task) for r in rows]              # text, or translation[lang]; SlimError if missing

The manifest format itself (fields, validation) is ``prune_tools.data.manifest``; this module
turns its errors into ``SlimError`` (one line on the CLI, exit 2).
"""

from __future__ import annotations

from speechllm.errors import SlimError
from speechllm.tasks import Task, parse_task

#: the tasks every verb covers by default: transcription and both translation directions of the benchmark
DEFAULT_TASKS = "transcribe,translate:fr,translate:de"


def parse_tasks(text: str) -> list[Task]:
    """``"transcribe,translate:fr"`` -> [Task("transcribe"), Task("translate", "fr")]; SlimError if empty."""
    tasks = [parse_task(t) for t in text.split(",") if t.strip()]
    if not tasks:
        raise SlimError("--tasks is empty: pass e.g. transcribe,translate:fr", param="tasks")
    return tasks


def read_rows(manifest) -> list[dict]:
    """``read_manifest`` with its errors (missing file, bad line, missing audio files, named) as SlimError."""
    from .data.manifest import ManifestError, read_manifest

    try:
        return read_manifest(manifest)
    except ManifestError as exc:
        raise SlimError(str(exc), param="data") from None


def load_rows(manifests: list[str], limit: int | None = None) -> list[dict]:
    """Rows of the manifests in order, the first ``limit`` overall."""
    rows: list[dict] = []
    for m in manifests:
        rows += read_rows(m)
    return rows[:limit] if limit else rows


def reference(row: dict, task: Task, *, required: bool = True) -> str | None:
    """The reference text of ``task`` for a manifest row: ``text`` to transcribe, ``translation[lang]`` to translate.

    A missing or empty reference is a SlimError naming the row and the fix, or None with
    ``required=False`` (to pick the rows a task can use).
    """
    if task.name == "transcribe":
        text = row.get("text")
    else:
        text = (row.get("translation") or {}).get(task.target_lang)
    if text:
        return text
    if not required:
        return None
    field = "text" if task.name == "transcribe" else f"translation.{task.target_lang}"
    raise SlimError(f"utterance {row.get('id', '?')!r} ({row.get('audio', '?')}) has no reference for {task}: "
                    f"use a manifest with {field} or drop {task} from --tasks", param="data")
