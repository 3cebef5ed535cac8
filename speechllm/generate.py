"""Batched greedy decoding with KV cache, over HF ``generate(inputs_embeds=..., attention_mask=...)``.

    texts = transcribe(model, [wav1, wav2], [Task("transcribe"), Task("translate", "fr")])

Batches are left padded; each sequence stops at its own EOS (later positions are padding and
are cut off); a batch gives the same tokens as its samples one by one.
"""

from __future__ import annotations

import inspect

import torch
from transformers import GenerationConfig
from transformers.cache_utils import Cache, DynamicLayer

from .families.base import DecoderInputs, SpeechLLM
from .tasks import Task


def generation_config(model: SpeechLLM, max_new_tokens: int | None = None,
                      eos_token_id: int | None = None) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_new_tokens or model.max_new_tokens, do_sample=False, num_beams=1,
                            eos_token_id=model.eos_token_id if eos_token_id is None else eos_token_id, pad_token_id=model.pad_token_id,
                            bos_token_id=model.tokenizer.bos_token_id)


@torch.inference_mode()
def greedy_generate(model: SpeechLLM, inputs: DecoderInputs, max_new_tokens: int | None = None, *,
                    streamer=None, stopping_criteria=None, eos_token_id: int | None = None) -> list[list[int]]:
    """-> new token ids per sequence, without EOS and what follows it."""
    config = generation_config(model, max_new_tokens, eos_token_id)
    out = model.lm.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                            generation_config=config, streamer=streamer, stopping_criteria=stopping_criteria)
    result = []
    for row in out.tolist():
        if config.eos_token_id in row:
            row = row[: row.index(config.eos_token_id)]
        result.append(row)
    return result


def decode(model: SpeechLLM, ids: list[int]) -> str:
    return model.tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.inference_mode()
def transcribe(model: SpeechLLM, wavs: list, tasks: list[Task] | Task | None = None,
               max_new_tokens: int | None = None, batch_size: int = 16) -> list[str]:
    """Run (audio, task) pairs through the model in batches of ``batch_size``; -> one text per clip."""
    if tasks is None or isinstance(tasks, Task):
        tasks = [tasks or Task()] * len(wavs)
    texts: list[str] = []
    for start in range(0, len(wavs), batch_size):
        inputs = model.embed(list(tasks[start:start + batch_size]), list(wavs[start:start + batch_size]))
        texts += [decode(model, ids) for ids in greedy_generate(model, inputs, max_new_tokens)]
    return texts


# ---- iteration-level batching: rows join and leave between decoding steps -----------------------


class _RowLayer(DynamicLayer):
    """One decoder layer's keys and values for a batch of rows of different lengths.

    ``keys`` / ``values`` are (B, H_kv, capacity, D_head) buffers of which the first ``length``
    columns are in use; every row is right-aligned (row i's L_i tokens are the last L_i columns in
    use, the columns before them are zero padding that the attention mask hides). Each step writes
    one column for all rows at once, in place: no per-step copy of the whole cache (DynamicLayer
    concatenates, which copies it every step), and the attention sees a view of the used columns.
    """

    def __init__(self, headroom: int):
        super().__init__()
        self.headroom = headroom
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        B, H, T, D = key_states.shape
        self.keys = key_states.new_zeros(B, H, T + self.headroom, D)
        self.values = value_states.new_zeros(B, H, T + self.headroom, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length + n > self.keys.shape[-2]:
            self.resize(self.length + n + self.headroom)
        self.keys[:, :, self.length:self.length + n] = key_states
        self.values[:, :, self.length:self.length + n] = value_states
        self.length += n
        return self.keys[:, :, :self.length], self.values[:, :, :self.length]

    def resize(self, capacity: int) -> None:
        """Reallocate to ``capacity`` columns, keeping the used ones."""
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, :self.length] = old[:, :, :self.length]
            setattr(self, name, new)

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.keys = self.values = None
        self.length = 0
        self.is_initialized = False

    def batch_select_indices(self, indices: torch.Tensor, drop_columns: int = 0) -> None:
        """Keep rows ``indices`` (in that order) and forget the first ``drop_columns`` used columns,
        which are padding in every kept row."""
        if self.is_initialized:
            self.keys = self.keys[indices, :, drop_columns:]
            self.values = self.values[indices, :, drop_columns:]
            self.length -= drop_columns

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a row batch never rolls back")


