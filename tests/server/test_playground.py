"""The playground at ``/`` and the API docs, offline: every file they load comes from the app itself;
(slow) the page driven in headless Chromium against a real server with both demo models and an API
key: record from a fake microphone, run both models, read both texts, the word diff and the figures;
upload a file; translate. Screenshots go to ``$SLIMSPEECH_ARTIFACTS`` (default ``runs/test-artifacts``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from server.settings import Settings
from speechllm.scoring import utterance_wer as wer
from tests.conftest import ROOT, encode_audio, espeak_wav, require
from tests.server.conftest import InProcessServer, ServerProcess

SENTENCE = "the small dog sees the red ball"
EXTERNAL = re.compile(r"""(?:https?:)?//[\w.-]+\.\w+""")


@pytest.fixture(scope="module")
def client(model_pair):
    server = InProcessServer(Settings(models=model_pair, api_key="sekret"))
    yield server
    server.close()


def local_refs(html: str) -> list[str]:
    """What a page or script loads (not the links it shows): src=, <link href=, a worklet module."""
    return (re.findall(r"""src=["']([^"']+)["']""", html) + re.findall(r"""<link[^>]*href=["']([^"']+)["']""", html)
            + re.findall(r"""addModule\(["']([^"']+)""", html))


@pytest.mark.parametrize("page", ["/", "/docs", "/redoc"])
def test_pages_load_nothing_from_elsewhere(client, page):
    """The page, and every file it names, is answered by the app; none names another host (a CDN)."""
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = local_refs(r.text)
    assert refs, "a page that loads nothing would pass vacuously"
    assert not EXTERNAL.search(r.text), EXTERNAL.search(r.text)
    for ref in refs:
        assert ref.startswith("/"), ref
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        if ref.startswith("/static/"):  # our own files: no other host either (vendored bundles name URLs in code)
            assert not EXTERNAL.search(asset.text), (ref, EXTERNAL.search(asset.text))
            assert local_refs(asset.text) == [] or all(x.startswith("/") for x in local_refs(asset.text))


def test_the_page_is_open_and_the_api_behind_it_is_not(client):
    """With an API key the page still loads (it asks for the key), the models it lists do not without it."""
    assert client.get("/").status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
    worklet = client.get("/static/recorder-worklet.js")
    assert worklet.status_code == 200 and 'registerProcessor("pcm-recorder"' in worklet.text


def test_docs_stay_out_of_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith(("/static", "/docs")) for p in paths)


# ---- the page in a real browser -----------------------------------------------------------------------

def chromium() -> str | None:
    for candidate in (os.environ.get("SLIMSPEECH_CHROMIUM"), "/usr/lib/chromium/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def artifacts() -> Path:
    out = Path(os.environ.get("SLIMSPEECH_ARTIFACTS", ROOT / "runs" / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def demo_server():
    from speechllm.modeldir import DEMO_DIR

    server = ServerProcess({"demo-pruned": f"{DEMO_DIR}-pruned", "demo": str(DEMO_DIR)}, "--api-key", "sekret")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> tuple[str, float]:
    """What the fake microphone plays once: the sentence at 48 kHz with some silence around it."""
    d = tmp_path_factory.mktemp("mic")
    clip = espeak_wav(SENTENCE, d / "s.wav")
    out = d / "mic.wav"
    subprocess.run(["sox", clip, "-r", "48000", "-b", "16", str(out), "pad", "0.3", "0.6"], check=True)
    return str(out), sf.info(str(out)).duration


@pytest.mark.slow  # a server process with both demo models, and a browser
@pytest.mark.timeout(600)
def test_playground_in_chromium(demo_server, microphone, speech_files, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    exe = chromium()
    require(exe is not None, "chromium", "apt-get install chromium; scripts/setup.sh does")
    mic, mic_seconds = microphone
    shots = artifacts()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(demo_server.url + "/")
            # the server has a key: the page says so, and lists the models once it is typed in
            page.wait_for_function("document.getElementById('status').textContent.includes('API key')")
            page.fill("#key", "sekret")
            page.dispatch_event("#key", "change")
            page.wait_for_selector("#models input[data-model='demo']")
            assert page.locator("#models input:checked").count() == 2

            # record from the microphone (the fake device plays the clip once from when it opens)
            page.click("#record")
            page.wait_for_function("document.getElementById('record').classList.contains('recording')")
            page.wait_for_timeout(int((mic_seconds + 0.7) * 1000))
            page.click("#record")
            page.wait_for_function("document.getElementById('clip').textContent.includes('recording.wav')")
            recorded = float(re.search(r"([\d.]+) s", page.inner_text("#clip")).group(1))
            assert mic_seconds <= recorded < mic_seconds + 3, (recorded, mic_seconds)
            texts = run_both(page)
            page.screenshot(path=str(shots / "playground-recorded.png"), full_page=True)
            for model, text in texts.items():
                assert wer(SENTENCE, text) <= 0.25, (model, text)
            for model in texts:  # every figure is there, and a number
                card = page.locator(f".card[data-model='{model}']")
                for key in ("latency", "ttft", "tokens", "tokens_per_s", "rtfx"):
                    value = card.locator(f"dd[data-figure='{key}']").inner_text()
                    assert re.match(r"^\d+(\.\d+)?( ms)?$", value), (model, key, value)
                assert "decoder layers" in card.locator(".facts").inner_text()
            # the diff is on the pruned model's card, against the model with more decoder layers
            diff = page.locator(".card[data-model='demo-pruned'] [data-figure='disagreement']").inner_text()
            assert "demo" in diff and ("same words" in diff or "word edit" in diff), diff
            assert page.locator(".card[data-model='demo'] [data-figure='disagreement']").count() == 0

            # upload a file as Safari records (mp4/aac, .m4a; the server decodes it with PyAV), then translate it
            m4a = tmp_path / "clip.m4a"
            m4a.write_bytes(encode_audio(sf.read(speech_files[1], dtype="float32")[0], 16000, "m4a"))
            page.set_input_files("#file", str(m4a))
            page.wait_for_function("document.getElementById('clip').textContent.includes('clip.m4a')")
            texts = run_both(page)
            assert all(wer("three cats sleep in the garden", t) <= 0.34 for t in texts.values()), texts
            page.select_option("#task", "translate")
            page.select_option("#target", "fr")
            texts = run_both(page)
            page.screenshot(path=str(shots / "playground-translated.png"), full_page=True)
            assert all(len(t.split()) >= 3 for t in texts.values()), texts
            assert not errors, errors
        finally:
            browser.close()
    print(f"playground screenshots: {shots}")


def run_both(page) -> dict[str, str]:
    """Click Run; wait for both cards to finish; -> model -> its text."""
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('.card').length === 2 && "
                           "[...document.querySelectorAll('.card')].every(c => c.dataset.state !== 'running')",
                           timeout=180_000)
    cards = page.locator(".card")
    out = {}
    for i in range(cards.count()):
        card = cards.nth(i)
        assert card.get_attribute("data-state") == "done", card.inner_text()
        out[card.get_attribute("data-model")] = card.locator(".text").inner_text()
    return out
