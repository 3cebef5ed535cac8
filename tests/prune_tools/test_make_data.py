"""The synthetic benchmark builder: manifests, audio, split hygiene, determinism, errors, CLI."""

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from prune_tools.data import synth
from prune_tools.data.make import SPLITS, excluded_sentences, main, make_data, parse_sizes, text_corpus
from prune_tools.data.manifest import ManifestError, read_manifest, write_manifest
from prune_tools.data.synth import TRAIN_VOICES, UNSEEN_VOICES, SynthError, add_noise, synthesize
from speechllm import cli
from speechllm.errors import SlimError
from tests.conftest import require_tools

TINY = {"train": 6, "dev": 3, "test-clean": 3, "test-noisy": 3, "test-unseen-voice": 3}


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    summary = make_data(out, seed=5, sizes=TINY, workers=2)
    return out, summary


def _rows(out, split):
    return read_manifest(out / f"{split}.jsonl")


def test_manifests_and_audio_are_valid(bench):
    out, summary = bench
    for split in SPLITS:
        rows = _rows(out, split)
        assert len(rows) == TINY[split]
        for r in rows:
            assert set(r) == {"id", "audio", "duration", "text", "translation", "voice", "speed", "pitch", "snr"}
            assert set(r["translation"]) == {"fr", "de"} and all(r["translation"].values())
            assert 130 <= r["speed"] <= 190 and 30 <= r["pitch"] <= 70
            x, sr = sf.read(r["audio"])
            assert sr == 16000 and x.ndim == 1
            assert abs(len(x) / sr - r["duration"]) < 0.01
            assert sf.info(r["audio"]).subtype == "PCM_16"
        # the manifest stores audio relative to its own folder
        raw = [json.loads(l) for l in (out / f"{split}.jsonl").read_text().splitlines()]
        assert all(not r["audio"].startswith("/") for r in raw)
    info = json.loads((out / "data.json").read_text())
    assert info == summary
    assert info["counts"] == TINY and info["seed"] == 5
    assert info["generator"]["name"] and info["generator"]["version"]
    assert info["total_audio_hours"] > 0 and info["lexicon_size"]["en"] >= 300


def test_split_hygiene(bench):
    out, _ = bench
    rows = {s: _rows(out, s) for s in SPLITS}
    train_texts = {r["text"] for r in rows["train"]}
    for split in SPLITS:
        texts = [r["text"] for r in rows[split]]
        assert len(set(texts)) == len(texts), f"duplicate sentence in {split}"
        if split != "train":
            assert not train_texts & set(texts), f"{split} sentence in train"
    for split in SPLITS:
        voices = {r["voice"] for r in rows[split]}
        if split == "test-unseen-voice":
            assert voices <= set(UNSEEN_VOICES)
        else:
            assert voices <= set(TRAIN_VOICES) and not voices & set(UNSEEN_VOICES)
    assert all(r["snr"] is not None and 5 <= r["snr"] <= 20 for r in rows["test-noisy"])
    for split in ("dev", "test-clean", "test-unseen-voice"):
        assert all(r["snr"] is None for r in rows[split])
    assert excluded_sentences(out) == {r["text"] for s in SPLITS if s != "train" for r in rows[s]}
    fresh = text_corpus(1, 50, excluded_sentences(out))
    assert len({s.en for s in fresh}) == 50 and not {s.en for s in fresh} & excluded_sentences(out)


def test_same_seed_same_data(bench, tmp_path):
    out, _ = bench
    make_data(tmp_path, seed=5, sizes=TINY, workers=1)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (out / f"{split}.jsonl").read_bytes()
    for r in _rows(tmp_path, "test-noisy"):
        other = out / "audio" / "test-noisy" / (r["id"] + ".flac")
        assert hashlib.md5(open(r["audio"], "rb").read()).digest() == hashlib.md5(other.read_bytes()).digest()


def test_every_voice_sounds_different(tmp_path):
    # espeak-ng silently ignores some "+variant" suffixes (en-gb+f2 == en-gb): every voice must differ
    digests = {}
    for v in TRAIN_VOICES + UNSEEN_VOICES:
        p = tmp_path / f"{v}.flac"
        d = synthesize("the dog sees the cat", v, 160, 50, p)
        assert 0.5 < d < 5
        digests[v] = hashlib.md5(sf.read(p)[0].tobytes()).hexdigest()
    assert len(set(digests.values())) == len(digests), digests


def test_add_noise_hits_the_snr_and_is_deterministic():
    t = np.arange(32000) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noisy = add_noise(clean, 10.0, np.random.default_rng(0))
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5
    assert np.array_equal(noisy, add_noise(clean, 10.0, np.random.default_rng(0)))
    assert not np.array_equal(noisy, add_noise(clean, 10.0, np.random.default_rng(1)))


def test_missing_tools_error_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)  # as on a machine without them
    with pytest.raises(SynthError, match="apt-get install -y espeak-ng sox"):
        synthesize("hello", "en-us", 160, 50, tmp_path / "x.flac")
    assert cli.main(["make-data", "--out", str(tmp_path / "d"), "--sizes", "train=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and "apt-get install -y espeak-ng sox" in err


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
    good = {"id": "a", "audio": "a.flac", "text": "hi"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + "{not json\n")
    with pytest.raises(ManifestError, match="line 2"):
        read_manifest(bad, check_audio=False)
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text(json.dumps({"id": "a", "text": "hi"}) + "\n")
    with pytest.raises(ManifestError, match="line 1: missing required key.*audio"):
        read_manifest(nokey)
    m = tmp_path / "m.jsonl"
    write_manifest(m, [dict(good, id=str(i), audio=f"clip{i}.flac") for i in range(7)])
    (tmp_path / "clip0.flac").write_bytes(b"")
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    msg = str(e.value)
    assert "\n" not in msg and "6 of 7 audio files missing" in msg and "clip1.flac" in msg and "1 more" in msg
    rows = read_manifest(m, check_audio=False)
    assert rows[0]["audio"] == str((tmp_path / "clip0.flac").resolve())


def test_bad_sizes(capsys, tmp_path):
    """make-data reports bad input as every verb does: a SlimError, one ``error:`` line, exit 2."""
    assert cli.main(["make-data", "--out", str(tmp_path), "--sizes", "train=5,bogus=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --sizes") and "bogus" in err and "test-clean" in err
    assert cli.main(["make-data", "--out", str(tmp_path), "--sizes", "dev=three"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dev" in err and "integer" in err
    assert cli.main(["make-data"]) == 2 and "--out" in capsys.readouterr().err
    assert cli.main(["make-data", "--out", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    with pytest.raises(SlimError, match="bogus"):
        main(["--out", str(tmp_path), "--sizes", "bogus=1"])
    assert parse_sizes("dev=7") == {**parse_sizes(None), "dev": 7}
    assert not list(tmp_path.iterdir())
