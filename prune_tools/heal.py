"""``slimspeech heal``: retrain a pruned model a little: LoRA on the decoder + the projector, jointly.

    slimspeech heal --model runs/pruned-30 --data data/bench/train.jsonl --out runs/healed-30 \\
        [--train lora,projector] [--teacher BASE] [--steps 300] [--batch-size 8] [--work DIR]
    torchrun --nproc_per_node 2 -m speechllm.cli heal ...      # data parallel (DDP): gloo on CPU, nccl on GPU

What trains (``--train``, the paper: either alone is not enough; both by default):
- ``lora``: peft LoRA adapters on the decoder's attention and MLP projections only
  (``model.lora_target_modules()``: q/k/v/o/gate/up/down of the decoder layers, never the
  encoder's modules of the same names); merged into the weights at the end.
- ``projector``: every projector parameter (``model.projector_prefixes``), fully. For a CTC
  projector (``ctc_embed``, ``ctc_compress``) an auxiliary CTC loss on the transcript
  (``--ctc-weight``) keeps its CTC head a CTC head.
Everything else (encoder, embeddings, LM head, the base decoder weights) stays frozen.

Data: every step draws ``batch_size`` (task, utterance) pairs per process from (seed, step),
each task uniformly from ``--tasks`` (so batches mix ASR and AST), the target being the
manifest's ``text`` or ``translation[lang]``. The global batch is the same whatever the
number of processes, and a resumed run draws the same batches as an uninterrupted one.

Loss: cross-entropy on the target tokens (+ EOS); with ``--teacher BASE`` (the unpruned model)
``(1 - w) * CE + w * T^2 * KL(teacher || student)`` on the target positions at temperature T.

Work dir (``--work``, default ``OUT.work``): ``log.jsonl`` (one line per step), ``ckpt.pt``
(trainable parameters + optimizer + step; a re-run resumes from it and refuses a checkpoint of
another model, layer list or config), ``adapter/`` (the unmerged LoRA adapter, peft format, with
``slimspeech_adapter.json`` naming the model it was trained on, kept layers included: ``--adapter
DIR`` refuses to apply it to a model with another layer list). The output is a model dir with
LoRA merged and provenance (``speechllm.provenance.Provenance``: ``healing`` = config, data,
steps, losses, world size; the parent's layers; the healed weights' own fingerprint).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speechllm.audio import load_audio
from speechllm.errors import SlimError
from speechllm.modeldir import load_model, read_json, write_json
from speechllm.provenance import ModelRef, Provenance, stamp
from speechllm.tasks import Task

from .lineage import layer_list, model_fingerprint
from .loop import (LOG_FILE, Dist, Schedule, Step, combine_losses, ctc_loss, distill_kl, init_distributed,
                   read_log, run_loop, target_logits)
from .options import add_options, config_from_args, option
from .rows import DEFAULT_TASKS, load_rows, parse_tasks, reference

log = logging.getLogger(__name__)
COMPONENTS = ("lora", "projector")
ADAPTER_META = "slimspeech_adapter.json"
#: config fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("steps", "ckpt_every")


@dataclass
class HealConfig:
    """What healing trains and how: every field is a ``heal`` flag (``--batch-size``) and a ``sweep`` one
    (``--heal-batch-size``), with this help text."""

    train: tuple[str, ...] = option(COMPONENTS, "what trains: lora, projector or lora,projector", type=str,
                                    metavar="PARTS")
    tasks: str = option(DEFAULT_TASKS, "tasks the batches mix, each drawn uniformly")
    steps: int = option(300, "optimizer steps")
    batch_size: int = option(8, "utterances per step and process (the global batch is this x processes)")
    lr: float = option(1e-3, "LoRA learning rate")
    projector_lr: float = option(5e-4, "projector learning rate")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (the adapter's output is scaled by alpha / r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA input")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup: int = option(20, "linear LR warmup steps")
    decay_from: float = option(0.7, "constant LR until this fraction of the steps, then linear decay to 10%")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    distill_weight: float = option(0.5, "with a teacher (heal --teacher, sweep --distill): the loss is "
                                          "(1 - w) * CE + w * KL")
    temperature: float = option(2.0, "with a teacher: softmax temperature T of the KL (scaled by T^2)")
    ctc_weight: float = option(0.3, "weight of the auxiliary CTC loss on the transcript while a ctc_* projector "
                                    "trains (0: none)")
    ckpt_every: int = option(50, "checkpoint every N steps (and at the last step)")
    seed: int = option(0, "seed of the LoRA init, the batches and the dropout masks")

    def __post_init__(self):
        self.train = parse_train(self.train)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train"] = list(self.train)
        return d

    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.warmup, self.decay_from, self.max_grad_norm, self.ckpt_every)


def parse_train(value) -> tuple[str, ...]:
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value) if p.strip()]
    bad = [p for p in parts if p not in COMPONENTS]
    if bad or not parts:
        raise SlimError(f"--train {','.join(parts) or '(empty)'}: choose lora, projector or lora,projector",
                        param="train")
    return tuple(c for c in COMPONENTS if c in parts)


# ---------------------------------------------------------------------------------------------
# LoRA


def attach_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0):
    """Inject LoRA into the decoder's projections of ``model`` (in place) -> the PeftModel around it.

    Only the modules ``model.lora_target_modules()`` names get adapters; peft freezes every
    other parameter.
    """
    from peft import LoraConfig, get_peft_model

    targets = model.lora_target_modules()
    if not targets:
        raise SlimError(f"no decoder projections found for LoRA in this {model.family} model", param="train")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(model, config)


def merge_lora(peft_model):
    """Fold the LoRA weights into the base weights -> the plain SpeechLLM (no peft modules left)."""
    return peft_model.merge_and_unload()


def save_adapter(peft_model, model, path: str | Path, fingerprint: str | None = None) -> Path:
    """The unmerged adapter (peft format) + ``slimspeech_adapter.json``: ``model`` = the ``ModelRef`` it
    was trained on (family, kept layers, fingerprint), ``lora_target_modules``."""
    path = Path(path)
    peft_model.save_pretrained(str(path))
    ref = ModelRef(family=model.family, kept_layers=layer_list(model), decoder_layers=model.num_decoder_layers,
                   fingerprint=fingerprint)
    write_json(path / ADAPTER_META, {**stamp("slimspeech heal"), "model": ref.to_dict(),
                                     "lora_target_modules": len(model.lora_target_modules())})
    return path


def adapter_model(meta: dict) -> ModelRef:
    """The model an adapter meta says its adapter was trained on (metas before provenance schema 2 were flat)."""
    return ModelRef.from_dict(meta["model"] if "model" in meta else meta)


def check_adapter(model, path: str | Path) -> dict:
    """SlimError unless the adapter at ``path`` was trained on a model with this model's layer list."""
    path = Path(path)
    meta_path = path / ADAPTER_META
    if not (path / "adapter_config.json").is_file():
        raise SlimError(f"{path} is not a LoRA adapter dir (no adapter_config.json)", param="adapter")
    if not meta_path.is_file():
        raise SlimError(f"{path} has no {ADAPTER_META}: its layer list is unknown, so it cannot be checked "
                        "against this model; use an adapter saved by slimspeech heal", param="adapter")
    meta = read_json(meta_path)
    trained_on = adapter_model(meta)
    mine = layer_list(model)
    if trained_on.kept_layers != mine or trained_on.family != model.family:
        raise SlimError(f"adapter {path} was trained on a {trained_on.family} model with decoder layers "
                        f"{trained_on.kept_layers} but this model runs layers {mine}: LoRA weights are indexed by "
                        "layer position, so heal this model instead", param="adapter")
    return meta


