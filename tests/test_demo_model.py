"""The embedded demo model on freshly synthesized benchmark sentences (computed here, not a snapshot)."""

import random

import pytest

from prune_tools.data.grammar import Grammar
from prune_tools.data.synth import TRAIN_VOICES, synthesize
from speechllm.audio import load_audio
from speechllm.generate import transcribe
from speechllm.modeldir import DEMO_DIR, load_model
from speechllm.scoring import bleu, wer
from speechllm.tasks import Task

pytestmark = pytest.mark.slow  # the demo-quality gate
N = 40
WER_TARGET = 5.0  # issue 3's test-clean target


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    if not (DEMO_DIR / "speechllm.json").exists():
        pytest.fail(f"the demo model is missing from {DEMO_DIR}")
    rng = random.Random(20261123)
    grammar = Grammar()
    d = tmp_path_factory.mktemp("fresh")
    sents, wavs = [], []
    for i in range(N):
        s = grammar.sample(rng)
        path = d / f"{i}.flac"
        synthesize(s.en, rng.choice(TRAIN_VOICES), rng.randint(140, 180), rng.randint(35, 65), path)
        sents.append(s)
        wavs.append(load_audio(path))
    return sents, wavs


@pytest.fixture(scope="module")
def demo():
    return load_model()


@pytest.fixture(scope="module")
def scores(demo, fresh):
    """WER (transcribe) and BLEU (fr, de) of the demo model on the fresh sentences."""
    sents, wavs = fresh
    out = {"transcribe": wer([s.en for s in sents], transcribe(demo, wavs, Task("transcribe")))}
    for lang in ("fr", "de"):
        out[lang] = bleu([getattr(s, lang) for s in sents], transcribe(demo, wavs, Task("translate", lang)))
    return out


def test_demo_scores_fresh_sentences_as_its_provenance_says(demo, scores):
    """Fresh sentences score like the dev split recorded at training time: the shipped fp16 model,
    its tokenizer, features and prompts load and run as trained (a broken load gives ~100% WER)."""
    dev = demo.provenance["dev_scores_fp32"]
    assert scores["transcribe"] <= dev["transcribe_wer"] * 1.3 + 5, (scores, dev)
    assert scores["transcribe"] < 90.0
    for lang in ("fr", "de"):
        assert scores[lang] >= dev[f"translate_{lang}_bleu"] * 0.6 - 2, (scores, dev)


def test_demo_meets_the_targets(scores):
    """Issue 3's test-clean targets on sentences synthesized now: WER <= 5%, BLEU >= 50 (fr, de)."""
    assert scores["transcribe"] <= WER_TARGET and min(scores["fr"], scores["de"]) >= 50.0, scores


def test_demo_is_default_and_self_describing(demo):
    assert demo.source_dir == DEMO_DIR
    assert demo.num_decoder_layers >= 12
    prov = demo.provenance
    assert prov["produced_by"] == "slimspeech train" and prov["dev_scores_fp32"]
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size <= 40 * 2**20
