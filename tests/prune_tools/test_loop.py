"""The shared training loop on a tiny regression module: schedule, resume == uninterrupted, refused checkpoints,
the loss terms. Quick (a few steps, no model dir); heal and train run it on real models in their own tests.

    .venv/bin/python -m pytest -q tests/prune_tools/test_loop.py
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_tools.loop import Schedule, Step, combine_losses, ctc_loss, read_log, run_loop, target_logits
from speechllm.errors import SlimError


class Tiny(nn.Module):
    """(B, 4) -> (B, 1) with dropout, so the per-step reseeding matters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))

    def forward(self, x):
        return self.body(x)


def _step_fn(step: int, net) -> Step:
    g = torch.Generator().manual_seed(step)  # the batch of a step depends on the step only
    x = torch.randn(5, 4, generator=g)
    mse = F.mse_loss(net(x), x.sum(1, keepdim=True))
    return Step(mse, {"mse": float(mse.detach())}, {"rows": 5})


def _run(work, steps=6, stop_after=None, check_resume=None, meta=None, seed=7):
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    res = run_loop("tiny", work, model, opt, _step_fn, Schedule(steps, warmup=2, ckpt_every=4), seed=seed,
                   stop_after=stop_after, check_resume=check_resume, meta=meta, progress=False)
    return model, res


def test_schedule_warmup_constant_decay():
    s = Schedule(10, warmup=2, decay_from=0.5)
    assert [round(s.lr_factor(i), 4) for i in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.82, 0.64, 0.46, 0.28]


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole, res = _run(tmp_path / "a")
    assert res.finished and res.start == 0
    _, res = _run(tmp_path / "b", stop_after=3)  # checkpointed at 3 (its last step), not 4
    assert not res.finished and res.end == 3
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["step"] == 3
    # a crash after step 5 would leave log lines of steps the checkpoint lacks: the resumed run drops them
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    resumed, res = _run(tmp_path / "b")
    assert res.start == 3 and res.finished
    a, b = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ab"]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in a] == [r["loss"] for r in b] == read_log(tmp_path / "b" / "log.jsonl")
    assert all(r["rows"] == 5 and r["mse"] == r["loss"] and "grad_norm" in r for r in b)
    for (k, v), w in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    # without the per-step reseeding a resumed run draws other dropout masks: the check above can fail
    _run(tmp_path / "c", stop_after=3, seed=None)
    unseeded, _ = _run(tmp_path / "c", seed=None)
    assert not torch.equal(unseeded.body[0].weight, whole.body[0].weight)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    _run(tmp_path, stop_after=2, meta={"run": "a"})

    def only_run_b(state):
        if state.get("run") != "b":
            raise SlimError(f"checkpoint of run {state.get('run')}, not b", param="work")

    with pytest.raises(SlimError, match="run a, not b"):
        _run(tmp_path, check_resume=only_run_b, meta={"run": "b"})
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 2  # left as it was
    other = nn.Linear(4, 1)  # has none of the checkpoint's tensors
    with pytest.raises(SlimError, match="tensors this model lacks"):
        run_loop("tiny", tmp_path, other, torch.optim.AdamW(other.parameters()), _step_fn, Schedule(4),
                 progress=False)


def test_loss_terms():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 6, -100, -100]])
    pred, gold = target_logits(logits, labels)  # position t predicts the label at t + 1
    assert pred.shape == (5, 7) and gold.tolist() == [3, 4, 1, 2, 6]
    assert torch.equal(pred[0], logits[0, 1]) and torch.equal(pred[3], logits[1, 0])
    ce, kl, ctc = torch.tensor(2.0), torch.tensor(0.5), torch.tensor(4.0)
    out = combine_losses(ce, kl=kl, ctc=ctc, distill_weight=0.25, ctc_weight=0.1)
    assert float(out.loss) == pytest.approx(0.75 * 2.0 + 0.25 * 0.5 + 0.1 * 4.0)
    assert out.parts == {"ce": 2.0, "kl": 0.5, "ctc": 4.0}
    assert combine_losses(ce).parts == {"ce": 2.0} and float(combine_losses(ce).loss) == 2.0
    frames = torch.full((1, 6, 4), -10.0)
    frames[0, [0, 2, 4], [1, 2, 3]] = 10.0  # 1 blank 2 blank 3 blank: a sure path to [1, 2, 3]
    frames[0, [1, 3, 5], 0] = 10.0
    assert float(ctc_loss(frames, torch.tensor([6]), [[1, 2, 3]], blank=0)) < 1e-3
    assert float(ctc_loss(frames, torch.tensor([6]), [[3, 2, 1]], blank=0)) > 1.0