def load_adapter(model, path: str | Path, trainable: bool = True):
    """Apply a saved adapter to ``model`` (after ``check_adapter``) -> the PeftModel."""
    from peft import PeftModel

    check_adapter(model, path)
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


# ---------------------------------------------------------------------------------------------
# data


class HealData:
    """Draws mixed-task batches of (task, audio, target text, transcript) from manifest rows by (seed, step)."""

    def __init__(self, rows: list[dict], tasks: list[Task], seed: int = 0, max_seconds: float | None = None):
        self.rows, self.tasks, self.seed, self.max_seconds = rows, tasks, seed, max_seconds
        self.eligible: list[list[int]] = []
        for task in tasks:
            ok = [i for i, r in enumerate(rows) if reference(r, task, required=False) is not None]
            if not ok:
                raise SlimError(f"no utterance of the training data has a reference for {task}: "
                                f"drop it from --tasks or use a manifest with translations", param="tasks")
            self.eligible.append(ok)

    def _draw(self, step: int, total: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        which = torch.randint(0, len(self.tasks), (total,), generator=g).tolist()
        return which, torch.rand(total, generator=g).tolist()

    def task_counts(self, step: int, total: int) -> dict[str, int]:
        """How many samples of each task the global batch of ``step`` holds."""
        which, _ = self._draw(step, total)
        return {t.label: which.count(i) for i, t in enumerate(self.tasks)}

    def batch(self, step: int, size: int, rank: int = 0, world: int = 1):
        """-> (tasks, wavs, targets, transcripts) of this rank's share of the global batch ``size * world``."""
        which, pick = self._draw(step, size * world)
        tasks, wavs, targets, transcripts = [], [], [], []
        for k in range(rank * size, (rank + 1) * size):
            t = which[k]
            row = self.rows[self.eligible[t][int(pick[k] * len(self.eligible[t]))]]
            tasks.append(self.tasks[t])
            wavs.append(load_audio(row["audio"], max_seconds=self.max_seconds))
            targets.append(reference(row, self.tasks[t]))
            transcripts.append(row.get("text") or "")
        return tasks, wavs, targets, transcripts


# ---------------------------------------------------------------------------------------------
# the model under training


class Student(nn.Module):
    """(tasks, wavs, targets) -> (logits (B, T, V), labels (B, T), aux): the module DDP wraps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tasks, wavs, targets):
        x = self.model.embed(tasks, wavs, targets)
        out = self.model.lm(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask,
                            position_ids=x.position_ids)
        return out.logits, x.labels, x.aux


def setup_trainable(model, cfg: HealConfig, adapter=None):
    """Freeze everything, then open LoRA and/or the projector. -> (peft model or None, param groups)."""
    torch.manual_seed(cfg.seed)  # the same LoRA init on every rank (DDP also broadcasts rank 0's)
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = None
    if "lora" in cfg.train:
        if adapter is not None:
            peft_model = load_adapter(model, adapter, trainable=True)
        else:
            peft_model = attach_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    elif adapter is not None:
        raise SlimError("--adapter needs lora in --train", param="adapter")
    groups = []
    lora = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    if lora:
        groups.append({"params": lora, "lr": cfg.lr, "name": "lora"})
    if "projector" in cfg.train:
        proj = [p for n, p in model.named_parameters() if n.startswith(model.projector_prefixes)]
        if not proj:
            raise SlimError(f"this {model.family} model has no projector parameters under "
                            f"{model.projector_prefixes}", param="train")
        for p in proj:
            p.requires_grad_(True)
        groups.append({"params": proj, "lr": cfg.projector_lr, "name": "projector"})
    return peft_model, groups


class HealStep:
    """One healing step's loss on this rank's share of the batch: CE on the target tokens, KL to the
    teacher's logits (with a teacher), CTC of the projector's CTC head on the transcript (``use_ctc``)."""

    def __init__(self, model, data: HealData, cfg: HealConfig, D: Dist, teacher=None, use_ctc: bool = False):
        self.model, self.data, self.cfg, self.D, self.use_ctc = model, data, cfg, D, use_ctc
        self.teacher = Student(teacher) if teacher is not None else None

    def __call__(self, step: int, net) -> Step:
        cfg, D = self.cfg, self.D
        btasks, wavs, targets, transcripts = self.data.batch(step, cfg.batch_size, D.rank, D.world)
        logits, labels, aux = net(btasks, wavs, targets)
        s_logits, gold = target_logits(logits, labels)
        ce = F.cross_entropy(s_logits.float(), gold)
        kl = ctc = None
        if self.teacher is not None:
            with torch.no_grad():
                t_logits, t_labels, _ = self.teacher(btasks, wavs, targets)
            t_sel, t_gold = target_logits(t_logits, t_labels)
            if not torch.equal(t_gold, gold):
                raise SlimError("teacher and student tokenize the targets differently: use the model this "
                                "one was pruned from as --teacher", param="teacher")
            kl = distill_kl(s_logits, t_sel, cfg.temperature)
        if self.use_ctc and aux.get("ctc_logits") is not None:
            ids = [self.model.text_ids(t) for t in transcripts]
            ctc = ctc_loss(aux["ctc_logits"], aux["ctc_lengths"], ids, self.model.projector.blank_id)
        out = combine_losses(ce, kl=kl, ctc=ctc, distill_weight=cfg.distill_weight, ctc_weight=cfg.ctc_weight)
        out.info["tasks"] = self.data.task_counts(step, cfg.batch_size * D.world)
        return out


# ---------------------------------------------------------------------------------------------
# healing


def _check_resume(state: dict, cfg: HealConfig, kept: list[int], fingerprint: str, ckpt_path: Path) -> None:
    # checkpoints before provenance schema 2 held the identity at the top level of the state
    trained_on = ModelRef.from_dict(state["model"] if "model" in state else state)
    if trained_on.kept_layers != kept:
        raise SlimError(f"checkpoint {ckpt_path} was trained on decoder layers {trained_on.kept_layers}, this model "
                        f"runs {kept}: use another --work dir", param="work")
    if trained_on.fingerprint != fingerprint:
        raise SlimError(f"checkpoint {ckpt_path} belongs to another model (fingerprint {trained_on.fingerprint}"
                        f" vs {fingerprint}): use another --work dir or delete it", param="work")
    old = {k: v for k, v in state.get("config", {}).items() if k not in RESUMABLE_CHANGES}
    new = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
    if old != new:
        diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
        raise SlimError(f"checkpoint {ckpt_path} was made with another healing config {diff} (old, new): "
                        "use the same flags to resume, or another --work dir", param="work")


def heal(model_dir, manifests: list[str], out, cfg: HealConfig | None = None, *, teacher=None, work=None,
         adapter=None, device: str = "auto", limit: int | None = None, stop_after: int | None = None,
         progress: bool = True) -> Provenance | None:
    """Heal ``model_dir`` on ``manifests`` and save the merged model to ``out``; -> its provenance.

    Under torchrun every process calls this; rank 0 logs, checkpoints and saves. ``stop_after``
    ends this run after that many steps (checkpointed, no output): a later call resumes.
    The steps run in ``prune_tools.loop.run_loop``; this function sets up what trains and writes the result.
    """
    cfg = cfg or HealConfig()
    if cfg.steps < 0:
        raise SlimError(f"--steps {cfg.steps} must be >= 0", param="steps")
    tasks_req = parse_tasks(cfg.tasks)
    out = Path(out)
    work = Path(work) if work else out.parent / f"{out.name}.work"
    rows = load_rows(manifests, limit)
    if not rows:
        raise SlimError("the training manifest is empty", param="data")
    D = init_distributed(device)
    try:
        model = load_model(model_dir, device=D.device)
        tasks = model.resolve_tasks(tasks_req)
        kept = layer_list(model)
        fingerprint = model_fingerprint(model)
        parent_prov = Provenance.of(model)
        parent = ModelRef.of(model, model_dir, fingerprint=fingerprint, kept_layers=kept)
        teacher_model = None
        if teacher is not None:
            teacher_model = load_model(teacher, device=D.device)
            if len(teacher_model.tokenizer) != len(model.tokenizer) or teacher_model.family != model.family:
                raise SlimError(f"teacher {teacher} is a {teacher_model.family} model with a vocabulary of "
                                f"{len(teacher_model.tokenizer)}, the student a {model.family} one with "
                                f"{len(model.tokenizer)}: distil from the model this one was pruned from",
                                param="teacher")
            for p in teacher_model.parameters():
                p.requires_grad_(False)
            teacher_model.eval()
        peft_model, groups = setup_trainable(model, cfg, adapter)
        n_trainable = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
        data = HealData(rows, tasks, cfg.seed, model.max_audio_seconds)
        use_ctc = ("projector" in cfg.train and cfg.ctc_weight > 0
                   and hasattr(getattr(model, "projector", None), "blank_id"))
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups],
                                weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

        def on_start(_step: int) -> None:  # after the checkpoint check: a refused run leaves the dir as it was
            if D.main:
                write_json(work / "heal_config.json", {"model": parent.to_dict(), "config": cfg.to_dict(),
                                                       "teacher": str(teacher) if teacher else None,
                                                       "world_size": D.world})

        result = run_loop(
            "heal", work, model, opt, HealStep(model, data, cfg, D, teacher_model, use_ctc), cfg.schedule(),
            dist=D, forward_module=Student(model), seed=cfg.seed, stop_after=stop_after, progress=progress,
            meta={"config": cfg.to_dict(), "model": ModelRef(kept_layers=kept, fingerprint=fingerprint).to_dict()},
            check_resume=partial(_check_resume, cfg=cfg, kept=kept, fingerprint=fingerprint,
                                 ckpt_path=work / "ckpt.pt"),
            on_start=on_start)
        if not result.finished:
            D.barrier()
            return None
        provenance = None
        if D.main:
            model.to("cpu")
            adapter_dir = None
            if peft_model is not None:
                adapter_dir = save_adapter(peft_model, model, work / "adapter", fingerprint)
                model = merge_lora(peft_model)
            history = read_log(work / LOG_FILE, cfg.steps)
            healing = {
                "config": cfg.to_dict(), "train": list(cfg.train),
                "lora_target_modules": len(model.lora_target_modules()) if "lora" in cfg.train else 0,
                "trainable_parameters": n_trainable,
                "teacher": str(Path(teacher).resolve()) if teacher else None,
                "data": {"manifests": [str(Path(m).resolve()) for m in manifests], "utterances": len(rows),
                         "tasks": [str(t) for t in tasks]},
                "steps": cfg.steps, "world_size": D.world, "device": D.device,
                "global_batch": cfg.batch_size * D.world,
                "first_loss": history[0] if history else None,
                "final_loss": round(sum(history[-10:]) / len(history[-10:]), 5) if history else None,
                "seconds": round(result.elapsed_s, 1),
                "log": str((work / LOG_FILE).resolve()),
                "adapter": str(adapter_dir.resolve()) if adapter_dir else None,
                "initial_adapter": str(Path(adapter).resolve()) if adapter else None,
            }
            provenance = parent_prov.derive("slimspeech heal", parent, kept_layers=kept, healing=healing,
                                            scores=None).describing(model.eval())
            model.save(out, provenance=provenance.to_dict())
            log.info("healed %s (%s, %d steps, loss %s -> %s) -> %s", model_dir, "+".join(cfg.train), cfg.steps,
                     healing["first_loss"], healing["final_loss"], out)
        D.barrier()
        return provenance
    finally:
        D.close()


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech heal", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="pruned model dir")
    p.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help="training manifest(s), JSONL")
    p.add_argument("--out", required=True, help="healed model dir (LoRA merged)")
    p.add_argument("--work", default=None, help="log, checkpoint and adapter dir (default: OUT.work)")
    p.add_argument("--teacher", default=None, help="unpruned model dir: logit distillation on target tokens")
    p.add_argument("--adapter", default=None, help="start LoRA from this saved adapter (same layer list)")
    p.add_argument("--limit", type=int, default=None, help="first N utterances of the data")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (torchrun: one GPU per process)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    add_options(p, HealConfig, title="healing")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(HealConfig, args)
    prov = heal(args.model, args.data, args.out, cfg, teacher=args.teacher, work=args.work, adapter=args.adapter,
                device=args.device, limit=args.limit)
    if prov is not None:
        h = prov.healing
        print(f"healed {args.model} ({'+'.join(h['train'])}, {h['steps']} steps x {h['global_batch']}, "
              f"{h['world_size']} process(es)): loss {h['first_loss']} -> {h['final_loss']} -> {args.out}")
    return 0
