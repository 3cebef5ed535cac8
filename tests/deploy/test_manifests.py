"""deploy/compose.yaml, the Grafana provisioning and the Kubernetes manifests: parsed and cross-checked against
each other, the Dockerfile and the server's own settings; rendered with `kubectl kustomize` when kubectl is here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from server.settings import Settings
from tests.loadtests.live import ROOT, metric_samples

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def check_settings_env(env: dict, monkeypatch) -> Settings:
    """Every SLIMSPEECH_* variable names a `slimspeech serve` setting and its value validates."""
    fields = set(Settings.model_fields)
    for key in env:
        assert key.startswith("SLIMSPEECH_") and key.removeprefix("SLIMSPEECH_").lower() in fields, key
    for key in [k for k in os.environ if k.startswith("SLIMSPEECH_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def compose_default(value: str) -> str:
    """${VAR:-default} -> default (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def load_docs(*paths: Path) -> list[dict]:
    docs = []
    for p in paths:
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


# ---- compose -------------------------------------------------------------------------------
def test_compose(monkeypatch):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"server", "prometheus", "grafana"}
    server = services["server"]
    assert server["build"] == {"context": "..", "target": "cpu"} and (DEPLOY / ".." / "Dockerfile").is_file()
    assert "8000:8000" in server["ports"]
    settings = check_settings_env({k: compose_default(v) for k, v in server["environment"].items()
                                   if k.startswith("SLIMSPEECH_")}, monkeypatch)
    assert settings.models == {"pruned": "/models/pruned", "base": "/models/base"}  # the image's demo links
    # Prometheus: its config and rules are mounted, and it scrapes the server's service name and port
    prom = services["prometheus"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in prom["volumes"])
    assert mounts == {"./prometheus.yml": "/etc/prometheus/prometheus.yml",
                      "./alerts.yml": "/etc/prometheus/alerts.yml"}
    assert all((DEPLOY / src).is_file() for src in mounts)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    pcfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert pcfg["scrape_configs"][0]["static_configs"][0]["targets"] == ["server:8000"]
    assert pcfg["rule_files"] == ["alerts.yml"]
    # Grafana: the provisioned datasource points at the prometheus service, the dashboards folder is mounted
    graf = services["grafana"]
    gm = dict(v.rsplit(":", 1)[0].split(":") for v in graf["volumes"])
    assert gm == {"./grafana/provisioning": "/etc/grafana/provisioning",
                  "./grafana/dashboards": "/var/lib/grafana/dashboards"}
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    assert any(p.endswith(":9090") for p in prom["ports"])
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/slimspeech.yaml").read_text())["providers"][0]
    assert prov["options"]["path"] == "/var/lib/grafana/dashboards"
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana/dashboards" / Path(home).name).is_file()


# ---- Kubernetes ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = load_docs(*(K8S / "base" / r for r in kust["resources"]))
    return {d["kind"]: d for d in docs}


def _container(deploy: dict) -> dict:
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    return c


def test_kubernetes_objects(k8s, monkeypatch):
    assert set(k8s) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    dep, svc, hpa, cm, pdb = (k8s[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap",
                                               "PodDisruptionBudget"))
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == pod_labels
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    c = _container(dep)
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("http", 8000)
    assert svc["spec"]["ports"][0]["targetPort"] in ("http", 8000)
    # probes: readiness = models loaded and warm, liveness = the process answers
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # the server's drain (SLIMSPEECH_GRACEFUL_SHUTDOWN_SECONDS) + preStop fit in the grace period
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(cm["data"]["SLIMSPEECH_GRACEFUL_SHUTDOWN_SECONDS"]) + 5
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port["containerPort"]) and ann["prometheus.io/path"] == "/metrics"
    # resources, non-root (the Dockerfile's user)
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    sec = dep["spec"]["template"]["spec"]["securityContext"]
    assert sec["runAsNonRoot"] and f"USER {sec['runAsUser']}" in (ROOT / "Dockerfile").read_text()
    assert c["securityContext"]["readOnlyRootFilesystem"] and any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    # settings: the ConfigMap (the model list) and the container env name real settings
    assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    env = {}
    for e in c["env"]:
        if e["name"].startswith("SLIMSPEECH_"):  # a resourceFieldRef resolves to the container's CPU request
            ref = e.get("valueFrom", {}).get("resourceFieldRef")
            env[e["name"]] = c["resources"]["requests"]["cpu"] if ref else e["value"]
            assert not ref or ref["resource"] == "requests.cpu"
    settings = check_settings_env({**cm["data"], **env}, monkeypatch)
    assert settings.models == {"pruned": "/models/pruned", "base": "/models/base"} and settings.host == "0.0.0.0"
    assert c["args"] == ["slimspeech", "serve"]
    # HPA: the Deployment, on queue depth (a per-pod metric) with CPU as fallback
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Pods"]["pods"]["metric"]["name"] == "slimspeech_queue_depth"
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["minAvailable"] + 1


@pytest.mark.slow  # a server process
def test_hpa_metric_is_exported(k8s, live_server):
    hpa = k8s["HorizontalPodAutoscaler"]
    name = next(m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    assert name in metric_samples(live_server.url)


def _kustomize(path: Path) -> dict[str, dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {d["kind"]: d for d in yaml.safe_load_all(out.stdout) if d}


def _validate(objects: dict[str, dict]) -> None:
    """Every object against the Kubernetes API schema (kubernetes-validate), strictly: no unknown field."""
    import kubernetes_validate

    for kind, obj in objects.items():
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_manifests_are_valid_kubernetes_objects(k8s):
    import kubernetes_validate

    _validate(k8s)
    broken = {**k8s["Deployment"], "spec": {**k8s["Deployment"]["spec"], "replica": 2}}  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate({"Deployment": broken})


def test_read_only_root_keeps_every_cache_writable(k8s):
    """vLLM, torch.compile, Triton and Hugging Face write caches under HOME or their own variables: all of
    them point into a mounted emptyDir, never onto the read-only root filesystem."""
    c = _container(k8s["Deployment"])
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    env = {e["name"]: e.get("value") for e in c["env"]}
    for var in ("HOME", "HF_HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "VLLM_CACHE_ROOT"):
        assert any(env[var] == m or env[var].startswith(m + "/") for m in mounts), var


def test_kubectl_renders_the_cpu_and_gpu_variants(k8s):
    cpu = _kustomize(K8S / "base")
    assert cpu == k8s
    gpu = _kustomize(K8S / "gpu")
    _validate(gpu)
    shm = next(v for v in gpu["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"  # tensor parallelism needs more than 64 MiB of /dev/shm
    assert {"mountPath": "/dev/shm", "name": "dshm"} in _container(gpu["Deployment"])["volumeMounts"]
    c = _container(gpu["Deployment"])
    assert c["image"] == "slimspeech:0.1.0-cuda"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SLIMSPEECH_DEVICE"] == "cuda"
    assert c["readinessProbe"] == _container(k8s["Deployment"])["readinessProbe"]  # the patch kept the rest
    spec = gpu["Deployment"]["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert set(gpu) == set(k8s)
