"""deploy/prometheus.yml, alerts.yml and the Grafana dashboard, checked with the real tools: promtool, and a real
Prometheus (Debian's package) scraping a live server on 127.0.0.1 and running every dashboard query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import httpx
import pytest
import yaml

from tests.conftest import load_script
from tests.loadtests.live import ROOT, free_port, metric_samples

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "slimspeech.json"
#: what Grafana substitutes before a query reaches Prometheus
GRAFANA_VARS = {"$__rate_interval": "1m", "$model": ".+", "$pruned": "pruned", "$base": "base"}


def _tool(name: str) -> str:
    from tests.conftest import require_tools

    require_tools(name, fix="apt-get install prometheus; scripts/setup.sh does")
    return shutil.which(name)


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def grafana_substitute(expr: str) -> str:
    for k in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA_VARS[k])
    return expr


def test_promtool_checks_config_and_rules():
    promtool = _tool("promtool")
    for args in (["check", "config", str(DEPLOY / "prometheus.yml")], ["check", "rules", str(DEPLOY / "alerts.yml")],
                 ["test", "rules", str(ROOT / "tests" / "deploy" / "alerts_test.yml")]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout + out.stderr


def test_dashboard_json_is_the_generators_output():
    gen = load_script(DEPLOY / "grafana" / "dashboard.py")
    assert DASHBOARD.read_text() == gen.render(), "run: python deploy/grafana/dashboard.py"
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"] + p["title"])) - {"__rate_interval"}
            assert used <= variables, (p["title"], used - variables)
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("latency", "throughput", "batch size", "real-time factor", "memory", "$pruned / $base"):
        assert topic in titles, topic


@pytest.mark.slow  # a server process
def test_dashboard_metrics_are_exported_by_the_live_server(live_server):
    exported = set(metric_samples(live_server.url))
    gpu_only = {"slimspeech_cuda_memory_allocated_bytes", "slimspeech_cuda_memory_peak_bytes"}
    server_source = (ROOT / "server" / "metrics.py").read_text()
    named = set()
    for title, expr in dashboard_queries():
        names = set(re.findall(r"\bslimspeech_[a-z_]+", expr))
        assert names, (title, expr)
        named |= names
    for name in named:
        if name in gpu_only:  # exported when the server runs on CUDA: named in the server's collector
            assert f'"{name}"' in server_source
        else:
            assert name in exported, f"{name} is not exported by the server (GET /metrics)"
    assert named - gpu_only >= {"slimspeech_request_duration_seconds_bucket", "slimspeech_batch_size_bucket",
                                "slimspeech_memory_rss_bytes", "slimspeech_decoder_layers"}


@pytest.fixture(scope="module")
def prometheus(live_server, tmp_path_factory, speech_files):
    """A real Prometheus with deploy/prometheus.yml and alerts.yml, its target pointed at the live server."""
    binary = _tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(DEPLOY / "alerts.yml")]
    job = cfg["scrape_configs"][0]
    assert job["job_name"] == "slimspeech" and job["static_configs"][0]["targets"] == ["server:8000"]
    job["static_configs"][0]["targets"] = [live_server.url.removeprefix("http://")]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        # traffic for the histograms: both models, both endpoints, streaming and not
        audio = open(speech_files[0], "rb").read()
        for model in ("pruned", "base"):
            for endpoint, stream in (("transcriptions", "false"), ("translations", "true")):
                r = httpx.post(f"{live_server.url}/v1/audio/{endpoint}", files={"file": ("a.wav", audio)},
                               data={"model": model, "stream": stream}, timeout=30)
                assert r.status_code == 200
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(url: str, expr: str) -> dict:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def wait_for(url: str, expr: str, ok, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        result = query(url, expr)["result"]
        if ok(result):
            return result
        assert time.monotonic() < deadline, (expr, result)
        time.sleep(0.5)


@pytest.mark.slow  # a server process
def test_prometheus_scrapes_the_live_server(prometheus):
    up = wait_for(prometheus, 'up{job="slimspeech"}', lambda r: r and r[0]["value"][1] == "1")
    assert up[0]["metric"]["service"] == "slimspeech"
    layers = wait_for(prometheus, 'slimspeech_decoder_layers{job="slimspeech"}', lambda r: len(r) == 2)
    assert {s["metric"]["model"]: s["value"][1] for s in layers} == {"pruned": "2", "base": "4"}
    done = wait_for(prometheus, 'sum by (model) (slimspeech_requests_total{status="200"})',
                    lambda r: len(r) == 2 and all(float(s["value"][1]) >= 2 for s in r))
    assert {s["metric"]["model"] for s in done} == {"pruned", "base"}


@pytest.mark.slow  # a server process
def test_prometheus_loads_the_rules(prometheus):
    def healthy(_):
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 8 and all(r["health"] == "ok" for r in rules)

    wait_for(prometheus, "vector(1)", healthy)
    ratios = wait_for(prometheus, "model:slimspeech_request_errors:ratio_rate5m",
                      lambda r: {"pruned", "base"} <= {s["metric"]["model"] for s in r})
    assert all(s["value"][1] in ("0", "NaN") for s in ratios)  # no 5xx or 429 (a 400 or 404 is the client's)


@pytest.mark.slow  # a server process
def test_every_dashboard_query_runs_in_prometheus(prometheus):
    """Each query, as Grafana sends it, is valid PromQL, and every panel shows series from the live server
    (a query may be empty on its own: errors when none failed, CUDA memory on a CPU server)."""
    wait_for(prometheus, "count(slimspeech_request_duration_seconds_count)", lambda r: bool(r))
    time.sleep(2.5)  # rate() needs two scrapes after the traffic
    for title, expr in dashboard_queries():
        data = query(prometheus, grafana_substitute(expr))
        assert data["resultType"] == "vector", (title, expr)
        if "cuda" in expr or 'status!="200"' in expr:
            continue
        assert data["result"], f"{title}: {expr} returned nothing"
        if "slimspeech_shadow" in expr:  # shadow panels: the shadowed model only (the live server's pruned=base:0)
            assert {s["metric"].get("model") for s in data["result"]} == {"pruned"}, (title, expr)
            continue
        if "by (model" in expr:  # the per-model panels show both models
            assert {s["metric"].get("model") for s in data["result"]} == {"pruned", "base"}, (title, expr)
