"""The one training loop: every stage of ``slimspeech train`` and ``slimspeech heal`` run through ``run_loop``.

    from prune_tools.loop import Schedule, Step, combine_losses, init_distributed, run_loop, target_logits

    dist = init_distributed("auto")          # under torchrun: joins the process group (gloo on CPU, nccl on GPU)
    model = ...                              # its trainable parameters are checkpointed
    opt = torch.optim.AdamW([{"params": [...], "lr": 1e-3}])

    def step_fn(step: int, net) -> Step:     # net: forward_module, wrapped in DDP when dist.world > 1
        logits, labels, aux = net(*batch(step, dist.rank, dist.world))   # (B, T, V), (B, T)
        pred, gold = target_logits(logits, labels)                        # (N, V), (N,): the N target tokens
        ce = F.cross_entropy(pred.float(), gold)
        kl = distill_kl(pred, teacher_pred, temperature=2.0)              # teacher_pred: (N, V), no grad
        ctc = ctc_loss(aux["ctc_logits"], aux["ctc_lengths"], ids, blank) # (B, T', V'), (B,), B id lists
        return combine_losses(ce, kl=kl, ctc=ctc, distill_weight=0.5, ctc_weight=0.3)

    result = run_loop("heal", work_dir, model, opt, step_fn, Schedule(steps=300, warmup=20),
                      dist=dist, forward_module=Student(model), seed=0, meta={"config": ...},
                      check_resume=refuse_other_runs)
    dist.close()

Each step: every param group's LR = its initial LR x ``Schedule.lr_factor`` (linear warmup,
constant until ``decay_from`` x steps, linear decay to 10%); with ``seed``, torch's global RNG
is reseeded from (seed, step, rank) so dropout masks are the same in a resumed run; ``step_fn``;
zero_grad, backward, gradient clipping to ``max_grad_norm`` and the optimizer step. The loss and
``Step.parts`` are averaged over the processes and written, with LR, gradient norm and
``Step.info``, as one JSON line per step to ``work/log.jsonl`` (rank 0 only); a progress bar
shows the loss. ``eval_fn`` runs (module in eval mode) every ``eval_every`` steps and at the
last step; its results join that step's record.

Checkpoints: ``work/ckpt.pt`` every ``ckpt_every`` steps and at the last step of the run
(``stop_after`` ends a run early), written atomically by rank 0: the trained tensors of
``module`` (those whose name starts with ``state_prefixes``, or every parameter that requires
grad), the optimizer state, the step, the elapsed seconds, the world size and ``meta``. A call
with a checkpoint in ``work`` resumes from it: ``check_resume(state)`` may refuse it
(SlimError), a checkpoint with tensors ``module`` lacks is refused, and log records of steps
after the checkpoint are dropped (they run again). Batches must come from (seed, step) for a
resumed run to compute what an uninterrupted one does.

Data parallel: under ``torchrun`` (WORLD_SIZE > 1) each process runs ``run_loop`` on its share
of the global batch; ``forward_module`` is wrapped in DistributedDataParallel, so calling ``net``
makes backward all-reduce the gradients, and every process takes the same optimizer step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist_
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from speechllm.devices import resolve_device
from speechllm.errors import SlimError

log = logging.getLogger(__name__)

CKPT_FILE = "ckpt.pt"
LOG_FILE = "log.jsonl"


# ---------------------------------------------------------------------------------------------
# schedule and checkpoint


@dataclass(frozen=True)
class Schedule:
    """How long and how fast: steps, LR schedule, gradient clipping, checkpoint and eval intervals."""

    steps: int
    warmup: int = 0  # linear warmup steps
    decay_from: float = 0.7  # constant LR until this fraction of the steps, then linear decay to 10%
    max_grad_norm: float = 1.0
    ckpt_every: int = 50
    eval_every: int = 0  # 0: evaluate at the last step only (when there is an eval_fn)

    def lr_factor(self, step: int) -> float:
        """The multiplier of every param group's initial LR at ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        start = int(self.decay_from * self.steps)
        if step < start:
            return 1.0
        return 1.0 - 0.9 * (step - start) / max(1, self.steps - start)


