"""``slimspeech train``: train the demo ``slam`` model on the built-in benchmark, in resumable stages.

    slimspeech make-data --out data/bench
    slimspeech train --data data/bench --out runs/demo              # prep, text || ctc, joint
    slimspeech train --data data/bench --out runs/demo --stage ship # fp16 model dir: runs/demo/ship
    python scripts/release_demo.py --demo runs/demo/ship            # a release: into speechllm/assets/demo

Why stages: trained jointly from scratch (encoder + projector + decoder, CTC on the encoder), a
small decoder learns the text prior of the grammar within minutes and then ignores the audio: in
feasibility runs on 2 CPU cores (a 190-word English grammar, 6,000 utterances, 8-layer decoder)
its greedy WER stayed at 97-100% for 20 minutes while the encoder's own CTC head fell to 10%. A
decoder-only model has to form a copy circuit over the audio prefix first, which joint training
with a decaying learning rate may never reach on such a budget. Training the two halves apart (the
encoder with a CTC head; the decoder on a copy task over pseudo-audio shaped like the CTC head's
output), then connecting them, worked: 1.2% WER after about 38 minutes in all, the connected model
reading the audio from its first step. The stages below are that recipe, extended to translation and made to fit a
754-word grammar in three languages, 12 voices and noise:
- ``prep``: a byte-level BPE tokenizer (4,000) over benchmark text in en/fr/de, and a log-mel
  feature cache (fp16) of the train and dev splits.
- ``text``: the decoder alone, as a text LM on sequences shaped like the speech tasks:
  ``[BOS] <|en|> [pseudo-audio of the English sentence] <|transcribe|> English [EOS]`` and
  ``... <|translate|><|fr|> French [EOS]`` (German likewise), plus plain text in all three
  languages, from fresh grammar sentences (no dev/test sentence). Pseudo-audio tokens have the
  form the projector produces: for ``ctc_compress`` one row of token weights per token times the
  decoder's own embedding table, with the errors of a CTC head (deleted, inserted, substituted,
  confused and repeated tokens) and noise. The decoder thus learns to copy and translate from
  audio-like inputs before it sees audio; the text is unlimited, so this is where translation
  is learned.
- ``ctc``: the encoder and a CTC head over the decoder's vocabulary on speech, beside ``text``
  (half the cores each; whichever finishes first hands its cores to the other). A curriculum: clean
  features first (the alignment forms faster), mel warp + SpecAugment from
  ``ctc_augment_from``, fresh noise on clean clips from ``ctc_noise_from``.
- ``joint``: both connected through the ``ctc_compress`` projector (its MLP residual zero-init),
  trained end to end on transcription + en->fr + en->de with an auxiliary CTC loss, augmented
  like the end of ``ctc``; ``--joint-lr-encoder 0`` freezes the encoder and CTC head instead.
- variants of the joint stage, each in its own ``--out`` with ``--base-run`` pointing at the run
  whose prep, text and ctc stages it reuses (so a variant costs one joint stage): ``--joint-decoder
  frozen`` (only the projector and the encoder train: SLAM with a frozen LLM), ``--joint-decoder
  lora`` (LoRA adapters on the decoder, merged at ship), ``--joint-projector stack_mlp`` (a new
  MLP over stacked encoder frames, outside the decoder's embedding space; with
  ``--joint-lr-encoder 0``). ``connect`` writes the text and ctc checkpoints connected before any
  joint step (``<out>/connected``): the decoder as it was before it saw speech.
- ``ship``: the joint model in fp16 to ``<out>/ship`` (a model dir with provenance: recipe, data,
  minutes, dev scores, fingerprint). It never writes into the package: the shipped demo changes
  only by a release, ``scripts/release_demo.py --demo <out>/ship``.

Every stage runs in the shared loop (``prune_tools.loop.run_loop``, as ``heal`` does): it logs
JSONL (``<out>/<stage>/log.jsonl``), shows a progress bar, checkpoints every ``ckpt_every`` steps
and resumes from its checkpoint when re-run. Batches derive from (seed, step), so a resumed run
draws the same data as an uninterrupted one.

Cores (``--cores``, default: all this process may use, so 2 on the 2-core machine the demo was
trained on): ``all`` runs ``text`` and ``ctc`` as two child processes on half the cores each;
``--threads`` overrides the threads of one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechllm.audio import LogMel, load_audio
from speechllm.builders import build_slam, decoder_config
from speechllm.encoder import EncoderConfig
from speechllm.errors import SlimError
from speechllm.generate import decode, greedy_generate
from speechllm.modeldir import read_json, write_json
from speechllm.provenance import Provenance, now
from speechllm.scoring import score_task, wer
from speechllm.tasks import Task
from speechllm.tokenizer import TASK_TOKENS, train_bpe_tokenizer

from .loop import Schedule, Step, combine_losses, ctc_loss, run_loop
from .options import add_options, config_from_args, option, to_argv
from .rows import reference

log = logging.getLogger(__name__)
STAGES = ("prep", "text", "ctc", "joint", "ship", "connect")
JOINT_DECODER = ("full", "frozen", "lora")
#: stages a variant (``--base-run``) reads from the base run instead of running them itself
SHARED_STAGES = ("prep", "text", "ctc")
TASK_MIX = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]


@dataclass
class TrainConfig:
    """The recipe: every field is a ``slimspeech train`` flag (``--dec-layers``) with this help text."""

    data: str = option("data/bench", "benchmark dir of slimspeech make-data (train/dev manifests)")
    out: str = option("runs/demo", "run dir: one subdir per stage (log, checkpoint, DONE)")
    seed: int = option(0, "seed of the model init, the batches and the augmentation")
    vocab_size: int = option(4000, "byte-level BPE vocabulary size")
    tokenizer_sentences: int = option(40000, "fresh grammar sentences (x3 languages) added to the tokenizer text")
    dec_layers: int = option(12, "decoder (Llama) layers; >= 12 leaves redundancy to measure")
    dec_hidden: int = option(256, "decoder hidden size")
    dec_heads: int = option(4, "decoder attention heads")
    dec_intermediate: int = option(768, "decoder MLP size")
    projector: str = option("ctc_compress", "ctc_compress (about one audio token per text token) or ctc_embed "
                                            "(stacked frames: 12.5 audio tokens/s)",
                            choices=("ctc_compress", "ctc_embed"))
    enc_layers: int = option(4, "encoder (Whisper-style, 4x downsampling) layers")
    enc_dim: int = option(256, "encoder width")
    enc_heads: int = option(4, "encoder attention heads")
    enc_ffn: int = option(1024, "encoder MLP size")
    stack: int = option(2, "ctc_embed: encoder frames stacked per audio token")
    max_audio_seconds: float = option(16.0, "longest clip the encoder takes")
    batch_size: int = option(32, "utterances (or sentences) per step")
    text_steps: int = option(6000, "steps of the text stage")
    text_lr: float = option(1e-3, "peak LR of the text stage")
    ctc_steps: int = option(7000, "steps of the ctc stage")
    ctc_lr: float = option(1.5e-3, "peak LR of the ctc stage")
    ctc_augment_from: int = option(2400, "ctc stage: mel warp + SpecAugment from this step on (clean features "
                                         "before it let the first alignment form faster; joint always augments)")
    ctc_noise_from: int = option(3500, "ctc stage: fresh noise on clean clips from this step on (and in joint)")
    noise_prob: float = option(0.4, "probability that a clean training clip gets fresh noise (the benchmark's "
                                    "white/pink/brown mix, SNR 5-20 dB), features recomputed from the audio")
    joint_steps: int = option(900, "steps of the joint stage")
    joint_lr_decoder: float = option(5e-4, "joint stage: decoder LR")
    joint_lr_projector: float = option(1e-3, "joint stage: projector LR")
    joint_lr_encoder: float = option(1e-4, "joint stage: encoder + CTC head LR (0: frozen, no CTC loss)")
    ctc_weight: float = option(0.3, "joint stage: weight of the auxiliary CTC loss")
    warmup: int = option(100, "linear LR warmup steps of every stage")
    decay_from: float = option(0.7, "constant LR until this fraction of a stage's steps, then linear decay to 10%")
    ckpt_every: int = option(100, "checkpoint every N steps (and at a stage's last step)")
    eval_every: int = option(300, "dev evaluation every N steps (and at a stage's last step)")
    eval_size: int = option(100, "dev utterances per evaluation")
    init_from: str = option("", "continue training: the joint stage starts from this model dir (e.g. the shipped "
                                "demo model) instead of the text/ctc checkpoints; run --stage prep first for the "
                                "feature cache")
    base_run: str = option("", "a variant of a finished recipe: read prep's tokenizer and features and the text "
                               "and ctc checkpoints from this run dir, so only the joint stage (then ship) runs "
                               "in --out")
    joint_decoder: str = option("full", "joint stage: the decoder trains fully (the demo recipe), stays frozen "
                                        "(only the projector, and the encoder unless --joint-lr-encoder 0, train: "
                                        "SLAM with a frozen LLM) or through LoRA adapters (merged at ship)",
                                choices=JOINT_DECODER)
    joint_projector: str = option("", "joint stage: connect through a new projector of this kind instead of "
                                      "--projector's: stack_mlp = an MLP over --stack stacked encoder frames, "
                                      "trained from scratch, its output outside the decoder's word-embedding "
                                      "space (SLAM-LLM's kind; no CTC head, so it needs --joint-lr-encoder 0)",
                                  choices=("stack_mlp",))
    joint_lora_r: int = option(16, "joint stage with --joint-decoder lora: LoRA rank")
    joint_lora_alpha: int = option(32, "joint stage with --joint-decoder lora: LoRA alpha")
    cores: int = option(0, "CPU cores the recipe plans with (0: those this process may use): text and ctc run side "
                           "by side on half each, the one left takes all once the other is done; the other "
                           "stages use all")


# ---------------------------------------------------------------------------------------------
# prep


#: in the joint stage's dir of a continued run: the parent model's provenance when the run began
PARENT_FILE = "parent_provenance.json"


def source_dir(cfg: TrainConfig, stage: str) -> Path:
    """Where a finished stage's outputs are read from: the base run's for a variant's shared stages."""
    return Path(cfg.base_run if cfg.base_run and stage in SHARED_STAGES else cfg.out) / stage


