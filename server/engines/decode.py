"""Iteration-level batching for the torch engine: requests join a running decode at the next step
and leave it when they finish (one ``DecodeLoop`` per served model, driven by
``scheduler.ContinuousScheduler`` in the engine's worker thread).

    loop = DecodeLoop(runner, max_new_tokens=None)   # runner: a loaded TorchRunner
    loop.admit(handles)    # encoder + projector of the newcomers (a clip that fails, fails alone),
                           # their prefill as one (k, T, D) batch: each gets its first token and joins
    loop.step()            # one token for every row: (B, 1, D) in, (B,) tokens out; rows that hit
                           # EOS, their token budget or a cancel resolve their handles and leave
    loop.rows              # rows decoding now

The tensors (KV cache with per-row lengths, masks, positions) live in ``speechllm.generate.GreedyBatch``;
this module maps rows to requests: their token ids, log-probabilities, time to first token,
streamed text deltas and results. Everything a step has to tell the event loop (deltas, results,
failures) goes there in one ``call_soon_threadsafe`` per step, not one per row. Greedy text is the
same as decoding each request alone (tests/server/test_continuous.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from speechllm.generate import GreedyBatch, decode

from ..errors import as_api_error
from .base import EngineResult, RequestHandle, TextDeltas

log = logging.getLogger(__name__)


@dataclass
class _Row:
    """One request while it decodes."""

    handle: RequestHandle
    prompt_tokens: int
    encoded_at: float  # when its encoder batch finished: decode_seconds counts from here
    encoder_seconds: float
    texts: TextDeltas | None  # streamed requests only
    ids: list[int] = field(default_factory=list)
    logprob: float = 0.0
    #: most rows in one forward (prefill or step) this request took part in: its batch size
    batch_size: int = 0


class _Outbox:
    """What one step tells the event loop (handle methods: emit, finish, fail), posted as one
    callback per event loop instead of one wake-up per row."""

    def __init__(self):
        self.calls: dict[int, tuple] = {}  # id(loop) -> (loop, [(bound method, args)])

    def add(self, method, *args) -> None:
        loop = method.__self__.loop
        self.calls.setdefault(id(loop), (loop, []))[1].append((method, args))

    def flush(self) -> None:
        calls, self.calls = self.calls, {}
        for loop, todo in calls.values():
            loop.call_soon_threadsafe(_run_all, todo)


def _run_all(calls: list[tuple]) -> None:
    for method, args in calls:
        method(*args)


class DecodeLoop:
    """The rows of one served model that decode together; called from the worker thread only."""

    def __init__(self, runner, max_new_tokens: int | None = None):
        self.runner = runner
        self.model = runner.model
        self.eos = self.model.eos_token_id
        self.budget = max_new_tokens or self.model.max_new_tokens
        self.batch = GreedyBatch(self.model)
        self.active: list[_Row] = []  # row i of the batch is active[i]
        self.outbox = _Outbox()

    @property
    def rows(self) -> int:
        return len(self.active)

    # ---- joining --------------------------------------------------------------------------
    @torch.inference_mode()
    def admit(self, handles: list[RequestHandle]) -> None:
        """Encode the newcomers (one encoder batch), prefill them (one decoder batch) and add them as rows."""
        live = [h for h in handles if not h.cancelled]
        if not live:
            return
        t0 = time.perf_counter()
        prompts = self.runner.encode_prompts(live, to_cpu=False)
        self.runner.sync()
        t1 = time.perf_counter()
        rows, ok = [], []
        for h, p in zip(live, prompts):
            if isinstance(p, Exception):  # this clip failed alone (runner.encode_prompts)
                self.outbox.add(h.fail, as_api_error(p))
            elif not h.cancelled:
                texts = TextDeltas(self._decode) if h.request.stream else None
                rows.append(_Row(h, int(p.shape[0]), t1, t1 - t0, texts))
                ok.append(p)
        if ok:
            try:
                tokens, logprobs = self.batch.add(ok)  # the running rows' cache is untouched if this raises
            except Exception as exc:
                log.exception("model %r: prefill of %d clips failed", self.runner.name, len(ok))
                err = as_api_error(exc)
                for row in rows:
                    self.outbox.add(row.handle.fail, err)
            else:
                self.active += rows
                self._advance(len(self.active) - len(rows), tokens, logprobs, len(rows))
        self.outbox.flush()

    # ---- decoding -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        """One decoding step for every row; finished rows resolve and leave."""
        if any(r.handle.cancelled for r in self.active):  # their handles are failed (499) already
            self._keep([i for i, r in enumerate(self.active) if not r.handle.cancelled])
        if not self.active:
            return
        try:
            tokens, logprobs = self.batch.step()
        except Exception as exc:
            log.exception("model %r: decoding step failed", self.runner.name)
            self.fail_all(exc)
            return
        self._advance(0, tokens, logprobs, len(self.active))
        self.outbox.flush()

    def fail_all(self, exc: BaseException) -> None:
        """Fail every row (a bug or a device error) and start over with an empty batch."""
        err = as_api_error(exc)
        for row in self.active:
            self.outbox.add(row.handle.fail, err)
        self.active = []
        self.batch = GreedyBatch(self.model)
        self.outbox.flush()

    # ---- internals ------------------------------------------------------------------------
    def _decode(self, ids: list[int]) -> str:
        return decode(self.model, ids)

    def _advance(self, start: int, tokens: list[int], logprobs: list[float], batch_size: int) -> None:
        """Rows ``start``... got ``tokens``: record them; rows that are done resolve and leave."""
        now = time.perf_counter()
        done = set()
        for i, (tok, lp) in enumerate(zip(tokens, logprobs), start):
            row = self.active[i]
            h = row.handle
            row.batch_size = max(row.batch_size, batch_size)
            if h.cancelled:
                done.add(i)
                continue
            if tok == self.eos:
                self._finish(row, now)
                done.add(i)
                continue
            if h.first_token_at is None:
                h.first_token_at = now
            row.ids.append(tok)
            row.logprob += lp
            if row.texts is not None and (delta := row.texts.push([tok])):
                self.outbox.add(h.emit, delta)
            if len(row.ids) >= self.budget:
                self._finish(row, now)
                done.add(i)
        if done:
            self._keep([i for i in range(len(self.active)) if i not in done])

    def _keep(self, keep: list[int]) -> None:
        self.batch.keep(keep)
        self.active = [self.active[i] for i in keep]

    def _finish(self, row: _Row, now: float) -> None:
        h = row.handle
        text = self._decode(row.ids)
        if row.texts is not None and (tail := row.texts.tail(text)):
            self.outbox.add(h.emit, tail)  # what incremental decoding held back
        self.outbox.add(h.finish, EngineResult(
            text=text, token_ids=list(row.ids), avg_logprob=row.logprob / len(row.ids) if row.ids else None,
            prompt_tokens=row.prompt_tokens, queue_seconds=(h.dispatched_at or row.encoded_at) - h.submitted_at,
            encoder_seconds=row.encoder_seconds, decode_seconds=now - row.encoded_at,
            time_to_first_token=None if h.first_token_at is None else h.first_token_at - h.submitted_at,
            batch_size=row.batch_size))
