"""scripts/loadtest_demo.sh: one command starts pruned + base, load-tests them and writes the report."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from .live import ROOT, free_port


@pytest.mark.slow  # starts a server process
def test_demo_script_writes_the_report(model_pair, tmp_path):
    out, port = tmp_path / "report", free_port()
    env = dict(os.environ, OUT=str(out), RATES="4", CONCURRENCY="2", DURATION="1", THREADS="1", PORT=str(port),
               READY_TIMEOUT="120")
    run = subprocess.run(["bash", "scripts/loadtest_demo.sh", model_pair["pruned"], model_pair["base"]], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"report: {out / 'report.md'}" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plan"]["models"] == ["pruned", "base"] and summary["plan"]["stream"]
    assert [lv["level"] for lv in summary["levels"]] == ["rate=4", "concurrency=2"]
    assert summary["plan"]["clips"] == 8  # the sentences the script spoke with espeak-ng
    assert all(s["ok"] > 0 and s["errors"] == 0 for lv in summary["levels"] for s in lv["models"].values())
    assert {p.name for p in out.iterdir()} >= {"report.md", "summary.json", "records.jsonl", "latency_cdf.png",
                                               "load.png"}
    with pytest.raises(httpx.TransportError):  # the server it started is gone
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_demo_script_names_a_missing_model(tmp_path):
    run = subprocess.run(["bash", "scripts/loadtest_demo.sh", str(tmp_path / "none")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {tmp_path / 'none'} is not a model dir")
