"""The server's parts on their own: settings and flags, long-audio splitting and joining, formats, layering."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from server.formats import Segment, Transcript, to_srt, to_vtt, verbose
from server.longform import TextJoiner, frame_energy, overlap_end, plan_chunks
from server.main import settings_from_args
from server.routers.models import summarize
from server.settings import Settings, parse_models
from speechllm.errors import ModelDirError, SlimError
from tests.conftest import file_imports

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---- settings ------------------------------------------------------------------------------
def test_settings_from_env_and_flags(monkeypatch, model_pair):
    monkeypatch.setenv("SLIMSPEECH_MODELS", f"pruned={model_pair['pruned']},base={model_pair['base']}")
    monkeypatch.setenv("SLIMSPEECH_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("SLIMSPEECH_API_KEY", "sekret")
    s = Settings()
    assert s.models == model_pair and s.max_batch_size == 4 and s.api_key.get_secret_value() == "sekret"
    assert s.max_upload_bytes == 25 * 1024 * 1024 and s.engine == "torch" and s.device == "auto"
    assert "sekret" not in repr(s)
    # flags win over the environment; --model repeats
    s = settings_from_args(["--model", f"p={model_pair['pruned']}", "--max-batch-size", "16", "--max-wait-ms", "2.5",
                            "--device", "cpu", "--port", "9000", "--max-upload-mb", "1"])
    assert s.models == {"p": model_pair["pruned"]} and s.max_batch_size == 16 and s.max_wait_ms == 2.5
    assert s.port == 9000 and s.device == "cpu" and s.max_upload_bytes == 1024 * 1024
    monkeypatch.setenv("SLIMSPEECH_MODELS", '{"x": "%s"}' % model_pair["base"])  # JSON works too
    assert Settings().models == {"x": model_pair["base"]}
    assert parse_models(["/models/tiny-pruned"]) == {"tiny-pruned": "/models/tiny-pruned"}  # --model DIR


@pytest.mark.parametrize("argv, flag", [
    (["--max-batch-size", "0"], "--max-batch-size"),
    (["--device", "gpu7"], "--device"),
    (["--engine", "tensorrt"], "--engine"),
    (["--model", "bad name=/x"], "--model"),
    (["--vllm-args", "{not json"], "--vllm-args"),
    (["--vllm-args", "[1, 2]"], "--vllm-args"),
    (["--vllm-gpu-memory-utilization", "1.5"], "--vllm-gpu-memory-utilization"),
    (["--shadow", "pruned"], "--shadow"),
    (["--shadow", "pruned=base:1.5"], "--shadow"),
    (["--shadow", "pruned=pruned"], "--shadow"),
])
def test_bad_flags_name_the_flag(argv, flag):
    with pytest.raises(SlimError) as e:
        settings_from_args(argv)
    assert str(e.value).startswith(flag)


def test_model_dirs_fail_fast_and_demo_default(tmp_path, model_pair):
    with pytest.raises(ModelDirError, match="model 'gone'.*not found"):
        Settings(models={"gone": str(tmp_path / "nope")}).model_dirs()
    # no models configured: the embedded demo model (absent in this checkout -> a clear error naming the fix)
    from speechllm.modeldir import DEMO_DIR, SPEC_FILE

    s = Settings(demo_pruned_dir=model_pair["pruned"])
    if (DEMO_DIR / SPEC_FILE).is_file():
        assert s.model_dirs() == {"demo": DEMO_DIR, "demo-pruned": pathlib.Path(model_pair["pruned"])}
    else:
        with pytest.raises(ModelDirError, match="demo model is missing.*--model"):
            s.model_dirs()


def test_serve_verb_reports_bad_settings_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "speechllm.cli", "serve", "--model", f"x={tmp_path}/missing"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: model 'x': model dir not found")


# ---- long audio ------------------------------------------------------------------------------
def _speechlike(rng, bursts):
    """Noise bursts (speech) with quiet gaps; -> audio, list of (gap_start, gap_end) samples."""
    parts, gaps, n = [], [], 0
    for seconds in bursts:
        burst = 0.3 * rng.standard_normal(int(seconds * 16000))
        gap = 0.001 * rng.standard_normal(6400)
        parts += [burst, gap]
        gaps.append((n + len(burst), n + len(burst) + len(gap)))
        n += len(burst) + len(gap)
    return np.concatenate(parts).astype(np.float32), gaps


def test_plan_chunks_cuts_in_quiet_gaps_within_the_window():
    rng = np.random.default_rng(0)
    wav, gaps = _speechlike(rng, rng.uniform(1.0, 3.0, size=20))
    chunks = plan_chunks(wav, window_s=10.0, overlap_s=0.5)
    assert len(chunks) >= 4
    assert chunks[0].start == 0 and chunks[0].seg_start == 0 and chunks[-1].end == chunks[-1].seg_end == len(wav)
    for a, b in zip(chunks, chunks[1:]):
        assert a.seg_end == b.seg_start  # segments tile the timeline
        assert b.start == b.seg_start - 8000  # 0.5 s overlap before each cut
        assert any(g0 <= b.seg_start <= g1 for g0, g1 in gaps), "cut inside speech"
    assert all(c.end - c.start <= 10 * 16000 for c in chunks)
    assert plan_chunks(wav[:16000 * 9], 10.0) == plan_chunks(wav[:16000 * 9], 10.0)[:1]  # fits: one chunk


def test_plan_chunks_on_uniform_noise_still_covers_everything():
    wav = np.random.default_rng(1).standard_normal(16000 * 47).astype(np.float32)
    chunks = plan_chunks(wav, window_s=10.0, overlap_s=0.5)
    assert chunks[-1].end == len(wav) and all(c.end - c.start <= 160000 for c in chunks)
    assert len(frame_energy(wav)) == 4700


def test_joiner_drops_words_repeated_across_a_cut():
    assert overlap_end("the dog sees the", "sees the red ball", 4) == len("sees the")
    assert overlap_end("a b", "c d", 4) == 0
    assert overlap_end("x sees the", "sees the", 4) == 0  # a chunk keeps at least one word
    assert overlap_end("x sees the", "sees the end", 4) == len("sees the")
    j = TextJoiner()
    j.finish_chunk("the small dog sees the")
    j.finish_chunk("Sees the red ball.")
    j.finish_chunk("")
    j.finish_chunk("ball and a cat")
    assert j.parts == ["the small dog sees the", "red ball.", "", "and a cat"]
    assert j.joined == "the small dog sees the red ball. and a cat"


def test_joiner_streamed_deltas_add_up_to_the_joined_text():
    texts = ["the small dog sees the", "sees the red ball and two very small cats sleep", "sleep in", "in the garden"]
    whole = TextJoiner()
    for t in texts:
        whole.finish_chunk(t)
    streamed, out = TextJoiner(), []
    for t in texts:
        pieces = [t[i:i + 3] for i in range(0, len(t), 3)]
        for p in pieces:
            out.append(streamed.feed(p))
        out.append(streamed.finish_chunk(t))
    assert "".join(out) == whole.joined == streamed.joined
    assert whole.joined == "the small dog sees the red ball and two very small cats sleep in the garden"
    assert whole.parts == ["the small dog sees the", "red ball and two very small cats sleep", "in", "the garden"]
    # the second chunk streams before it ends, once enough words rule out more overlap
    assert any(out[i] for i in range(len(texts[0]) // 3 + 2, len(texts[0]) // 3 + 2 + len(texts[1]) // 3))


# ---- formats ---------------------------------------------------------------------------------
def _transcript():
    segs = [Segment(0, 0.0, 9.5, "hello there", [1, 2], -0.25), Segment(1, 9.5, 3725.0421, "general", [3], None)]
    return Transcript("transcribe", "english", 3725.0421, "hello there general", segs, 10, 3)


def test_srt_and_vtt():
    assert to_srt(_transcript()) == ("1\n00:00:00,000 --> 00:00:09,500\nhello there\n\n"
                                     "2\n00:00:09,500 --> 01:02:05,042\ngeneral\n")
    assert to_vtt(_transcript()) == ("WEBVTT\n\n00:00:00.000 --> 00:00:09.500\nhello there\n\n"
                                     "00:00:09.500 --> 01:02:05.042\ngeneral\n")


def test_verbose_json_has_openai_segment_fields():
    v = verbose(_transcript())
    assert v["task"] == "transcribe" and v["language"] == "english" and v["duration"] == 3725.042
    assert v["usage"] == {"type": "duration", "seconds": 3725.042}
    keys = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
            "no_speech_prob"}
    assert all(set(s) == keys for s in v["segments"])
    assert v["segments"][0]["avg_logprob"] == -0.25 and v["segments"][1]["seek"] == 950


def test_provenance_summary_drops_bulk():
    prov = {"parent": "base", "removed_layers": [1, 2], "analysis": {"distances": [[0.1] * 8] * 8, "best": 3},
            "eval": {"wer": {"test": 0.1}}, "log": list(range(1000))}
    assert summarize(prov) == {"parent": "base", "removed_layers": [1, 2], "analysis": {"best": 3},
                               "eval": {"wer": {"test": 0.1}}}


# ---- layering --------------------------------------------------------------------------------



def test_http_layer_and_scheduler_never_touch_torch():
    torch_free = [*(ROOT / "server" / "routers").glob("*.py")] + [
        ROOT / "server" / name for name in ("service.py", "main.py", "formats.py", "longform.py", "metrics.py",
                                            "middleware.py", "errors.py", "settings.py")] + [
        ROOT / "server" / "engines" / name for name in ("base.py", "scheduler.py", "__init__.py")]
    for path in torch_free:
        assert not file_imports(path) & {"torch", "transformers", "prune_tools"}, path