def stage_dir(cfg: TrainConfig, stage: str) -> Path:
    d = Path(cfg.out) / stage
    d.mkdir(parents=True, exist_ok=True)
    return d


def _manifest(cfg: TrainConfig, split: str) -> list[dict]:
    from .data.manifest import read_manifest

    return read_manifest(Path(cfg.data) / f"{split}.jsonl")


def prep(cfg: TrainConfig) -> None:
    from .data.make import excluded_sentences, text_corpus

    d = stage_dir(cfg, "prep")
    if (d / "DONE").exists():
        return
    t0 = time.time()
    train = _manifest(cfg, "train")
    fresh = text_corpus(cfg.seed + 1, cfg.tokenizer_sentences, excluded_sentences(cfg.data))
    texts = [r["text"] for r in train] + [t for r in train for t in r["translation"].values()]
    texts += [s for x in fresh for s in (x.en, x.fr, x.de)]
    tok = train_bpe_tokenizer(texts, cfg.vocab_size, TASK_TOKENS)
    tok.save_pretrained(d / "tokenizer")
    for split in ("train", "dev"):
        rows = train if split == "train" else _manifest(cfg, split)
        feats = [LOGMEL.one(load_audio(r["audio"])).half() for r in tqdm(rows, desc=f"features {split}", mininterval=10)]
        torch.save({"rows": rows, "feats": feats}, d / f"features-{split}.pt")
    words = sorted({w for t in texts for w in t.split()})
    ids = tok(words, add_special_tokens=False)["input_ids"]
    summary = {"vocab": len(tok), "distinct_words": len(words),
               "single_token_words": round(sum(len(x) == 1 for x in ids) / len(ids), 4),
               "train_utterances": len(train), "seconds": round(time.time() - t0, 1)}
    write_json(d / "summary.json", summary)
    (d / "DONE").write_text("ok\n")
    log.info("prep: %s", summary)


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    if cfg.init_from:
        return AutoTokenizer.from_pretrained(Path(cfg.init_from) / "decoder")
    return AutoTokenizer.from_pretrained(source_dir(cfg, "prep") / "tokenizer")


