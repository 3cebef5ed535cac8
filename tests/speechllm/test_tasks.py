import pytest

from speechllm.builders import SLAM_PROMPTS, LANGUAGES
from speechllm.errors import TaskError
from speechllm.tasks import PromptBook, Task, parse_task


def test_resolve_and_render():
    book = PromptBook(SLAM_PROMPTS, LANGUAGES)
    assert book.supported() == ["transcribe", "translate:fr", "translate:de"]
    assert book.resolve("translate") == Task("translate", "fr")  # default: the first language
    assert book.resolve("translate", "DE") == Task("translate", "de")
    assert book.resolve("transcribe", "fr") == Task("transcribe", None)
    assert book.render(Task("translate", "de")) == ("<|en|>", "<|translate|><|de|>")
    assert parse_task("translate:fr") == Task("translate", "fr")


def test_unknown_task_and_language_list_what_is_supported():
    book = PromptBook(SLAM_PROMPTS, LANGUAGES)
    with pytest.raises(TaskError, match="supports transcribe, translate:fr, translate:de"):
        book.resolve("summarize")
    with pytest.raises(TaskError, match="translates into fr, de"):
        book.resolve("translate", "es")


def test_template_needs_one_audio_slot():
    with pytest.raises(TaskError, match="exactly once"):
        PromptBook({"transcribe": "no audio here"})
