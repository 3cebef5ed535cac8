"""The embedded demo model on freshly synthesized benchmark sentences (computed here, not a snapshot)."""

import random

import pytest

from prune_tools.data.grammar import Grammar
from prune_tools.data.synth import TRAIN_VOICES, synthesize
from prune_tools.scoring import bleu, wer
from speechllm.audio import load_audio
from speechllm.generate import transcribe
from speechllm.modeldir import DEMO_DIR, load_model
from speechllm.tasks import Task

N = 24
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


def test_demo_transcribes_fresh_sentences(demo, fresh):
    sents, wavs = fresh
    hyps = transcribe(demo, wavs, Task("transcribe"))
    score = wer([s.en for s in sents], hyps)
    assert score <= WER_TARGET, (score, list(zip([s.en for s in sents], hyps))[:5])


@pytest.mark.parametrize("lang", ["fr", "de"])
def test_demo_translates_fresh_sentences(demo, fresh, lang):
    sents, wavs = fresh
    hyps = transcribe(demo, wavs, Task("translate", lang))
    refs = [getattr(s, lang) for s in sents]
    # far above what a model that ignores the audio or the task gets (BLEU ~1 on this grammar)
    assert bleu(refs, hyps) >= 30.0, list(zip(refs, hyps))[:5]


def test_demo_is_default_and_self_describing(demo):
    assert demo.source_dir == DEMO_DIR
    assert demo.num_decoder_layers >= 12
    prov = demo.provenance
    assert prov["produced_by"] == "slimspeech train" and prov["dev_scores_fp32"]
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size <= 40 * 2**20
