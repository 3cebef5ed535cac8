"""Shadow mode on the demo models, as an operator would run it: ``--shadow demo-pruned=demo:1.0`` on a real
server, 100 requests one at a time 0.5 s apart; the live figure equals the offline one: the shadow
histogram has 100 observations and their mean WER agrees (within 0.01) with `slimspeech evaluate`'s
pruned-vs-base disagreement on the same clips. The latency cost of shadowing is measured by
scripts/bench_shadow.py (a benchmark, not a timed test)."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from prune_tools.data.grammar import Grammar
from prune_tools.data.manifest import write_manifest
from prune_tools.data.synth import TRAIN_VOICES, UNSEEN_VOICES, synthesize
from prune_tools.evaluate import evaluate
from speechllm.modeldir import DEMO_DIR
from speechllm.tasks import Task
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.slow
N = 100


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """N fresh benchmark sentences; half in voices the demo model never heard, so the models disagree now
    and then (on clean seen voices they almost never do, and a mean of zeros would agree vacuously)."""
    rng = random.Random(20261202)
    grammar = Grammar()
    d = tmp_path_factory.mktemp("shadow-clips")
    rows = []
    for i in range(N):
        s = grammar.sample(rng)
        voice = rng.choice(UNSEEN_VOICES if i % 2 else TRAIN_VOICES)
        path = d / f"{i:03d}.flac"
        seconds = synthesize(s.en, voice, rng.randint(150, 200), rng.randint(30, 70), path)
        rows.append({"id": f"clip-{i}", "audio": str(path), "duration": seconds, "text": s.en})
    return write_manifest(d / "shadow.jsonl", rows), rows


def test_shadow_figures_match_the_offline_evaluation(clips):
    manifest, rows = clips
    server = ServerProcess({"demo-pruned": f"{DEMO_DIR}-pruned", "demo": str(DEMO_DIR)},
                           "--shadow", "demo-pruned=demo:1.0")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for row in rows:
                t0 = time.monotonic()
                with open(row["audio"], "rb") as f:
                    r = http.post("/v1/audio/transcriptions", data={"model": "demo-pruned"}, files={"file": f})
                assert r.status_code == 200, r.text
                time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
            deadline = time.monotonic() + 120
            while (summary := http.get("/v1/shadow").json())["pending"]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        server.stop()
    pair = next(p for p in summary["pairs"] if p["task"] == "transcribe")
    assert pair["count"] == N, summary
    offline = evaluate(f"{DEMO_DIR}-pruned", [str(manifest)], [Task("transcribe")], base_dir=str(DEMO_DIR))
    disagreement = offline["disagreement"]["shadow"]["transcribe"]
    print(f"shadow: {pair['count']} compared, mean WER {pair['mean']:.4f} (p90 {pair['p90']:.4f}); "
          f"evaluate: pruned-vs-base mean WER {disagreement['mean_wer']:.4f} over {disagreement['n']} clips, "
          f"WER vs the transcripts: pruned {offline['model']['scores']['shadow']['transcribe']['wer']:.2f}% "
          f"base {offline['base']['scores']['shadow']['transcribe']['wer']:.2f}%")
    assert disagreement["n"] == N
    assert abs(pair["mean"] - disagreement["mean_wer"]) <= 0.01, (pair, disagreement)
