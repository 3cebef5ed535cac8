"""Writes deploy/grafana/dashboards/slimspeech.json, the Grafana dashboard that compose provisions.

    python deploy/grafana/dashboard.py          # after editing the panels below

The JSON is generated so that every query lives in one readable list; a test checks the
committed JSON equals this script's output and that every metric a query names is exported
by a live server (and that a real Prometheus accepts every query). Variables: ``model``
(the models shown), ``pruned`` and ``base`` (the pair the ratio panels divide).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "dashboards" / "slimspeech.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'model=~"$model"'
RATE = "$__rate_interval"


def q(metric: str, quantile: float, sel: str = SEL, by: str = "model, le") -> str:
    return (f"histogram_quantile({quantile}, sum by ({by}) "
            f"(rate({metric}_bucket{{{sel}}}[{RATE}])))")


def mean(metric: str, sel: str = SEL) -> str:
    return (f"sum by (model) (rate({metric}_sum{{{sel}}}[{RATE}])) / "
            f"sum by (model) (rate({metric}_count{{{sel}}}[{RATE}]))")


def ratio(expr_of) -> str:
    """pruned / base of one expression; each side must drop the model label, or the division matches nothing."""
    return f"({expr_of('$pruned')}) / ({expr_of('$base')})"


# (title, unit, [(legend, expr)], kind, width)
PANELS = [
    ("Request latency p50 / p90 / p99", "s",
     [(f"{{{{model}}}} p{int(p * 100)}", q("slimspeech_request_duration_seconds", p)) for p in (0.5, 0.9, 0.99)],
     "timeseries", 12),
    ("Throughput (successful requests/s)", "reqps",
     [("{{model}}", f'sum by (model) (rate(slimspeech_requests_total{{{SEL}, status="200"}}[{RATE}]))')],
     "timeseries", 12),
    ("Generated tokens/s", "short",
     [("{{model}}", f"sum by (model) (rate(slimspeech_generated_tokens_total{{{SEL}}}[{RATE}]))")],
     "timeseries", 8),
    ("RTFx (audio seconds answered per second)", "short",
     [("{{model}}", f"sum by (model) (rate(slimspeech_audio_seconds_total{{{SEL}}}[{RATE}]))")],
     "timeseries", 8),
    ("Real-time factor p50 / p90 (latency / audio duration)", "short",
     [(f"{{{{model}}}} p{int(p * 100)}", q("slimspeech_real_time_factor", p)) for p in (0.5, 0.9)],
     "timeseries", 8),
    ("Batch size (mean and p90)", "short",
     [("{{model}} mean", mean("slimspeech_batch_size")),
      ("{{model}} p90", q("slimspeech_batch_size", 0.9))],
     "timeseries", 8),
    ("Time to first token p50 / p99", "s",
     [(f"{{{{model}}}} p{int(p * 100)}", q("slimspeech_time_to_first_token_seconds", p)) for p in (0.5, 0.99)],
     "timeseries", 8),
    ("Where the time goes (mean per clip)", "s",
     [("{{model}} queue", mean("slimspeech_queue_seconds")),
      ("{{model}} encoder", mean("slimspeech_encoder_seconds")),
      ("{{model}} decode", mean("slimspeech_decode_seconds"))],
     "timeseries", 8),
    ("Queue depth and errors", "short",
     [("waiting requests {{instance}}", "sum by (instance) (slimspeech_queue_depth)"),
      ("{{model}} {{status}} /s",
       f'sum by (model, status) (rate(slimspeech_requests_total{{{SEL}, status!="200"}}[{RATE}]))')],
     "timeseries", 12),
    ("Memory", "bytes",
     [("RSS {{instance}}", "slimspeech_memory_rss_bytes"),
      ("CUDA allocated {{instance}}", "slimspeech_cuda_memory_allocated_bytes"),
      ("CUDA peak {{instance}}", "slimspeech_cuda_memory_peak_bytes")],
     "timeseries", 12),
    ("$pruned / $base: latency p50 (ideal: layer ratio)", "percentunit",
     [("latency p50", ratio(lambda m: q("slimspeech_request_duration_seconds", 0.5, f'model="{m}"', "le"))),
      ("layer ratio", ratio(lambda m: f'sum(slimspeech_decoder_layers{{model="{m}"}})'))],
     "timeseries", 8),
    ("$pruned / $base: throughput per busy second", "percentunit",
     [("requests per decode second", ratio(lambda m: (
         f'sum(rate(slimspeech_decode_seconds_count{{model="{m}"}}[{RATE}])) / '
         f'sum(rate(slimspeech_decode_seconds_sum{{model="{m}"}}[{RATE}]))'))),
      ("ideal: inverse layer ratio", ratio(lambda m: f'1 / sum(slimspeech_decoder_layers{{model="{m}"}})'))],
     "timeseries", 8),
    ("Shadow mode: mean WER of each model against its reference (live pruning drift)", "percentunit",
     [("{{model}} vs {{reference}} {{task}}",
       f"sum by (model, reference, task) (rate(slimspeech_shadow_wer_sum{{{SEL}}}[{RATE}])) / "
       f"sum by (model, reference, task) (rate(slimspeech_shadow_wer_count{{{SEL}}}[{RATE}]))")],
     "timeseries", 8),
    ("Shadow mode: mean chrF against the reference, and dropped samples/s", "short",
     [("{{model}} vs {{reference}} {{task}} chrF",
       f"sum by (model, reference, task) (rate(slimspeech_shadow_chrf_sum{{{SEL}}}[{RATE}])) / "
       f"sum by (model, reference, task) (rate(slimspeech_shadow_chrf_count{{{SEL}}}[{RATE}]))"),
      ("{{model}} dropped", f'sum by (model) (rate(slimspeech_shadow_requests_total{{{SEL}, outcome!="compared"}}[{RATE}]))')],
     "timeseries", 8),
    ("Models: decoder layers, parameters, weight bytes", "short",
     [("layers {{model}}", f"slimspeech_decoder_layers{{{SEL}}}"),
      ("parameters {{model}}", f"slimspeech_parameters{{{SEL}}}"),
      ("weight bytes {{model}}", f"slimspeech_weight_bytes{{{SEL}}}")],
     "table", 8),
]


def panel(i: int, title: str, unit: str, targets: list, kind: str, width: int, x: int, y: int) -> dict:
    p = {
        "id": i + 1, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": expr, "legendFormat": legend,
                     **({"instant": True, "format": "table"} if kind == "table" else {})}
                    for k, (legend, expr) in enumerate(targets)],
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "mean"]},
                        "tooltip": {"mode": "multi"}}
    return p


def variable(name: str, label: str, default: str | None, multi: bool) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": "label_values(slimspeech_decoder_layers, model)", "refId": name},
            "definition": "label_values(slimspeech_decoder_layers, model)", "refresh": 2, "sort": 1,
            "multi": multi, "includeAll": multi,
            "current": {"text": "All", "value": "$__all"} if default is None else {"text": default, "value": default}}


def dashboard() -> dict:
    panels, x, y = [], 0, 0
    for i, (title, unit, targets, kind, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(panel(i, title, unit, targets, kind, width, x, y))
        x += width
    return {
        "uid": "slimspeech", "title": "slimspeech: pruned vs base", "tags": ["slimspeech"],
        "schemaVersion": 39, "version": 1, "editable": True, "timezone": "browser", "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {"text": "Prometheus", "value": "prometheus"}},
            variable("model", "models", None, True),
            variable("pruned", "pruned", "pruned", False),
            variable("base", "base", "base", False),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
