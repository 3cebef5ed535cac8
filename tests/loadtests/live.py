"""One real ``slimspeech serve`` process (tiny pruned + base pair) shared by tests/loadtests and tests/deploy.

The server process and the tiny model pair come from the server's own tests
(``tests.server.conftest.ServerProcess``, ``tests.server.conftest.model_pair``); both
conftests here import the fixtures below, and ``shared_server`` starts the process once per
session whichever directory asks first.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
_shared: dict[str, ServerProcess] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_server(model_pair: dict) -> ServerProcess:
    server = _shared.get("live")
    if server is None or server.proc.poll() is not None:
        # a shadow rule that samples nothing: its (zero) series are exported for the dashboard's queries,
        # and no request is shadowed, so load figures are the models' own
        server = _shared["live"] = ServerProcess(model_pair, "--max-batch-size", "8", "--max-wait-ms", "5",
                                                 "--shadow", "pruned=base:0")
    return server


def stop_shared() -> None:
    server = _shared.pop("live", None)
    if server is not None:
        server.stop()
        server.log.close()


def metric_samples(url: str) -> dict[str, list]:
    """Sample name (as exposed, e.g. slimspeech_requests_total) -> [(labels, value)] from GET /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture(scope="session")
def live_server(model_pair):
    yield shared_server(model_pair)
    stop_shared()


@pytest.fixture(scope="session")
def bench_manifest(speech_files, tmp_path_factory) -> Path:
    """A small manifest in the benchmark's format: 3 espeak-ng clips with transcripts and fr/de translations."""
    import soundfile as sf

    from prune_tools.data.manifest import write_manifest

    texts = [("the small dog sees the red ball", "le petit chien voit la balle rouge",
              "der kleine Hund sieht den roten Ball"),
             ("three cats sleep in the garden", "trois chats dorment dans le jardin", "drei Katzen schlafen im Garten"),
             ("hello", "bonjour", "hallo")]
    d = tmp_path_factory.mktemp("bench")
    rows = []
    for i, (path, (en, fr, de)) in enumerate(zip(speech_files, texts)):
        info = sf.info(path)
        rows.append({"id": f"clip-{i}", "audio": str(Path(path).resolve()), "duration": info.frames / info.samplerate,
                     "text": en, "translation": {"fr": fr, "de": de}})
    return write_manifest(d / "test-clean.jsonl", rows)