class RowCache(Cache):
    """The KV cache of a ``GreedyBatch``: one ``_RowLayer`` per decoder layer, each holding every
    token of every row (sliding-window layers too: their window is in the mask)."""

    def __init__(self, num_layers: int, headroom: int):
        super().__init__(layers=[_RowLayer(headroom) for _ in range(num_layers)])

    def select(self, indices: torch.Tensor, drop_columns: int = 0) -> None:
        for layer in self.layers:
            layer.batch_select_indices(indices, drop_columns)

    @staticmethod
    def merge(a: RowCache, b: RowCache, headroom: int) -> RowCache:
        """Rows of ``a`` then rows of ``b``, right-aligned in a fresh cache as wide as the wider one."""
        out = RowCache(len(a.layers), headroom)
        for la, lb, lo in zip(a.layers, b.layers, out.layers):
            width = max(la.length, lb.length)
            for name in ("keys", "values"):
                ta, tb = getattr(la, name), getattr(lb, name)
                new = ta.new_zeros(ta.shape[0] + tb.shape[0], ta.shape[1], width + headroom, ta.shape[-1])
                new[: ta.shape[0], :, width - la.length:width] = ta[:, :, :la.length]
                new[ta.shape[0]:, :, width - lb.length:width] = tb[:, :, :lb.length]
                setattr(lo, name, new)
            lo.dtype, lo.device, lo.length, lo.is_initialized = la.dtype, la.device, width, True
        return out


#: decoder layer kinds the row batcher runs: full attention, and sliding windows, whose masks HF builds
#: from cache column indices; rows are right-aligned, so a column distance is a position distance in
#: every row (the cache keeps the whole history, the mask hides what is outside the window)
ROW_BATCHING_LAYERS = frozenset({"full_attention", "sliding_attention"})


def supports_row_batching(model: SpeechLLM) -> str | None:
    """None when ``GreedyBatch`` can run the model's decoder, else why not (e.g. chunked attention,
    whose masks depend on each row's left padding, or layers with recurrent state)."""
    kinds = set(getattr(model.text_config(), "layer_types", None) or ["full_attention"])
    if not kinds <= ROW_BATCHING_LAYERS:
        return f"decoder layer types {sorted(kinds - ROW_BATCHING_LAYERS)} (it runs {sorted(ROW_BATCHING_LAYERS)})"
    return None