class Checkpoint:
    """Atomic checkpoint file: a dict saved with torch.save (written to a temp file, then renamed)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict | None:
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def read_log(path: Path, total: int | None = None) -> list[float]:
    """Loss per step 1..total from a loop's JSONL log (the last record of a step wins)."""
    by_step: dict[int, float] = {}
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                by_step[rec["step"]] = rec["loss"]
    return [by_step[s] for s in sorted(by_step) if total is None or s <= total]


# ---------------------------------------------------------------------------------------------
# losses


@dataclass
class Step:
    """What ``step_fn`` returns: the scalar loss to backpropagate, named loss terms, other log fields."""

    loss: torch.Tensor  # () tensor with grad
    parts: dict[str, float] = field(default_factory=dict)  # e.g. ce, kl, ctc: averaged over ranks, logged
    info: dict = field(default_factory=dict)  # logged as rank 0 has it (e.g. task counts of the batch)


def target_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, V), (B, T) -> (N, V) logits that predict the N target tokens, and those (N,) token ids.

    ``labels`` holds -100 where there is no target; position t predicts the token at t + 1.
    """
    pred, gold = logits[:, :-1], labels[:, 1:]
    mask = gold != -100
    return pred[mask], gold[mask]


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) per target token, (N, V) logits each (Hinton et al. 2015)."""
    s = F.log_softmax(student.float() / temperature, -1)
    t = F.log_softmax(teacher.float() / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]], blank: int) -> torch.Tensor:
    """CTC of (B, T, V) frame logits with (B,) valid lengths against B token-id lists; mean over the batch.

    An infeasible alignment (more tokens than frames) counts 0 rather than inf (``zero_infinity``).
    """
    logp = logits.float().log_softmax(-1).transpose(0, 1)
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long)
    tl = torch.tensor([len(seq) for seq in targets])
    return F.ctc_loss(logp, flat, lengths.cpu(), tl, blank=blank, zero_infinity=True)


def combine_losses(ce: torch.Tensor, *, kl: torch.Tensor | None = None, ctc: torch.Tensor | None = None,
                   distill_weight: float = 0.0, ctc_weight: float = 0.0) -> Step:
    """``(1 - w) * CE + w * KL`` with a teacher's KL (else CE), ``+ ctc_weight * CTC`` with a CTC term."""
    loss, parts = ce, {"ce": float(ce.detach())}
    if kl is not None:
        loss = (1 - distill_weight) * ce + distill_weight * kl
        parts["kl"] = float(kl.detach())
    if ctc is not None:
        loss = loss + ctc_weight * ctc
        parts["ctc"] = float(ctc.detach())
    return Step(loss, parts)


# ---------------------------------------------------------------------------------------------
# distributed


@dataclass
class Dist:
    """This process's place in the run: rank, world size, its device, and whether it made the process group."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist_.barrier()

    def mean(self, values: list[float]) -> list[float]:
        """The mean of each value over the processes (the values themselves in a single process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.startswith("cuda") else "cpu")
        dist_.all_reduce(t)
        return (t / self.world).tolist()

    def close(self) -> None:
        """Leave the process group if ``init_distributed`` made it."""
        if self.owns_group and dist_.is_initialized():
            dist_.destroy_process_group()


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1; gloo on CPU, nccl on GPU), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device)
    if world <= 1:
        return Dist(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    owns = not dist_.is_initialized()
    if owns:
        dist_.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, device, owns)


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class LoopResult:
    start: int  # the step this call began at (> 0 when it resumed)
    end: int  # the step it stopped after
    steps: int  # the schedule's total
    elapsed_s: float  # training seconds, over every call that contributed to the checkpoint

    @property
    def finished(self) -> bool:
        return self.end >= self.steps


