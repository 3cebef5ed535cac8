"""vLLM's serving benchmark (``vllm bench serve``'s code, through scripts/vllm_bench_serve.py) against the
live server, with local audio (its ``custom_audio`` dataset): every request completes and is counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.vllm]  # a server process; needs vLLM's benchmark code


def test_vllm_bench_serve_runs_against_the_server(live_server, model_pair, speech_files, tmp_path):
    from tests.server.conftest import require_vllm

    require_vllm()
    data = tmp_path / "clips.jsonl"
    data.write_text("".join(json.dumps({"prompt": "", "audio": f, "output_tokens": 16}) + "\n" for f in speech_files))
    decoder = str(Path(model_pair["pruned"]) / "decoder")  # the tokenizer the benchmark counts tokens with
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "vllm_bench_serve.py"), "--backend", "openai-audio",
                          "--base-url", live_server.url, "--endpoint", "/v1/audio/transcriptions",
                          "--served-model-name", "pruned", "--model", decoder, "--tokenizer", decoder,
                          "--dataset-name", "custom_audio", "--dataset-path", str(data), "--num-prompts", "6",
                          "--max-concurrency", "2", "--save-result", "--result-dir", str(tmp_path),
                          "--result-filename", "result.json"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["completed"] == 6 and result["failed"] == 0, result
    assert result["total_output_tokens"] > 0 and result["mean_ttft_ms"] > 0
