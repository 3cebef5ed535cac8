"""Build the synthetic multilingual speech benchmark (``slimspeech make-data``).

Splits, each written to ``OUT/<split>.jsonl`` with audio in ``OUT/audio/<split>/<id>.flac``:

* ``train`` (24000): training voices, 25% of utterances with noise at 5..25 dB SNR
* ``dev`` (300), ``test-clean`` (300): training voices, clean
* ``test-noisy`` (300): training voices, noise at 5..20 dB SNR
* ``test-unseen-voice`` (300): only voices never used elsewhere, clean

Sentences come from :class:`~prune_tools.data.grammar.Grammar` (English with
French and German translations). They are unique within a split and disjoint
across splits: the test and dev splits are drawn first and every later split
excludes them, so no dev/test English sentence occurs in train. Everything is
deterministic from ``seed`` (same seed -> byte-identical manifests and audio);
``OUT/data.json`` records what produced the data.

Run::

    slimspeech make-data --out data/bench [--seed 0] [--sizes train=24000,dev=300] [--workers 2]
    python -m prune_tools.data.make --out data/bench
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from speechllm.errors import SlimError

from .grammar import Grammar, Sentence
from .manifest import ManifestError, read_manifest, write_manifest
from .synth import (PITCH_RANGE, SPEED_RANGE, TRAIN_VOICES, UNSEEN_VOICES, SynthError, add_noise, read_audio,
                    require_tools, synthesize, tool_versions, write_audio)

__all__ = ["SPLITS", "DEFAULT_SIZES", "GENERATOR", "VERSION", "make_data", "excluded_sentences",
           "text_corpus", "parse_sizes", "main"]

log = logging.getLogger(__name__)

GENERATOR = "slimspeech.prune_tools.data.make"
VERSION = "1.0"
SPLITS = ("train", "dev", "test-clean", "test-noisy", "test-unseen-voice")
DEFAULT_SIZES = {"train": 24000, "dev": 300, "test-clean": 300, "test-noisy": 300, "test-unseen-voice": 300}
HELDOUT_SPLITS = ("dev", "test-clean", "test-noisy", "test-unseen-voice")
# held-out splits are drawn first so their sentences can be excluded from everything after
_DRAW_ORDER = ("test-unseen-voice", "test-noisy", "test-clean", "dev", "train")
# split -> (voices, probability of noise, SNR range in dB)
_SPLIT_AUDIO = {
    "train": (TRAIN_VOICES, 0.25, (5.0, 25.0)),
    "dev": (TRAIN_VOICES, 0.0, None),
    "test-clean": (TRAIN_VOICES, 0.0, None),
    "test-noisy": (TRAIN_VOICES, 1.0, (5.0, 20.0)),
    "test-unseen-voice": (UNSEEN_VOICES, 0.0, None),
}


def _rng(seed: int, *parts: str) -> random.Random:
    # string seeds hash with SHA-512 inside random.seed: stable across runs and platforms
    return random.Random(":".join(["slimspeech", str(seed), *parts]))


def _int_seed(seed: int, *parts: str) -> int:
    digest = hashlib.sha256(":".join(["slimspeech", str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _unique_sentences(grammar: Grammar, rng: random.Random, n: int, exclude: set[str],
                      what: str) -> list[Sentence]:
    out: list[Sentence] = []
    seen = set(exclude)
    tries, limit = 0, 50 * n + 1000
    while len(out) < n:
        tries += 1
        if tries > limit:
            raise SlimError(f"could only draw {len(out)} unique sentences for {what} out of {n} requested; "
                            "ask for fewer", param="sizes")
        s = grammar.sample(rng)
        if s.en not in seen:
            seen.add(s.en)
            out.append(s)
    return out


def text_corpus(seed: int, n: int, exclude: Iterable[str] = ()) -> list[Sentence]:
    """``n`` fresh grammar sentences (unique English), none of whose English text is in ``exclude``.

    For text-only training data: pass ``excluded_sentences(data_dir)`` to keep test sentences out.
    """
    return _unique_sentences(Grammar(), _rng(seed, "corpus"), n, set(exclude), "the text corpus")


def excluded_sentences(out: str | Path) -> set[str]:
    """English texts of the dev and test splits of a data set built by :func:`make_data`."""
    out = Path(out)
    texts: set[str] = set()
    for split in HELDOUT_SPLITS:
        p = out / f"{split}.jsonl"
        if p.is_file():
            texts.update(r["text"] for r in read_manifest(p, check_audio=False))
    if not texts:
        raise ManifestError(f"no dev/test manifests in {out}; build the data first with "
                            f"`slimspeech make-data --out {out}`")
    return texts


def _render(job: dict) -> float:
    """Worker: synthesize one utterance (and add noise); returns its duration in seconds."""
    dur = synthesize(job["text"], job["voice"], job["speed"], job["pitch"], job["path"])
    if job["snr"] is not None:
        rng = np.random.default_rng(job["noise_seed"])
        dur = write_audio(job["path"], add_noise(read_audio(job["path"]), job["snr"], rng))
    return dur


def _plan(seed: int, sizes: dict[str, int], out: Path) -> dict[str, list[dict]]:
    """Sentences and audio settings for every utterance, split by split (no audio is made here)."""
    grammar = Grammar()
    used: set[str] = set()
    plan: dict[str, list[dict]] = {}
    for split in _DRAW_ORDER:
        n = sizes.get(split, 0)
        sents = _unique_sentences(grammar, _rng(seed, split, "text"), n, used, f"split {split!r}")
        used.update(s.en for s in sents)
        voices, p_noise, snr_range = _SPLIT_AUDIO[split]
        arng = _rng(seed, split, "audio")
        rows = []
        for i, s in enumerate(sents):
            uid = f"{split}-{i:06d}"
            voice = arng.choice(voices)
            speed = arng.randint(*SPEED_RANGE)
            pitch = arng.randint(*PITCH_RANGE)
            noisy = arng.random() < p_noise
            snr = round(arng.uniform(*snr_range), 1) if noisy and snr_range else None
            rows.append({
                "id": uid, "audio": f"audio/{split}/{uid}.flac", "text": s.en,
                "translation": {"fr": s.fr, "de": s.de}, "voice": voice, "speed": speed, "pitch": pitch,
                "snr": snr, "_path": str(out / "audio" / split / f"{uid}.flac"),
                "_noise_seed": _int_seed(seed, split, uid, "noise"),
            })
        plan[split] = rows
    return {s: plan[s] for s in SPLITS}


def _clear_split_audio(folder: Path, split: str) -> None:
    """Remove FLAC files a previous run left for this split (only our own naming pattern)."""
    if folder.is_dir():
        for f in folder.glob(f"{split}-*.flac"):
            f.unlink()


def make_data(out: str | Path, seed: int = 0, sizes: dict | None = None, workers: int = 2) -> dict:
    """Generate the benchmark into ``out``; returns the ``data.json`` summary (also written there).

    sizes: split -> number of utterances (missing splits get their default; 0 skips a split).
    workers: synthesis processes (espeak-ng + sox run in each).
    """
    t0 = time.time()
    sizes = parse_sizes(sizes)
    if workers < 1:
        raise SlimError(f"--workers: must be 1 or more, got {workers}", param="workers")
    require_tools()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grammar = Grammar()
    plan = _plan(seed, sizes, out)
    jobs = []
    for split, rows in plan.items():
        folder = out / "audio" / split
        _clear_split_audio(folder, split)
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [{"text": r["text"], "voice": r["voice"], "speed": r["speed"], "pitch": r["pitch"],
                  "snr": r["snr"], "path": r["_path"], "noise_seed": r["_noise_seed"]} for r in rows]
    log.info("synthesizing %d utterances into %s with %d worker(s)", len(jobs), out, workers)
    durations = _run_jobs(jobs, workers)
    k = 0
    counts, hours = {}, {}
    for split, rows in plan.items():
        clean_rows = []
        for r in rows:
            r = {key: v for key, v in r.items() if not key.startswith("_")}
            r["duration"] = round(durations[k], 4)
            k += 1
            clean_rows.append({key: r[key] for key in ("id", "audio", "duration", "text", "translation",
                                                        "voice", "speed", "pitch", "snr")})
        write_manifest(out / f"{split}.jsonl", clean_rows)
        counts[split] = len(clean_rows)
        hours[split] = round(sum(r["duration"] for r in clean_rows) / 3600, 4)
    vocab = grammar.vocabulary()
    summary = {
        "generator": {"name": GENERATOR, "version": VERSION, "grammar": f"{Grammar.name} {Grammar.version}"},
        "seed": seed,
        "sizes": sizes,
        "counts": counts,
        "audio_hours": hours,
        "total_audio_hours": round(sum(hours.values()), 4),
        "voices": {"train": list(TRAIN_VOICES), "unseen": list(UNSEEN_VOICES)},
        "split_voices": {s: ("unseen" if _SPLIT_AUDIO[s][0] is UNSEEN_VOICES else "train") for s in SPLITS},
        "speed_range_wpm": list(SPEED_RANGE),
        "pitch_range": list(PITCH_RANGE),
        "noise": {s: {"probability": _SPLIT_AUDIO[s][1], "snr_db": list(_SPLIT_AUDIO[s][2] or [])}
                  for s in SPLITS},
        "sample_rate": 16000,
        "audio_format": "flac, mono, 16-bit",
        "lexicon_size": {lang: len(words) for lang, words in vocab.items()},
        "lexicon_lemmas": {"nouns": len(grammar.nouns), "verbs": len(grammar.verbs),
                           "adjectives": len(grammar.adjs)},
        "manifests": {s: f"{s}.jsonl" for s in SPLITS},
        "tools": tool_versions(),
        "workers": workers,
        "wall_seconds": round(time.time() - t0, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "data.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s: %s utterances, %.2f h of audio in %.0f s", out / "data.json", sum(counts.values()),
             summary["total_audio_hours"], summary["wall_seconds"])
    return summary


def _run_jobs(jobs: list[dict], workers: int) -> list[float]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synthesizing", unit="utt", disable=None)
    try:
        if workers == 1 or len(jobs) <= 1:
            out = []
            for j in jobs:
                out.append(_render(j))
                bar.update()
            return out
        # fork is cheap and inherits the imported modules; the workers only call subprocesses
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            out = []
            for d in pool.imap(_render, jobs, chunksize=8):
                out.append(d)
                bar.update()
            return out
    finally:
        bar.close()


def parse_sizes(sizes: dict | str | None) -> dict[str, int]:
    """Normalise sizes: a dict or "train=100,dev=10" string -> every split with a non-negative int.

    Raises SlimError (a ValueError) naming the bad split or value.
    """
    result = dict(DEFAULT_SIZES)
    if sizes is None:
        return result
    if isinstance(sizes, str):
        items = {}
        for part in filter(None, (p.strip() for p in sizes.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise SlimError(f"--sizes: {part!r} is not SPLIT=N; write e.g. train=24000,dev=300", param="sizes")
            items[name.strip()] = value.strip()
        sizes = items
    for name, value in sizes.items():
        if name not in DEFAULT_SIZES:
            raise SlimError(f"--sizes: unknown split {name!r}; use one of {', '.join(SPLITS)}", param="sizes")
        try:
            n = int(value)
            if isinstance(value, float) and value != n:
                raise ValueError
        except (TypeError, ValueError):
            raise SlimError(f"--sizes: {name}={value!r} is not an integer; give a whole number, "
                            f"e.g. {name}=300", param="sizes") from None
        if n < 0:
            raise SlimError(f"--sizes: {name}={n} is negative; give 0 or more", param="sizes")
        result[name] = n
    return result


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump: the CLI prints a SlimError as "error: ..."
        raise SlimError(f"{message} (see `slimspeech make-data --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="slimspeech make-data", description="Build the synthetic multilingual speech benchmark.")
    p.add_argument("--out", required=True, help="output folder (manifests, audio/, data.json)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--sizes", default=None,
                   help="utterances per split, e.g. train=24000,dev=300,test-clean=300,test-noisy=300,"
                        "test-unseen-voice=300 (unlisted splits keep their default)")
    p.add_argument("--workers", type=int, default=2, help="synthesis processes (default 2)")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``make-data`` verb: bad flags and tool failures raise SlimError (the CLI prints one line, exit 2)."""
    args = build_parser().parse_args(argv)
    sizes = parse_sizes(args.sizes)
    if args.workers < 1:
        raise SlimError(f"--workers: must be 1 or more, got {args.workers}", param="workers")
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        make_data(args.out, seed=args.seed, sizes=sizes, workers=args.workers)
    except SynthError as exc:  # espeak-ng / sox missing or failing: the message says how to install or what failed
        raise SlimError(str(exc)) from exc
    print(Path(args.out) / "data.json")
    return 0


if __name__ == "__main__":
    from speechllm import cli

    raise SystemExit(cli.main(["make-data", *sys.argv[1:]]))