def _trained_state(module: nn.Module, prefixes: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    if prefixes is not None:
        return {k: v for k, v in module.state_dict().items() if k.startswith(prefixes)}
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def run_loop(name: str, work: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
             step_fn: Callable[[int, nn.Module], Step], schedule: Schedule, *,
             dist: Dist | None = None, forward_module: nn.Module | None = None,
             state_prefixes: tuple[str, ...] | None = None, meta: dict | None = None,
             check_resume: Callable[[dict], None] | None = None, on_start: Callable[[int], None] | None = None,
             on_step: Callable[[int], None] | None = None, eval_fn: Callable[[], dict] | None = None,
             seed: int | None = None, stop_after: int | None = None, progress: bool = True,
             decimals: int = 5) -> LoopResult:
    """Train ``module`` for ``schedule.steps`` steps of ``step_fn``, resuming from ``work/ckpt.pt``; see the module doc.

    ``name``: progress bar and log label. ``forward_module``: what ``step_fn`` gets as ``net``
    (default ``module``), wrapped in DDP when ``dist.world > 1``. ``state_prefixes``: checkpoint
    the ``module.state_dict()`` entries with these prefixes instead of the parameters that require
    grad. ``meta``: stored in every checkpoint (identity for ``check_resume``). ``on_start(step)``:
    once, after any resume, before the first step. ``on_step(step)``: before each step.
    ``seed``: reseed torch's global RNG per (step, rank); None leaves it alone. ``decimals``:
    rounding of logged losses.
    """
    dist = dist or Dist()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    net = forward_module if forward_module is not None else module
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[int(dist.device.split(":")[1])] if dist.device.startswith("cuda") else None)
    ckpt = Checkpoint(work / CKPT_FILE)
    log_path = work / LOG_FILE
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    start, elapsed0 = 0, 0.0
    state = ckpt.load()
    if state is not None:
        if check_resume is not None:
            check_resume(state)
        missing = set(state["params"]) - set(module.state_dict())
        if missing:
            raise SlimError(f"checkpoint {ckpt.path} has tensors this model lacks ({sorted(missing)[:3]}...): "
                            "use another --work dir", param="work")
        module.load_state_dict(state["params"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed0 = int(state["step"]), float(state.get("elapsed_s", 0.0))
        log.info("%s: resuming from %s at step %d", name, ckpt.path, start)
        if state.get("world_size", dist.world) != dist.world:
            log.warning("%s: the checkpoint was written by %d process(es), this run has %d: the global batch "
                        "changes accordingly", name, state["world_size"], dist.world)
        if dist.main and log_path.exists():  # records of steps after the checkpoint: those steps run again
            kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
            log_path.write_text("".join(line + "\n" for line in kept))
    total = schedule.steps
    end = total if stop_after is None else min(total, start + stop_after)
    if on_start is not None:
        on_start(start)
    t0 = time.time()

    def elapsed() -> float:
        return elapsed0 + time.time() - t0

    def save(step: int) -> None:
        if dist.main:
            ckpt.save({"params": _trained_state(module, state_prefixes), "optimizer": optimizer.state_dict(),
                       "step": step, "elapsed_s": elapsed(), "world_size": dist.world, **(meta or {})})

    bar = tqdm(total=total, initial=start, desc=name, mininterval=5, disable=not (dist.main and progress))
    with open(log_path, "a") if dist.main else open(os.devnull, "w") as logf:
        for step in range(start, end):
            if on_step is not None:
                on_step(step)
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * schedule.lr_factor(step)
            if seed is not None:  # dropout masks from (seed, step, rank): a resumed run draws the same
                torch.manual_seed(seed * 7919 + step * dist.world + dist.rank)
            module.train()
            out = step_fn(step, net)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, schedule.max_grad_norm)
            optimizer.step()
            names = ["loss", *out.parts]
            means = dist.mean([float(out.loss.detach()), *out.parts.values()])
            rec = {"step": step + 1, **{k: round(v, decimals) for k, v in zip(names, means)},
                   "lr": optimizer.param_groups[0]["lr"], "grad_norm": round(float(grad_norm), 4), **out.info,
                   "elapsed_s": round(elapsed(), 2)}
            if eval_fn is not None and ((schedule.eval_every and (step + 1) % schedule.eval_every == 0)
                                        or step + 1 == total):
                module.eval()
                rec.update(eval_fn())
                log.info("%s step %d: %s", name, step + 1, rec)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            bar.set_postfix(loss=rec["loss"], refresh=False)
            bar.update(1)
            if (step + 1) % schedule.ckpt_every == 0 or step + 1 == end:
                save(step + 1)
    bar.close()
    if end < total:
        log.info("%s: stopped after step %d of %d (resume by re-running)", name, end, total)
    return LoopResult(start, end, total, round(elapsed(), 2))
