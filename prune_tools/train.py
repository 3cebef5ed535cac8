"""``slimspeech train``: train the demo ``slam`` model on the built-in benchmark, in resumable stages.

    slimspeech make-data --out data/bench
    slimspeech train --data data/bench --out runs/demo              # prep, text || ctc, joint
    slimspeech train --data data/bench --out runs/demo --stage ship # fp16 copy into the package

Stages (the staged recipe of ../shared/notes/demo-training.md, extended to translation and made
to fit a 754-word grammar, 12 voices and noise):
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
  (one core each; whichever finishes first hands its core to the other). A curriculum: clean
  features first (the alignment forms faster), mel warp + SpecAugment from
  ``ctc_augment_from``, fresh noise on clean clips from ``ctc_noise_from``.
- ``joint``: both connected through the ``ctc_compress`` projector (its MLP residual zero-init),
  trained end to end on transcription + en->fr + en->de with an auxiliary CTC loss, augmented
  like the end of ``ctc``; ``--joint-lr-encoder 0`` freezes the encoder and CTC head instead.
- ``ship``: the joint model in fp16 to ``speechllm/assets/demo`` with provenance and dev scores.

Every stage logs JSONL (``<out>/<stage>/log.jsonl``), shows a progress bar, checkpoints every
``ckpt_every`` steps and resumes from its checkpoint when re-run. Batches derive from
(seed, step), so a resumed run draws the same data as an uninterrupted one.
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
import torch.nn.functional as F
from tqdm import tqdm

from speechllm.audio import LogMel, load_audio
from speechllm.builders import build_slam, decoder_config
from speechllm.encoder import EncoderConfig
from speechllm.errors import SlimError
from speechllm.generate import decode, greedy_generate
from speechllm.modeldir import DEMO_DIR, read_json, write_json
from speechllm.tasks import Task
from speechllm.tokenizer import TASK_TOKENS, train_bpe_tokenizer

from .scoring import score_task, wer

log = logging.getLogger(__name__)
STAGES = ("prep", "text", "ctc", "joint", "ship")
TASK_MIX = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]


@dataclass
class TrainConfig:
    data: str = "data/bench"
    out: str = "runs/demo"
    seed: int = 0
    vocab_size: int = 4000
    tokenizer_sentences: int = 40000
    # decoder (Llama); >= 12 layers so there is redundancy to measure
    dec_layers: int = 12
    dec_hidden: int = 256
    dec_heads: int = 4
    dec_intermediate: int = 768
    # encoder (Whisper-style, 4x downsampling) and projector: ctc_compress (about one audio token per
    # text token) or ctc_embed (stack 2 -> 12.5 audio tokens/s)
    projector: str = "ctc_compress"
    enc_layers: int = 4
    enc_dim: int = 256
    enc_heads: int = 4
    enc_ffn: int = 1024
    stack: int = 2
    max_audio_seconds: float = 16.0
    batch_size: int = 32
    text_steps: int = 6000
    text_lr: float = 1e-3
    ctc_steps: int = 7000
    ctc_lr: float = 1.5e-3
    # from this step on the ctc stage augments (mel warp + SpecAugment); before it, clean features
    # let the first alignment form faster. The joint stage always augments.
    ctc_augment_from: int = 2400
    # from this step on (and in joint) a clean training clip gets fresh noise (the benchmark's own
    # white/pink/brown mix, SNR 5-20 dB) with this probability, features recomputed from the audio
    ctc_noise_from: int = 3500
    noise_prob: float = 0.4
    joint_steps: int = 900
    joint_lr_decoder: float = 5e-4
    joint_lr_projector: float = 1e-3
    joint_lr_encoder: float = 1e-4
    ctc_weight: float = 0.3
    warmup: int = 100
    decay_from: float = 0.7  # constant LR until this fraction of the steps, then linear decay to 10%
    ckpt_every: int = 100
    eval_every: int = 300
    eval_size: int = 100
    # continue training: the joint stage starts from this model dir (e.g. the shipped demo model)
    # instead of the text/ctc checkpoints; run `--stage prep` first for the feature cache
    init_from: str = ""

    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                      if getattr(args, f.name, None) is not None})


# ---------------------------------------------------------------------------------------------
# prep


#: in the joint stage's dir of a continued run: the parent model's provenance when the run began
PARENT_FILE = "parent_provenance.json"


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
    return AutoTokenizer.from_pretrained(Path(cfg.out) / "prep" / "tokenizer")


def build_model(cfg: TrainConfig, tok):
    dec = decoder_config("llama", len(tok), tok, layers=cfg.dec_layers, hidden=cfg.dec_hidden, heads=cfg.dec_heads,
                         kv_heads=cfg.dec_heads, intermediate=cfg.dec_intermediate, max_positions=1024)
    enc = EncoderConfig(n_mels=80, d_model=cfg.enc_dim, layers=cfg.enc_layers, heads=cfg.enc_heads,
                        ffn_dim=cfg.enc_ffn, downsample=4, max_source_positions=int(cfg.max_audio_seconds * 25))
    return build_slam(tok, dec, enc, projector=cfg.projector, stack=cfg.stack, projector_hidden=4 * cfg.dec_hidden,
                      max_audio_seconds=cfg.max_audio_seconds, max_new_tokens=96, seed=cfg.seed)


# ---------------------------------------------------------------------------------------------
# the shared loop


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    start = int(cfg.decay_from * total)
    if step < start:
        return 1.0
    return 1.0 - 0.9 * (step - start) / max(1, total - start)


class Checkpoint:
    """Atomic checkpoint of the trained parameters + optimizer + step."""

    def __init__(self, path: Path):
        self.path = path

    def load(self):
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def train_loop(cfg: TrainConfig, stage: str, module: torch.nn.Module, prefixes: tuple[str, ...],
               optimizer: torch.optim.Optimizer, total: int, step_fn, eval_fn=None, on_step=None) -> None:
    """Run ``step_fn(step) -> (loss, logs)`` for ``total`` steps with LR schedule, logging, resume."""
    d = stage_dir(cfg, stage)
    ckpt = Checkpoint(d / "ckpt.pt")
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    state = ckpt.load()
    start = 0
    if state is not None:
        module.load_state_dict(state["params"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        log.info("%s: resuming at step %d", stage, start)
        if (d / "log.jsonl").exists():  # drop records of steps after the checkpoint: they are re-run
            kept = [line for line in (d / "log.jsonl").read_text().splitlines()
                    if line and json.loads(line)["step"] <= start]
            (d / "log.jsonl").write_text("".join(line + "\n" for line in kept))
    elapsed0 = state["elapsed_s"] if state else 0.0
    t0 = time.time()

    def save(step):
        params = {k: v for k, v in module.state_dict().items() if k.startswith(prefixes)}
        ckpt.save({"params": params, "optimizer": optimizer.state_dict(), "step": step,
                   "elapsed_s": elapsed0 + time.time() - t0})

    with open(d / "log.jsonl", "a") as logf, tqdm(total=total, initial=start, desc=stage, mininterval=5) as bar:
        for step in range(start, total):
            if on_step:
                on_step(step)
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * lr_factor(cfg, step, total)
            module.train()
            loss, logs = step_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
            optimizer.step()
            rec = {"step": step + 1, "loss": round(float(loss.detach()), 4), "lr": optimizer.param_groups[0]["lr"],
                   "elapsed_s": round(elapsed0 + time.time() - t0, 1), **logs}
            if eval_fn and ((step + 1) % cfg.eval_every == 0 or step + 1 == total):
                module.eval()
                rec.update(eval_fn())
                log.info("%s step %d: %s", stage, step + 1, rec)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            bar.set_postfix(loss=rec["loss"], refresh=False)
            bar.update(1)
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == total:
                save(step + 1)
    (d / "DONE").write_text(json.dumps({"steps": total, "elapsed_s": round(elapsed0 + time.time() - t0, 1)}) + "\n")


def both_cores_once_done(cfg: TrainConfig, stage: str, other: str):
    """An ``on_step`` for stages that run side by side on one core each: once ``other`` has
    finished, ``stage`` takes both cores."""
    done = Path(cfg.out) / other / "DONE"

    def on_step(step: int) -> None:
        if step % 50 == 0 and torch.get_num_threads() < 2 and done.exists():
            torch.set_num_threads(2)
            log.info("%s: %s stage done, now on 2 threads", stage, other)

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
        return out.loss, {}

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
                refs = [r["text"] if task.name == "transcribe" else r["translation"][task.target_lang] for r in dev]
                res.update({f"{task.label}_{k}": v for k, v in score_task(task.label, refs, hyps).items() if k != "n"})
        return res

    train_loop(cfg, "text", holder, ("decoder.", "blank"), opt, cfg.text_steps, step_fn, eval_fn,
               on_step=both_cores_once_done(cfg, "text", "ctc"))


# ---------------------------------------------------------------------------------------------
# stage ctc: encoder + CTC head on speech


def _features(cfg: TrainConfig, split: str) -> dict:
    return torch.load(Path(cfg.out) / "prep" / f"features-{split}.pt", weights_only=False)


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


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]], blank: int) -> torch.Tensor:
    logp = logits.float().log_softmax(-1).transpose(0, 1)
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long)
    tl = torch.tensor([len(seq) for seq in targets])
    return F.ctc_loss(logp, flat, lengths.cpu(), tl, blank=blank, zero_infinity=True)


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
        return ctc_loss(head(h), hl, [targets[i] for i in idx], blank), {}

    def eval_fn():
        m = min(len(dev["feats"]), 2 * cfg.eval_size)
        hyps = []
        with torch.no_grad():
            for s in range(0, m, 32):
                x, lengths = _pad(dev["feats"][s:min(m, s + 32)])
                h, hl = enc(x, lengths)
                hyps += [tok.decode(ids).strip() for ids in ctc_greedy(head(h), hl, blank)]
        return {"ctc_wer": round(wer([r["text"] for r in dev["rows"][:m]], hyps), 2)}

    train_loop(cfg, "ctc", holder, ("encoder.", "ctc_head."), opt, cfg.ctc_steps, step_fn, eval_fn,
               on_step=both_cores_once_done(cfg, "ctc", "text"))


# ---------------------------------------------------------------------------------------------
# stage joint


def joint_model(cfg: TrainConfig):
    """The connected model, initialised from the text and ctc stages, or from ``cfg.init_from``."""
    if cfg.init_from:
        from speechllm.modeldir import load_model

        return load_model(cfg.init_from, dtype=torch.float32)
    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok)
    text = torch.load(Path(cfg.out) / "text" / "ckpt.pt", weights_only=False)["params"]
    ctc = torch.load(Path(cfg.out) / "ctc" / "ckpt.pt", weights_only=False)["params"]
    sd = {k: v for k, v in text.items() if k.startswith("decoder.")}
    if "blank" in text:
        sd["projector.blank"] = text["blank"]
    sd.update({k: v for k, v in ctc.items() if k.startswith("encoder.")})
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
            refs = [r["text"] if task.name == "transcribe" else r["translation"][task.target_lang] for r in rows]
            res.update({f"{task.label}_{k}": v for k, v in score_task(task.label, refs, hyps).items() if k != "n"})
    return res


def stage_joint(cfg: TrainConfig) -> None:
    if cfg.init_from and not (stage_dir(cfg, "joint") / PARENT_FILE).exists():
        # the parent's provenance as it was when training started: ship may overwrite the parent dir
        write_json(stage_dir(cfg, "joint") / PARENT_FILE, read_json(Path(cfg.init_from) / "provenance.json"))
    model = joint_model(cfg)
    tok = model.tokenizer
    data, dev = _features(cfg, "train"), _features(cfg, "dev")
    rows = data["rows"]
    en_ids = [model.text_ids(r["text"]) for r in rows]
    # joint_lr_encoder 0: encoder and CTC head frozen (as SLAM-ASR freezes its encoder): no backward
    # through them and no CTC loss, so a step costs about half
    frozen = cfg.joint_lr_encoder == 0
    acoustic = list(model.encoder.parameters()) + list(model.projector.ctc_head.parameters())
    groups = [
        {"params": list(model.decoder.parameters()), "lr": cfg.joint_lr_decoder},
        {"params": [p for n, p in model.projector.named_parameters() if not n.startswith("ctc_head.")],
         "lr": cfg.joint_lr_projector},
    ]
    if frozen:
        for p in acoustic:
            p.requires_grad_(False)
    else:
        groups.append({"params": acoustic, "lr": cfg.joint_lr_encoder})
    opt = torch.optim.AdamW(groups, weight_decay=0.01, betas=(0.9, 0.98))
    n = len(rows)

    def step_fn(step):
        g = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g).tolist()
        which = torch.randint(0, 10, (cfg.batch_size,), generator=g).tolist()
        tasks = [TASK_MIX[0] if w < 4 else TASK_MIX[1] if w < 7 else TASK_MIX[2] for w in which]
        targets = [rows[i]["text"] if t.name == "transcribe" else rows[i]["translation"][t.target_lang]
                   for i, t in zip(idx, tasks)]
        x, lengths = _pad(with_fresh_noise(data, idx, cfg.noise_prob, np.random.default_rng([cfg.seed, 4, step])))
        x = augment(x, lengths, g)
        prompts, aux = model.embed_features(tasks, x, lengths)
        inp = model.assemble(prompts, targets)
        out = model.decoder(inputs_embeds=inp.inputs_embeds, attention_mask=inp.attention_mask,
                            position_ids=inp.position_ids, labels=inp.labels)
        if frozen:
            return out.loss, {"ce": round(out.loss.item(), 4)}
        ctc = ctc_loss(aux["ctc_logits"], aux["ctc_lengths"], [en_ids[i] for i in idx], model.projector.blank_id)
        return out.loss + cfg.ctc_weight * ctc, {"ce": round(out.loss.item(), 4), "ctc": round(ctc.item(), 4)}

    def eval_fn():
        m = cfg.eval_size
        return evaluate_features(model, dev["rows"][:m], dev["feats"][:m])

    train_loop(cfg, "joint", model, ("encoder.", "projector.", "decoder."), opt, cfg.joint_steps, step_fn, eval_fn)
    del tok


def final_model(cfg: TrainConfig):
    model = joint_model(cfg)
    state = torch.load(Path(cfg.out) / "joint" / "ckpt.pt", weights_only=False)
    model.load_state_dict(state["params"], strict=False)
    return model.eval()


def ship(cfg: TrainConfig, dest: Path = DEMO_DIR) -> dict:
    """Write the joint model in fp16 to ``dest`` with provenance (recipe, minutes, dev scores)."""
    if not (Path(cfg.out) / "joint" / "DONE").exists():
        raise SlimError(f"{cfg.out}/joint has not finished: run `slimspeech train --stage joint` first")
    # the recipe records what ran: each stage's own step count, whatever this command's flags say
    ran = {f"{s}_steps": read_json(Path(cfg.out) / s / "DONE")["steps"]
           for s in ("text", "ctc", "joint") if (Path(cfg.out) / s / "DONE").exists()}
    cfg = dataclasses.replace(cfg, **ran)
    model = final_model(cfg)
    dev = _features(cfg, "dev")
    scores = evaluate_features(model, dev["rows"], dev["feats"])
    minutes = {s: round(read_json(Path(cfg.out) / s / "DONE")["elapsed_s"] / 60, 1)
               for s in ("text", "ctc", "joint") if (Path(cfg.out) / s / "DONE").exists()}
    if cfg.init_from:  # continued training: the parent's minutes count too
        saved = Path(cfg.out) / "joint" / PARENT_FILE
        parent = read_json(saved if saved.exists() else Path(cfg.init_from) / "provenance.json")
        minutes = {"before": parent.get("training_minutes"), **minutes}
    prov = {
        "produced_by": "slimspeech train", "recipe": dataclasses.asdict(cfg),
        "data": read_json(Path(cfg.data) / "data.json") if (Path(cfg.data) / "data.json").exists() else None,
        "training_minutes": minutes, "dev_scores_fp32": scores,
        "parent": None, "removed_layers": [],
    }
    model.half().save(dest, provenance=prov)
    log.info("shipped %s: %s", dest, scores)
    return prov


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech train", description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=("all",) + STAGES)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 for text/ctc, else 2)")
    return p


def run_stage(cfg: TrainConfig, stage: str) -> None:
    {"prep": prep, "text": stage_text, "ctc": stage_ctc, "joint": stage_joint, "ship": ship}[stage](cfg)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig.from_args(args)
    if not (Path(cfg.data) / "train.jsonl").exists():
        raise SlimError(f"no train.jsonl in {cfg.data}: run `slimspeech make-data --out {cfg.data}` first")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.out) / "train_config.json", dataclasses.asdict(cfg))
    torch.manual_seed(cfg.seed)
    if args.stage != "all":
        torch.set_num_threads(args.threads or (1 if args.stage in ("text", "ctc") else 2))
        run_stage(cfg, args.stage)
        return 0
    prep(cfg)
    # text and ctc side by side, one core each, in child processes (resumable independently)
    base = [sys.executable, "-m", "speechllm.cli", "train", "--data", cfg.data, "--out", cfg.out]
    extra = [x for x in argv if x not in ("--stage", "all")]
    procs = [subprocess.Popen(base + extra + ["--stage", s, "--threads", "1"]) for s in ("ctc", "text")]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SlimError(f"stages ctc/text exited with {codes}: see {cfg.out}/*/log.jsonl, then re-run to resume")
    torch.set_num_threads(args.threads or 2)
    stage_joint(cfg)
    return 0