class GreedyBatch:
    """Greedy decoding of rows that join and leave between steps, with one KV cache for all rows.

        batch = GreedyBatch(model)
        first, logprobs = batch.add([p1, p2])     # prefill two (T_i, D) prompt embeddings -> (2,) tokens
        tokens, logprobs = batch.step()           # one token for every row: (B,) lists
        batch.keep([1])                           # row 0 finished: only row 1 goes on (rows renumber)
        first, _ = batch.add([p3])                # a newcomer joins the running row at the next step

    Rows are right-aligned in the cache (left padding, masked), so a step feeds every row's last
    token at once: inputs (B, 1, D), attention mask (B, W + 1), position ids (B, 1) = each row's
    own length. Newcomers are prefilled together as one left-padded batch (k, T, D) in a cache of
    their own, which is then merged with the running rows' cache (the narrower one is padded on the
    left). Leaving rows are dropped from the cache, and columns that only padding still uses are cut
    off. Every row sees exactly its own tokens at its own positions, as when it decodes alone; the
    caller decides when a row is done (EOS, its token budget, a cancel) and calls ``keep``.
    """

    def __init__(self, model: SpeechLLM, headroom: int = 32):
        reason = supports_row_batching(model)
        if reason:
            raise ValueError(f"iteration-level batching cannot run {reason}")
        self.model = model
        self.lm = model.lm
        self.headroom = headroom
        self.num_layers = model.text_config().num_hidden_layers
        self.embed = self.lm.get_input_embeddings()
        # models whose LM forward takes logits_to_keep compute the LM head for the last position only,
        # as generate() does; the others (Qwen2-Audio's wrapper) compute every position's logits
        self.keep_last = "logits_to_keep" in inspect.signature(self.lm.forward).parameters
        self.cache: RowCache | None = None
        self.mask: torch.Tensor | None = None  # (B, W) bool: which used cache columns hold a real token
        self.lengths: torch.Tensor | None = None  # (B,) int64: real tokens per row
        self.last: torch.Tensor | None = None  # (B,) int64: each row's latest token, the next step's input

    @property
    def size(self) -> int:
        return 0 if self.lengths is None else int(self.lengths.shape[0])

    def _forward(self, embeds, mask, positions, cache) -> tuple[list[int], list[float], torch.Tensor]:
        kw = {"logits_to_keep": 1} if self.keep_last else {}
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                      use_cache=True, **kw)
        logits = out.logits[:, -1].float()  # (B, V), as generate() scores them
        tokens = logits.argmax(-1)
        logprobs = logits.gather(1, tokens[:, None]).squeeze(1) - logits.logsumexp(-1)
        return tokens.tolist(), logprobs.tolist(), tokens

    @torch.inference_mode()
    def add(self, prompts: list[torch.Tensor]) -> tuple[list[int], list[float]]:
        """Prefill (T_i, D) prompt embeddings as new rows (appended after the running ones);
        -> each new row's first token and its log-probability."""
        inputs = self.model.assemble(prompts)
        cache = RowCache(self.num_layers, self.headroom)
        tokens, logprobs, chosen = self._forward(inputs.inputs_embeds, inputs.attention_mask, inputs.position_ids,
                                                 cache)
        mask = inputs.attention_mask.bool()
        lengths = inputs.attention_mask.sum(-1)
        if self.size == 0:
            self.cache, self.mask, self.lengths, self.last = cache, mask, lengths, chosen
        else:
            width = max(self.mask.shape[1], mask.shape[1])

            def pad(m: torch.Tensor) -> torch.Tensor:  # (B, W_m) -> (B, width), right-aligned like the cache
                return torch.cat([m.new_zeros(m.shape[0], width - m.shape[1]), m], 1)

            self.cache = RowCache.merge(self.cache, cache, self.headroom)
            self.mask = torch.cat([pad(self.mask), pad(mask)])
            self.lengths = torch.cat([self.lengths, lengths])
            self.last = torch.cat([self.last, chosen])
        return tokens, logprobs

    @torch.inference_mode()
    def step(self) -> tuple[list[int], list[float]]:
        """One token for every row -> (B,) tokens and their log-probabilities."""
        if self.size == 0:
            return [], []
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], 1)
        embeds = self.embed(self.last[:, None])  # (B, 1, D)
        tokens, logprobs, chosen = self._forward(embeds, self.mask, self.lengths[:, None], self.cache)
        self.lengths = self.lengths + 1
        self.last = chosen
        return tokens, logprobs

    def keep(self, rows: list[int]) -> None:
        """Only rows ``rows`` (indices into the current rows, in order) go on decoding."""
        if len(rows) == self.size:
            return
        if not rows:
            self.cache = self.mask = self.lengths = self.last = None
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.lengths.device)
        lengths = self.lengths[idx]
        drop = self.mask.shape[1] - int(lengths.max())  # columns that are padding in every kept row
        self.cache.select(idx, drop)
        self.mask = self.mask[idx, drop:]
        self.lengths, self.last = lengths, self.last[idx]


@torch.inference_mode()
def greedy_decode(model: SpeechLLM, prompts: list[torch.Tensor], max_new_tokens: int | None = None,
                  eos_token_id: int | None = None) -> list[list[int]]:
    """``greedy_generate`` through ``GreedyBatch``: (T_i, D) prompts -> new token ids per prompt, without
    EOS; rows leave the batch as they finish. The serving engine's loop, without the serving."""
    budget = max_new_tokens or model.max_new_tokens
    eos = model.eos_token_id if eos_token_id is None else eos_token_id
    batch = GreedyBatch(model)
    out: list[list[int]] = [[] for _ in prompts]
    rows = list(range(len(prompts)))  # row -> prompt index
    tokens, _ = batch.add(prompts)
    while rows:
        rows = record_tokens(batch, rows, tokens, out, eos, budget)
        if rows:
            tokens, _ = batch.step()
    return out


def record_tokens(batch: GreedyBatch, rows: list[int], tokens: list[int], out: list[list[int]], eos: int,
                  budget: int) -> list[int]:
    """Row r's token goes to ``out[rows[r]]`` (EOS is not kept); rows that hit EOS or ``budget`` tokens leave
    ``batch``. -> the prompt indices of the rows that go on, in row order."""
    keep = []
    for r, tok in enumerate(tokens):
        i = rows[r]
        if tok != eos:
            out[i].append(tok)
        if tok != eos and len(out[i]) < budget:
            keep.append(r)
    batch.keep(keep)
    return [rows[r] for r in keep]
