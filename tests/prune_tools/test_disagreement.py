"""evaluate's pruned-vs-base disagreement: the base's outputs as the reference, scored per utterance as
the server's shadow mode scores each request (speechllm.scoring)."""

import pytest

from prune_tools.evaluate import disagreement


def test_transcription_disagreement_is_the_mean_utterance_wer():
    base = ["the small dog sees the red ball", "three cats sleep", "", "hello", ""]
    model = ["the small dog sees a red ball", "three cats sleep", "noise", "Hello!", ""]
    d = disagreement(base, model, "transcribe")
    # 1 substitution in 7 words; 0; words where the base heard none: 1; 0; both silent: 0
    assert d["n"] == 5 and d["mean_wer"] == pytest.approx((1 / 7 + 1) / 5, abs=1e-4)
    assert d["corpus_wer"] == pytest.approx(100 * 1 / 11, abs=0.01)  # jiwer's, over the non-empty references


def test_translation_disagreement_is_the_mean_sentence_chrf():
    d = disagreement(["le petit chien", "bonjour"], ["le petit chien", "bonsoir"], "translate_fr")
    assert d["n"] == 2 and 50 < d["mean_chrf"] < 100
    assert disagreement(["bonjour"], ["bonjour"], "translate_fr")["mean_chrf"] == 100.0
