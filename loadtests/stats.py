"""Statistics of a load test, computed from the per-request records alone.

    s = summarize(records, busy_s=12.0)       # one model at one load level
    s["latency_s"]["p99"], s["throughput_rps"], s["rtfx"], s["error_rate"]
    ratios(stats_by_model, reference="base")  # {"pruned": {"latency_p50": 0.61, "throughput_rps": 1.6, ...}}

Definitions (every number in the report is one of these):
  latency        end to end, request sent -> last byte, successful requests only
  ttft           request sent -> first text delta (streaming only), successful requests only
  throughput     successful requests / busy seconds (the time this model had load on it, drains included)
  tokens/s       generated tokens of successful requests / busy seconds (servers report them in ``usage``)
  RTFx           audio seconds of successful requests / busy seconds (> 1: faster than real time)
  error rate     requests that failed (non-200, transport error, broken stream) / requests sent
Percentiles interpolate linearly between order statistics (numpy's default).
"""

from __future__ import annotations

import math
from collections import Counter

#: metrics compared between models: (key in the ratio table, how to read it off a summary, higher is better)
RATIO_METRICS = (
    ("latency_p50", lambda s: s["latency_s"]["p50"], False),
    ("latency_p90", lambda s: s["latency_s"]["p90"], False),
    ("latency_p99", lambda s: s["latency_s"]["p99"], False),
    ("ttft_p50", lambda s: (s["ttft_s"] or {}).get("p50"), False),
    ("throughput_rps", lambda s: s["throughput_rps"], True),
    ("tokens_per_s", lambda s: s["tokens_per_s"], True),
    ("rtfx", lambda s: s["rtfx"], True),
)


def percentile(values, q: float) -> float | None:
    """q in [0, 100]; linear interpolation between the closest ranks; None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values) -> dict | None:
    xs = list(values)
    if not xs:
        return None
    return {"p50": percentile(xs, 50), "p90": percentile(xs, 90), "p99": percentile(xs, 99),
            "mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)}


def _get(r, key):
    return r[key] if isinstance(r, dict) else getattr(r, key)


def summarize(records, busy_s: float) -> dict:
    """Stats of one model at one level from its records (dicts or Records), warm-up excluded by the caller."""
    records = list(records)
    good = [r for r in records if _get(r, "ok")]
    n = len(records)
    tokens = [_get(r, "output_tokens") for r in good]
    have_tokens = bool(good) and all(t is not None for t in tokens)
    audio = sum(_get(r, "audio_s") for r in good)
    lags = [_get(r, "sent") - _get(r, "scheduled") for r in records if _get(r, "scheduled") is not None]
    per = (lambda x: x / busy_s) if busy_s > 0 else (lambda x: None)
    return {
        "requests": n,
        "ok": len(good),
        "errors": n - len(good),
        "error_rate": (n - len(good)) / n if n else None,
        "statuses": {str(k): v for k, v in sorted(Counter(_get(r, "status") for r in records).items())},
        "busy_s": busy_s,
        "latency_s": distribution(_get(r, "latency_s") for r in good),
        "ttft_s": distribution(_get(r, "ttft_s") for r in good if _get(r, "ttft_s") is not None),
        "throughput_rps": per(len(good)),
        "output_tokens": sum(tokens) if have_tokens else None,
        "tokens_per_s": per(sum(tokens)) if have_tokens else None,
        "audio_s": audio,
        "rtfx": per(audio),
        "chars_per_s": per(sum(_get(r, "chars") for r in good)),
        "max_send_lag_s": max(lags) if lags else None,
        "first_errors": sorted({_get(r, "error") for r in records if _get(r, "error")})[:3],
    }


def ratios(stats: dict[str, dict], reference: str) -> dict[str, dict]:
    """model -> {metric: value(model) / value(reference)} for every model but the reference (None if undefined)."""
    ref = stats.get(reference)
    out = {}
    for model, s in stats.items():
        if model == reference or ref is None:
            continue
        row = {}
        for key, get, _ in RATIO_METRICS:
            try:
                a, b = get(s), get(ref)
            except (TypeError, KeyError):
                a = b = None
            row[key] = a / b if a is not None and b else None
        out[model] = row
    return out


def ideal_ratios(layers: dict[str, int], reference: str) -> dict[str, dict]:
    """What the ratios would be if time scaled with the decoder layer count alone (an upper bound on the gain:
    the encoder, projector, embeddings and HTTP do not shrink)."""
    ref = layers.get(reference)
    out = {}
    for model, n in layers.items():
        if model == reference or not ref or not n:
            continue
        f = n / ref
        out[model] = {"decoder_layers": f"{n}/{ref}", "latency_p50": f, "latency_p90": f, "latency_p99": f,
                      "ttft_p50": f, "throughput_rps": 1 / f, "tokens_per_s": 1 / f, "rtfx": 1 / f}
    return out