def build_model(cfg: TrainConfig, tok, projector: str | None = None):
    dec = decoder_config("llama", len(tok), tok, layers=cfg.dec_layers, hidden=cfg.dec_hidden, heads=cfg.dec_heads,
                         kv_heads=cfg.dec_heads, intermediate=cfg.dec_intermediate, max_positions=1024)
    enc = EncoderConfig(n_mels=80, d_model=cfg.enc_dim, layers=cfg.enc_layers, heads=cfg.enc_heads,
                        ffn_dim=cfg.enc_ffn, downsample=4, max_source_positions=int(cfg.max_audio_seconds * 25))
    return build_slam(tok, dec, enc, projector=projector or cfg.projector, stack=cfg.stack, projector_hidden=4 * cfg.dec_hidden,
                      max_audio_seconds=cfg.max_audio_seconds, max_new_tokens=96, seed=cfg.seed)


# ---------------------------------------------------------------------------------------------
# running a stage and the cores it gets


def run_stage_loop(cfg: TrainConfig, stage: str, module: torch.nn.Module, prefixes: tuple[str, ...],
                   optimizer: torch.optim.Optimizer, total: int, step_fn, eval_fn=None, on_step=None) -> None:
    """``step_fn(step) -> Step`` for ``total`` steps through the shared loop in ``<out>/<stage>``, then ``DONE``.

    The checkpoint holds ``module.state_dict()`` entries under ``prefixes`` (what the next stage loads).
    """
    result = run_loop(stage, stage_dir(cfg, stage), module, optimizer, lambda step, _net: step_fn(step),
                      Schedule(total, cfg.warmup, cfg.decay_from, max_grad_norm=1.0, ckpt_every=cfg.ckpt_every,
                               eval_every=cfg.eval_every),
                      state_prefixes=prefixes, eval_fn=eval_fn, on_step=on_step, decimals=4)
    (stage_dir(cfg, stage) / "DONE").write_text(json.dumps({"steps": total, "elapsed_s": result.elapsed_s}) + "\n")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def core_plan(cfg: TrainConfig) -> dict[str, int]:
    """Torch threads per stage: text and ctc side by side on half the cores each (ctc, the slower, gets
    an odd one), every other stage on all of them. ``cfg.cores`` 0: ``available_cores()``."""
    n = cfg.cores or available_cores()
    text = max(1, n // 2)
    return {"prep": n, "text": text, "ctc": max(1, n - text), "joint": n, "ship": n, "connect": n}


def all_cores_once_done(cfg: TrainConfig, stage: str, other: str):
    """An ``on_step`` for the stages that run side by side: once ``other`` has finished, ``stage``
    takes every core of the plan."""
    done = Path(cfg.out) / other / "DONE"
    cores = cfg.cores or available_cores()

    def on_step(step: int) -> None:
        if step % 50 == 0 and torch.get_num_threads() < cores and done.exists():
            torch.set_num_threads(cores)
            log.info("%s: %s stage done, now on %d threads", stage, other, cores)

    return on_step


# ---------------------------------------------------------------------------------------------
# stage text: the decoder learns to copy / translate from pseudo-audio


class PseudoAudio:
    """Audio-token stand-ins of the projector's form, built from an English token sequence.

    ``ctc_embed``: one row per audio frame pair, tokens spread over 1-3 rows with blank rows
    (``max_gap``) between them. ``ctc_compress``: one row per token, as CTC compression gives,
    with the errors a CTC head makes (deleted, inserted, confused, repeated tokens)."""

    def __init__(self, vocab: int, rng: np.random.Generator, max_gap: int, compressed: bool = False):
        self.vocab, self.rng, self.max_gap, self.compressed = vocab, rng, max_gap, compressed

    def _confused(self, t: int, w: float) -> dict[int, float]:
        c = self.rng.uniform(0.1, 0.5)
        return {t: w * (1 - c), int(self.rng.integers(3, self.vocab)): w * c}

    def weights(self, ids: list[int]) -> np.ndarray:
        """-> (N, vocab) token weights per audio token (a row summing to < 1 is partly blank)."""
        r = self.rng
        rows: list[dict[int, float]] = []
        if self.compressed:
            for t in ids:
                u = r.random()
                if u < 0.03:  # deleted
                    continue
                if u < 0.05:  # a spurious token before it
                    rows.append({int(r.integers(3, self.vocab)): 1.0})
                if u > 0.94:  # substituted
                    t = int(r.integers(3, self.vocab))
                row = self._confused(t, 1.0) if r.random() < 0.15 else {t: 1.0}
                rows += [row] * (2 if r.random() < 0.02 else 1)
            rows = rows or [{int(r.integers(3, self.vocab)): 1.0}]
        else:
            rows = [{} for _ in range(r.integers(0, 7))]
            for i, t in enumerate(ids):
                if i:
                    rows += [{} for _ in range(r.integers(0, self.max_gap + 1))]
                span = 1 if r.random() < 0.7 else (2 if r.random() < 0.85 else 3)
                for _ in range(span):
                    w = r.uniform(0.35, 1.0) if span > 1 else r.uniform(0.6, 1.0)
                    rows.append(self._confused(t, w) if r.random() < 0.1 else {t: w})  # confusable word
            rows += [{} for _ in range(r.integers(0, 7))]
        out = np.zeros((len(rows), self.vocab), dtype=np.float32)
        for j, row in enumerate(rows):
            for t, w in row.items():
                out[j, t] += w
        return out


def pseudo_audio_embeds(model, w: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """(N, vocab) weights -> (N, D) audio embeddings as the model's projector would make them: a
    projector with a blank vector (``ctc_embed``) fills a row's missing mass with it."""
    blank = getattr(model.projector, "blank", None)
    return w @ E if blank is None else w @ E + (1 - w.sum(1, keepdim=True)).clamp(min=0) * blank


def stage_text(cfg: TrainConfig) -> None:
    from .data.make import excluded_sentences, text_corpus

    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok)
    dec = model.decoder
    compressed = cfg.projector == "ctc_compress"
    holder = torch.nn.ModuleDict({"decoder": dec})
    if not compressed:
        holder.register_parameter("blank", model.projector.blank)
    exclude = excluded_sentences(cfg.data)
    V = len(tok)
    opt = torch.optim.AdamW([{"params": list(holder.parameters()), "lr": cfg.text_lr}], weight_decay=0.01,
                            betas=(0.9, 0.98))
    dev = _manifest(cfg, "dev")[: cfg.eval_size]

    def make_batch(step):
        rng = np.random.default_rng([cfg.seed, 1, step])
        sents = text_corpus(int(rng.integers(1 << 31)), cfg.batch_size, exclude)
        pa = PseudoAudio(V, rng, max_gap=min(5, 1 + step // 75), compressed=compressed)
        E = dec.get_input_embeddings().weight
        prompts, targets = [], []
        for s in sents:
            u = rng.random()
            if u < 0.05:  # plain text LM in one of the three languages
                prompts.append(E[[tok.bos_token_id]])
                targets.append([s.en, s.fr, s.de][int(rng.integers(3))])
                continue
            task = TASK_MIX[0] if u < 0.3 else TASK_MIX[1] if u < 0.65 else TASK_MIX[2]
            audio = pseudo_audio_embeds(model, torch.from_numpy(pa.weights(model.text_ids(s.en))), E)
            audio = audio + 0.1 * E.detach().std() * torch.randn(audio.shape, generator=torch.Generator().manual_seed(step))
            before, after = model.prompt_ids(task)
            prompts.append(torch.cat([E[before], audio, E[after]]))
            targets.append(s.en if task.name == "transcribe" else getattr(s, task.target_lang))
        return prompts, targets

    def step_fn(step):
        prompts, targets = make_batch(step)
        inp = model.assemble(prompts, targets)
        out = dec(inputs_embeds=inp.inputs_embeds, attention_mask=inp.attention_mask,
                  position_ids=inp.position_ids, labels=inp.labels)
        return Step(out.loss)

    def eval_fn():
        # copy/translate from pseudo-audio of dev sentences (no audio model yet)
        rng = np.random.default_rng([cfg.seed, 2])
        pa = PseudoAudio(V, rng, max_gap=3, compressed=compressed)
        E = dec.get_input_embeddings().weight
        res = {}
        with torch.no_grad():
            for task in TASK_MIX:
                prompts = []
                for r in dev:
                    audio = pseudo_audio_embeds(model, torch.from_numpy(pa.weights(model.text_ids(r["text"]))), E)
                    before, after = model.prompt_ids(task)
                    prompts.append(torch.cat([E[before], audio, E[after]]))
                hyps = [decode(model, x) for x in greedy_generate(model, model.assemble(prompts), 64)]
                refs = [reference(r, task) for r in dev]
                res.update({f"{task.label}_{k}": v for k, v in score_task(task.label, refs, hyps).items() if k != "n"})
        return res

    run_stage_loop(cfg, "text", holder, ("decoder.", "blank"), opt, cfg.text_steps, step_fn, eval_fn,
                   on_step=all_cores_once_done(cfg, "text", "ctc"))


# ---------------------------------------------------------------------------------------------
# stage ctc: encoder + CTC head on speech


def _features(cfg: TrainConfig, split: str) -> dict:
    return torch.load(source_dir(cfg, "prep") / f"features-{split}.pt", weights_only=False)


def _pad(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([f.shape[1] for f in feats])
    out = torch.zeros(len(feats), feats[0].shape[0], int(lengths.max()))
    for i, f in enumerate(feats):
        out[i, :, : f.shape[1]] = f.float()
    return out, lengths


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = x.clone()
    B, M, _ = x.shape
    for i in range(B):
        for _ in range(2):
            f = int(torch.randint(0, 11, (1,), generator=g))
            f0 = int(torch.randint(0, M - f + 1, (1,), generator=g))
            x[i, f0:f0 + f] = 0
            t = int(torch.randint(0, 21, (1,), generator=g))
            t0 = int(torch.randint(0, max(1, int(lengths[i]) - t), (1,), generator=g))
            x[i, :, t0:t0 + t] = 0
    return x


def mel_warp(x: torch.Tensor, g: torch.Generator, max_warp: float = 0.1) -> torch.Tensor:
    """Vocal-tract-length-style perturbation (Jaitly & Hinton 2013): stretch each clip's mel axis
    by a random factor in [1 - max_warp, 1 + max_warp], as if another speaker said it. (B, M, T)."""
    B, M, T = x.shape
    alpha = 1 + (torch.rand(B, generator=g) * 2 - 1) * max_warp
    pos = (torch.arange(M)[None, :] * alpha[:, None]).clamp(max=M - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=M - 1)
    frac = (pos - lo)[..., None]
    x_lo = torch.gather(x, 1, lo[..., None].expand(B, M, T))
    x_hi = torch.gather(x, 1, hi[..., None].expand(B, M, T))
    return x_lo + (x_hi - x_lo) * frac


def augment(x: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return spec_augment(mel_warp(x, g), lengths, g)


#: the featuriser of the cached features and of the freshly noised clips
LOGMEL = LogMel()


@functools.cache
def noise_bank() -> tuple[np.ndarray, ...]:
    """64 fixed white/pink/brown mixes of 20 s (the benchmark's noise), cut into crops while training."""
    from .data.synth import colored_noise_mix

    rng = np.random.default_rng(12345)
    return tuple(colored_noise_mix(20 * 16000, rng) for _ in range(64))


def with_fresh_noise(data: dict, idx: list[int], prob: float, rng: np.random.Generator) -> list[torch.Tensor]:
    """The cached features of ``idx``; with probability ``prob`` a clean clip is re-read, mixed with
    noise as the benchmark's noisy splits are (``add_noise``, SNR 5-20 dB) and re-featurised. The
    noise is a random crop of a fixed bank of 64 white/pink/brown mixes of 20 s."""
    from .data.synth import add_noise

    out = []
    for i in idx:
        row = data["rows"][i]
        if prob > 0 and row.get("snr") is None and rng.random() < prob:
            wav = load_audio(row["audio"])
            bank = noise_bank()[int(rng.integers(len(noise_bank())))]
            start = int(rng.integers(0, max(1, len(bank) - len(wav))))
            noise = np.resize(bank[start:start + len(wav)], len(wav))  # tiles a clip longer than 20 s
            out.append(LOGMEL.one(add_noise(wav, float(rng.uniform(5.0, 20.0)), rng, noise=noise)))
        else:
            out.append(data["feats"][i])
    return out


def ctc_greedy(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    best = logits.argmax(-1).tolist()
    out = []
    for row, n in zip(best, lengths.tolist()):
        seq, prev = [], None
        for t in row[:n]:
            if t != prev and t != blank:
                seq.append(t)
            prev = t
        out.append(seq)
    return out


def stage_ctc(cfg: TrainConfig) -> None:
    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok)
    enc, head = model.encoder, model.projector.ctc_head
    holder = torch.nn.ModuleDict({"encoder": enc, "ctc_head": head})
    blank = model.projector.blank_id
    data, dev = _features(cfg, "train"), _features(cfg, "dev")
    targets = [model.text_ids(r["text"]) for r in data["rows"]]
    opt = torch.optim.AdamW(holder.parameters(), lr=cfg.ctc_lr, weight_decay=0.01, betas=(0.9, 0.98))
    n = len(data["feats"])

    def step_fn(step):
        g = torch.Generator().manual_seed(cfg.seed * 1000003 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g).tolist()
        noisy = cfg.noise_prob if step >= cfg.ctc_noise_from else 0.0
        x, lengths = _pad(with_fresh_noise(data, idx, noisy, np.random.default_rng([cfg.seed, 3, step])))
        if step >= cfg.ctc_augment_from:
            x = augment(x, lengths, g)
        h, hl = enc(x, lengths)
        return Step(ctc_loss(head(h), hl, [targets[i] for i in idx], blank))

    def eval_fn():
        m = min(len(dev["feats"]), 2 * cfg.eval_size)
        hyps = []
        with torch.no_grad():
            for s in range(0, m, 32):
                x, lengths = _pad(dev["feats"][s:min(m, s + 32)])
                h, hl = enc(x, lengths)
                hyps += [tok.decode(ids).strip() for ids in ctc_greedy(head(h), hl, blank)]
        return {"ctc_wer": round(wer([r["text"] for r in dev["rows"][:m]], hyps), 2)}

    run_stage_loop(cfg, "ctc", holder, ("encoder.", "ctc_head."), opt, cfg.ctc_steps, step_fn, eval_fn,
                   on_step=all_cores_once_done(cfg, "ctc", "text"))


# ---------------------------------------------------------------------------------------------
# stage joint


def joint_model(cfg: TrainConfig):
    """The connected model, initialised from the text and ctc stages, or from ``cfg.init_from``."""
    if cfg.init_from:
        from speechllm.modeldir import load_model

        return load_model(cfg.init_from, dtype=torch.float32)
    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok, cfg.joint_projector or None)
    for stage in ("text", "ctc"):
        if not (source_dir(cfg, stage) / "DONE").exists():
            raise SlimError(f"{source_dir(cfg, stage)} has not finished: run `slimspeech train --stage {stage}` "
                            f"(--out {Path(source_dir(cfg, stage)).parent}) first", param="base_run")
    text = torch.load(source_dir(cfg, "text") / "ckpt.pt", weights_only=False)["params"]
    ctc = torch.load(source_dir(cfg, "ctc") / "ckpt.pt", weights_only=False)["params"]
    sd = {k: v for k, v in text.items() if k.startswith("decoder.")}
    if "blank" in text and not cfg.joint_projector:
        sd["projector.blank"] = text["blank"]
    sd.update({k: v for k, v in ctc.items() if k.startswith("encoder.")})
    if not cfg.joint_projector:  # a new projector kind starts fresh: no CTC head of ours to carry over
        sd.update({"projector." + k: v for k, v in ctc.items() if k.startswith("ctc_head.")})
    missing = model.load_state_dict(sd, strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    return model


def evaluate_features(model, rows: list[dict], feats: list[torch.Tensor], tasks=TASK_MIX, batch: int = 32) -> dict:
    """Greedy decode cached features for each task; -> {label_metric: value}."""
    res = {}
    with torch.no_grad():
        for task in tasks:
            hyps = []
            for s in range(0, len(rows), batch):
                x, lengths = _pad(feats[s:s + batch])
                prompts, _ = model.embed_features([task] * x.shape[0], x, lengths)
                hyps += [decode(model, ids) for ids in greedy_generate(model, model.assemble(prompts))]
            refs = [reference(r, task) for r in rows]
            res.update({f"{task.label}_{k}": v for k, v in score_task(task.label, refs, hyps).items() if k != "n"})
    return res


def stage_joint(cfg: TrainConfig) -> None:
    if cfg.init_from and not (stage_dir(cfg, "joint") / PARENT_FILE).exists():
        # the parent's provenance as it was when training started: ship may overwrite the parent dir
        write_json(stage_dir(cfg, "joint") / PARENT_FILE, Provenance.read(cfg.init_from).to_dict())
    check_variant(cfg)
    model = joint_model(cfg)
    tok = model.tokenizer
    data, dev = _features(cfg, "train"), _features(cfg, "dev")
    rows = data["rows"]
    en_ids = [model.text_ids(r["text"]) for r in rows]
    # joint_lr_encoder 0: encoder and CTC head frozen (as SLAM-ASR freezes its encoder): no backward
    # through them and no CTC loss, so a step costs about half
    frozen = cfg.joint_lr_encoder == 0
    groups = joint_groups(cfg, model)
    opt = torch.optim.AdamW(groups, weight_decay=0.01, betas=(0.9, 0.98))
    n = len(rows)

    def step_fn(step):
        g = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g).tolist()
        which = torch.randint(0, 10, (cfg.batch_size,), generator=g).tolist()
        tasks = [TASK_MIX[0] if w < 4 else TASK_MIX[1] if w < 7 else TASK_MIX[2] for w in which]
        targets = [reference(rows[i], t) for i, t in zip(idx, tasks)]
        x, lengths = _pad(with_fresh_noise(data, idx, cfg.noise_prob, np.random.default_rng([cfg.seed, 4, step])))
        x = augment(x, lengths, g)
        prompts, aux = model.embed_features(tasks, x, lengths)
        inp = model.assemble(prompts, targets)
        out = model.decoder(inputs_embeds=inp.inputs_embeds, attention_mask=inp.attention_mask,
                            position_ids=inp.position_ids, labels=inp.labels)
        if frozen:
            return combine_losses(out.loss)
        ctc = ctc_loss(aux["ctc_logits"], aux["ctc_lengths"], [en_ids[i] for i in idx], model.projector.blank_id)
        return combine_losses(out.loss, ctc=ctc, ctc_weight=cfg.ctc_weight)

    def eval_fn():
        m = cfg.eval_size
        return evaluate_features(model, dev["rows"][:m], dev["feats"][:m])

    run_stage_loop(cfg, "joint", model, ("encoder.", "projector.", "decoder."), opt, cfg.joint_steps, step_fn,
                   eval_fn)
    del tok


def check_variant(cfg: TrainConfig) -> None:
    if cfg.joint_projector and cfg.joint_lr_encoder != 0:
        raise SlimError(f"--joint-projector {cfg.joint_projector} has no CTC head to train the encoder with: "
                        "pass --joint-lr-encoder 0 (the encoder frozen, as SLAM-LLM freezes its encoder)",
                        param="joint_lr_encoder")
    if cfg.joint_decoder != "full" and cfg.init_from:
        raise SlimError(f"--joint-decoder {cfg.joint_decoder} is a variant of the recipe's joint stage: use "
                        "--base-run, not --init-from", param="joint_decoder")


def joint_groups(cfg: TrainConfig, model) -> list[dict]:
    """The joint stage's optimizer groups; sets what trains. ``--joint-decoder lora`` injects LoRA
    adapters into the decoder's projections in place (``model``'s own modules; peft freezes the rest)."""
    acoustic = list(model.encoder.parameters()) + list(getattr(model.projector, "ctc_head", torch.nn.Identity())
                                                       .parameters())
    if cfg.joint_decoder == "lora":
        from .heal import attach_lora

        attach_lora(model, cfg.joint_lora_r, cfg.joint_lora_alpha)
    projector = [p for n, p in model.projector.named_parameters() if not n.startswith("ctc_head.")]
    for p in projector:
        p.requires_grad_(True)
    decoder = {"full": list(model.decoder.parameters()), "frozen": [],
               "lora": [p for n, p in model.decoder.named_parameters() if "lora_" in n]}[cfg.joint_decoder]
    if cfg.joint_decoder == "frozen":
        for p in model.decoder.parameters():
            p.requires_grad_(False)
    groups = [{"params": projector, "lr": cfg.joint_lr_projector}]
    if decoder:
        groups.insert(0, {"params": decoder, "lr": cfg.joint_lr_decoder})
    for p in acoustic:
        p.requires_grad_(cfg.joint_lr_encoder != 0)
    if cfg.joint_lr_encoder != 0:
        groups.append({"params": acoustic, "lr": cfg.joint_lr_encoder})
    return groups


def final_model(cfg: TrainConfig):
    model = joint_model(cfg)
    if cfg.joint_decoder == "lora":  # the checkpoint holds the adapters in place: load them, then merge
        from .heal import attach_lora, merge_lora

        peft_model = attach_lora(model, cfg.joint_lora_r, cfg.joint_lora_alpha)
        state = torch.load(Path(cfg.out) / "joint" / "ckpt.pt", weights_only=False)
        bad = model.load_state_dict(state["params"], strict=False)
        assert not bad.unexpected_keys, bad.unexpected_keys
        return merge_lora(peft_model).eval()
    state = torch.load(Path(cfg.out) / "joint" / "ckpt.pt", weights_only=False)
    model.load_state_dict(state["params"], strict=False)
    return model.eval()


def connect(cfg: TrainConfig, dest: Path | None = None) -> Provenance:
    """The text-stage decoder and the ctc-stage encoder connected before any joint step (the projector
    as the joint stage starts it) in fp16 to ``dest`` (default ``<out>/connected``): the decoder as
    the "pretrained LLM" was before it saw speech, for ``slimspeech analyze`` (``--inputs text``)."""
    dest = Path(dest) if dest is not None else Path(cfg.out) / "connected"
    model = joint_model(cfg).eval()
    ran = {f"{s}_steps": read_json(source_dir(cfg, s) / "DONE")["steps"] for s in ("text", "ctc")}
    model = model.half()
    prov = Provenance(produced_by="slimspeech train", created=now(), parent=None, removed_layers=[], extra={
        "recipe": dataclasses.asdict(dataclasses.replace(cfg, **ran, joint_steps=0)),
        "stage": "connect: text + ctc checkpoints, no joint step (the decoder before it saw speech)",
        "sources": {s: str(source_dir(cfg, s).resolve()) for s in ("text", "ctc")},
    }).describing(model)
    model.save(dest, provenance=prov.to_dict())
    return prov


def ship(cfg: TrainConfig, dest: Path | None = None) -> Provenance:
    """Write the joint model in fp16 to ``dest`` (default ``<out>/ship``) with provenance: the recipe,
    data, training minutes and dev scores in ``extra``, the fp16 weights' fingerprint and size."""
    dest = Path(dest) if dest is not None else Path(cfg.out) / "ship"
    if not (Path(cfg.out) / "joint" / "DONE").exists():
        raise SlimError(f"{cfg.out}/joint has not finished: run `slimspeech train --stage joint` first")
    # the recipe records what ran: each stage's own step count, whatever this command's flags say
    ran = {f"{s}_steps": read_json(source_dir(cfg, s) / "DONE")["steps"]
           for s in ("text", "ctc", "joint") if (source_dir(cfg, s) / "DONE").exists()}
    cfg = dataclasses.replace(cfg, **ran)
    model = final_model(cfg)
    dev = _features(cfg, "dev")
    scores = evaluate_features(model, dev["rows"], dev["feats"])
    minutes = {s: round(read_json(source_dir(cfg, s) / "DONE")["elapsed_s"] / 60, 1)
               for s in ("text", "ctc", "joint") if (source_dir(cfg, s) / "DONE").exists()}
    if cfg.init_from:  # continued training: the parent's minutes count too
        saved = Path(cfg.out) / "joint" / PARENT_FILE
        parent = Provenance.from_dict(read_json(saved)) if saved.exists() else Provenance.read(cfg.init_from)
        minutes = {"before": parent.extra.get("training_minutes"), **minutes}
    model = model.half()
    prov = Provenance(produced_by="slimspeech train", created=now(), parent=None, removed_layers=[], extra={
        "recipe": dataclasses.asdict(cfg),
        "data": read_json(Path(cfg.data) / "data.json") if (Path(cfg.data) / "data.json").exists() else None,
        "training_minutes": minutes, "dev_scores_fp32": scores,
    }).describing(model)
    model.save(dest, provenance=prov.to_dict())
    log.info("shipped %s: %s (release it into the package: python scripts/release_demo.py --demo %s)",
             dest, scores, dest)
    return prov


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech train", description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=("all",) + STAGES,
                   help="one stage, or all (default): prep, then text and ctc side by side, then joint (with "
                        "--base-run: joint alone); ship: the joint model to <out>/ship; connect: the text and ctc "
                        "checkpoints connected before any joint step to <out>/connected (the pretrained decoder)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of this process (default: the stage's share of --cores)")
    add_options(p, TrainConfig, title="recipe")
    return p


def run_stage(cfg: TrainConfig, stage: str) -> None:
    {"prep": prep, "text": stage_text, "ctc": stage_ctc, "joint": stage_joint, "ship": ship,
     "connect": connect}[stage](cfg)


def stage_command(cfg: TrainConfig, stage: str, threads: int) -> list[str]:
    """The command of a child process that runs ``stage`` of exactly this recipe (its fields as flags)."""
    return [sys.executable, "-m", "speechllm.cli", "train", *to_argv(cfg, exclude=("data", "out")),
            "--data", cfg.data, "--out", cfg.out, "--stage", stage, "--threads", str(threads)]


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(TrainConfig, args)
    if not (Path(cfg.data) / "train.jsonl").exists():
        raise SlimError(f"no train.jsonl in {cfg.data}: run `slimspeech make-data --out {cfg.data}` first")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.out) / "train_config.json", dataclasses.asdict(cfg))
    torch.manual_seed(cfg.seed)
    plan = core_plan(cfg)
    if args.stage != "all":
        torch.set_num_threads(args.threads or plan[args.stage])
        run_stage(cfg, args.stage)
        return 0
    if cfg.base_run:  # a variant: the shared stages are the base run's
        torch.set_num_threads(args.threads or plan["joint"])
        stage_joint(cfg)
        return 0
    torch.set_num_threads(args.threads or plan["prep"])
    prep(cfg)
    # text and ctc side by side in child processes (resumable independently), each on its share of the cores
    procs = [subprocess.Popen(stage_command(cfg, s, plan[s])) for s in ("ctc", "text")]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SlimError(f"stages ctc/text exited with {codes}: see {cfg.out}/*/log.jsonl, then re-run to resume")
    torch.set_num_threads(args.threads or plan["joint"])
    stage_joint(cfg)
    return 0
