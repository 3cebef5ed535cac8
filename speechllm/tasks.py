"""Task prompts: which task (transcribe / translate into a language) a request asks for, and its prompt.

A model dir's ``speechllm.json`` holds the templates, e.g.

    "prompts": {"transcribe": "{audio}<|transcribe|>",
                "translate": "{audio}<|translate|><|{lang}|>"},
    "languages": {"fr": "French", "de": "German"}

``{audio}`` marks where the audio embeddings are spliced in; ``{lang}`` / ``{lang_name}``
are the target language code / name. Every task shares one backbone: only the prompt differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TaskError

TRANSCRIBE = "transcribe"
TRANSLATE = "translate"
AUDIO_SLOT = "{audio}"


@dataclass(frozen=True)
class Task:
    name: str = TRANSCRIBE
    target_lang: str | None = None

    def __str__(self) -> str:
        return self.name if self.target_lang is None else f"{self.name}:{self.target_lang}"

    @property
    def label(self) -> str:
        """Metrics/report label: ``transcribe`` or ``translate_fr``."""
        return self.name if self.target_lang is None else f"{self.name}_{self.target_lang}"


def parse_task(text: str) -> Task:
    """``"transcribe"`` or ``"translate:fr"`` -> Task (not yet checked against a model)."""
    name, _, lang = text.strip().partition(":")
    return Task(name, lang or None)


class PromptBook:
    """The prompt templates and languages of one model dir."""

    def __init__(self, prompts: dict[str, str], languages: dict[str, str] | None = None,
                 source_language: str = "en"):
        for name, tpl in prompts.items():
            if tpl.count(AUDIO_SLOT) != 1:
                raise TaskError(f"prompt template for {name!r} must contain {AUDIO_SLOT} exactly once: {tpl!r}")
        self.prompts = dict(prompts)
        self.languages = dict(languages or {})
        self.source_language = source_language

    @classmethod
    def from_spec(cls, spec: dict) -> "PromptBook":
        return cls(spec["prompts"], spec.get("languages", {}), spec.get("source_language", "en"))

    def supported(self) -> list[str]:
        out = []
        for name in self.prompts:
            if name == TRANSLATE:
                out += [f"{TRANSLATE}:{code}" for code in self.languages]
            else:
                out.append(name)
        return out

    def resolve(self, name: str = TRANSCRIBE, target_lang: str | None = None) -> Task:
        """Validate a task against this model; translate defaults to the first language."""
        if name not in self.prompts:
            raise TaskError(f"unknown task {name!r}: this model supports {', '.join(self.supported())}")
        if name == TRANSLATE:
            if target_lang is None:
                if not self.languages:
                    raise TaskError("this model has no translation languages")
                target_lang = next(iter(self.languages))
            target_lang = target_lang.lower()
            if target_lang not in self.languages:
                raise TaskError(
                    f"unknown target language {target_lang!r}: this model translates into "
                    f"{', '.join(self.languages)}", param="target_language")
            return Task(name, target_lang)
        return Task(name, None)

    def render(self, task: Task) -> tuple[str, str]:
        """(text before the audio, text after it) for ``task``."""
        tpl = self.prompts[task.name]
        lang = task.target_lang or self.source_language
        fill = tpl.replace(AUDIO_SLOT, "\0").replace("{lang}", lang).replace(
            "{lang_name}", self.languages.get(lang, lang))
        before, after = fill.split("\0")
        return before, after
