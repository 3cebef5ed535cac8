"""loadtests/locustfile.py under real Locust (headless, a few seconds) against the live server, started
from outside the checkout as a user would run it; Locust's CSV output is what is checked."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a server process and Locust runs


def run_locust(url: str, tmp_path: Path, **env: str) -> dict[str, dict]:
    """Locust headless for 5 s with 2 users; -> its stats CSV rows by request name."""
    locust = shutil.which("locust") or str(Path(sys.executable).parent / "locust")
    out = subprocess.run([locust, "-f", str(ROOT / "loadtests" / "locustfile.py"), "--host", url, "--headless",
                          "--users", "2", "--spawn-rate", "2", "--run-time", "5s", "--csv", str(tmp_path / "run"),
                          "--only-summary", "--loglevel", "WARNING"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": "", **env}, capture_output=True, text=True,
                         timeout=120)
    stats = tmp_path / "run_stats.csv"
    assert stats.is_file(), out.stdout[-3000:] + out.stderr[-3000:]
    with open(stats) as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f) if row["Name"] != "Aggregated"}


def test_locust_streams_and_interleaves_models(live_server, bench_manifest, tmp_path):
    rows = run_locust(live_server.url, tmp_path, LOADTEST_DATA=str(bench_manifest), LOADTEST_STREAM="1",
                      LOADTEST_TASK="transcribe,translate:fr")
    for model in ("pruned", "base"):
        for task in ("transcribe", "translate_fr"):
            post = rows[("POST", f"{model} {task}")]
            assert int(post["Request Count"]) > 0 and int(post["Failure Count"]) == 0, post
            latency, ttft = rows[("SSE", f"{model} {task} latency")], rows[("SSE", f"{model} {task} ttft")]
            assert int(latency["Request Count"]) == int(ttft["Request Count"]) > 0
            assert 0 < float(ttft["Median Response Time"]) <= float(latency["Median Response Time"])


def test_locust_counts_failures(live_server, bench_manifest, tmp_path):
    rows = run_locust(live_server.url, tmp_path, LOADTEST_DATA=str(bench_manifest), LOADTEST_MODELS="base,whisper-1")
    ok, missing = rows[("POST", "base transcribe")], rows[("POST", "whisper-1 transcribe")]
    assert int(ok["Request Count"]) > 0 and int(ok["Failure Count"]) == 0
    assert int(missing["Failure Count"]) == int(missing["Request Count"]) > 0
    failures = (tmp_path / "run_failures.csv").read_text()
    assert "HTTP 404" in failures
