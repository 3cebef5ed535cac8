"""Shadow mode (server/shadow.py) on the tiny pair, in-process: rules, sampling, the comparison against the
reference model's own answer, the metrics and summary, dropping under load, kept audio, and errors."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import soundfile as sf

from server.main import create_app
from server.settings import Settings
from server.shadow import ShadowRule, parse_shadow
from speechllm.errors import SlimError
from speechllm.scoring import agreement_wer, sentence_chrf
from tests.server.conftest import InProcessServer


def test_rules_parse_and_refuse():
    assert parse_shadow("a=b:0.25, c=d") == {"a": ShadowRule("a", "b", 0.25), "c": ShadowRule("c", "d", 1.0)}
    assert parse_shadow(["a=b", "c=d:0"])["c"].fraction == 0.0
    assert parse_shadow("") == {}
    for bad, why in (("a", "MODEL=REFERENCE"), ("a=b:2", "between 0 and 1"), ("a=a", "itself"),
                     ("a=b,a=c", "has a rule already")):
        with pytest.raises(ValueError, match=why):
            parse_shadow(bad)


def test_a_rule_naming_a_model_not_served_fails_at_start(model_pair):
    with pytest.raises(SlimError, match="'other' is not served.*--model other=DIR"):
        create_app(Settings(models=model_pair, shadow="pruned=other"))


def wait_idle(server: InProcessServer, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (summary := server.get("/v1/shadow").json())["pending"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return summary


def histogram_count(server: InProcessServer, name: str, **labels) -> float:
    sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(f"{name}_count{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{sel}}} not exported")


@pytest.fixture(scope="module")
def shadowed(model_pair, tmp_path_factory):
    audio_dir = tmp_path_factory.mktemp("shadow-audio")
    server = InProcessServer(Settings(models=model_pair, shadow="pruned=base:1.0", max_wait_ms=1,
                                      shadow_audio_dir=audio_dir))
    yield server, audio_dir
    server.close()


def test_every_sampled_request_is_compared_with_the_reference_answer(shadowed, speech_bytes, noise_wavs):
    """With fraction 1 each answered request to pruned runs on base too; the recorded score is the WER
    (translations: chrF) of pruned's answer against base's own answer to the same request."""
    server, audio_dir = shadowed
    # the series exist before any request
    assert histogram_count(server, "slimspeech_shadow_wer", model="pruned", reference="base", task="transcribe") == 0
    expected = {"transcribe": [], "translate_fr": []}
    for audio in speech_bytes:
        for endpoint, label, extra in (("transcriptions", "transcribe", {}),
                                       ("translations", "translate_fr", {"target_language": "fr"})):
            ours = server.transcribe(audio, endpoint, model="pruned", **extra)
            base = server.transcribe(audio, endpoint, model="base", **extra)  # base's own answer, unshadowed
            assert ours.status_code == base.status_code == 200
            ref, hyp = base.json()["text"], ours.json()["text"]
            expected[label].append(sentence_chrf(ref, hyp) if label.startswith("translate")
                                   else agreement_wer(ref, hyp))
    summary = wait_idle(server)
    pairs = {p["task"]: p for p in summary["pairs"]}
    assert summary["rules"] == [{"model": "pruned", "reference": "base", "fraction": 1.0}]
    assert set(pairs) == {"transcribe", "translate_fr"}  # base was never shadowed: it has no rule
    for label, scores in expected.items():
        p = pairs[label]
        assert p["count"] == len(scores) == len(speech_bytes)
        assert p["mean"] == pytest.approx(sum(scores) / len(scores), abs=1e-4), (label, p, scores)
        assert p["metric"] == ("chrf" if label.startswith("translate") else "wer")
        worst = p["worst"]
        assert len(worst) == len(scores) and all(w["request_id"] and "reference_text" in w for w in worst)
        badness = [w.get("wer", 0) if p["metric"] == "wer" else 100 - w["chrf"] for w in worst]
        assert badness == sorted(badness, reverse=True)
        for w in worst:  # the audio of each kept example was written when asked
            assert sf.info(str(audio_dir / w["audio"])).samplerate == 16000
    assert histogram_count(server, "slimspeech_shadow_wer", model="pruned", reference="base",
                           task="transcribe") == len(speech_bytes)
    assert histogram_count(server, "slimspeech_shadow_chrf", model="pruned", reference="base",
                           task="translate_fr") == len(speech_bytes)


def test_under_load_shadows_are_dropped_and_clients_are_served(shadowed, speech_bytes):
    """A burst of concurrent requests: every client gets its 200; shadows beyond the pending bound (or while
    clients queue) are dropped and counted, never queued without bound."""
    server, _ = shadowed
    before = wait_idle(server)
    before_count = sum(p["count"] for p in before["pairs"] if p["task"] == "transcribe")

    async def burst():
        return await asyncio.gather(*[
            server.http.post("/v1/audio/transcriptions", data={"model": "pruned"},
                             files={"file": ("a.wav", speech_bytes[i % len(speech_bytes)], "audio/wav")})
            for i in range(24)])

    answers = server.run(burst)
    assert [r.status_code for r in answers] == [200] * 24
    after = wait_idle(server)
    compared = sum(p["count"] for p in after["pairs"] if p["task"] == "transcribe") - before_count
    dropped = [line for line in server.get("/metrics").text.splitlines()
               if line.startswith('slimspeech_shadow_requests_total{model="pruned",outcome="dropped_load"')]
    n_dropped = float(dropped[0].rsplit(" ", 1)[1])
    assert n_dropped >= 1 and compared + n_dropped == 24, (compared, n_dropped)


def test_sampling_fraction(model_pair, speech_bytes):
    server = InProcessServer(Settings(models=model_pair, shadow="pruned=base:0.3"))
    try:
        server.app.state.service.shadow.rng = random.Random(7)  # the draws below are then fixed
        draws = random.Random(7)
        expected = sum(draws.random() < 0.3 for _ in range(12))
        for i in range(12):
            assert server.transcribe(speech_bytes[i % len(speech_bytes)], model="pruned").status_code == 200
            wait_idle(server)
        pairs = server.get("/v1/shadow").json()["pairs"]
        assert sum(p["count"] for p in pairs) == expected and 0 < expected < 12
    finally:
        server.close()


def test_summary_is_404_without_shadow_rules(model_pair):
    server = InProcessServer(Settings(models=model_pair))
    try:
        r = server.get("/v1/shadow")
        assert r.status_code == 404 and "--shadow" in r.json()["error"]["message"]
        assert "slimspeech_shadow_wer_count" not in server.get("/metrics").text
    finally:
        server.close()
