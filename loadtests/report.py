"""The load test's report: ``report.md``, ``summary.json``, ``latency_cdf.png`` and ``load.png``.

    report.write(summary, records, Path("runs/loadtest"))

``summary`` is what ``loadtests.run.run`` builds (statistics per level and model, ratios against
the reference model, the ideal ratios from the decoder layer counts); ``records`` are the
per-request dicts (``records.jsonl``), from which the latency CDFs are drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

PLOTS = ("latency_cdf.png", "load.png")
_RATIO_COLUMNS = (("latency_p50", "p50"), ("latency_p90", "p90"), ("latency_p99", "p99"), ("ttft_p50", "TTFT p50"),
                  ("throughput_rps", "req/s"), ("tokens_per_s", "tokens/s"), ("rtfx", "RTFx"))


def num(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def ms(dist: dict | None, key: str) -> str:
    return "-" if not dist or dist.get(key) is None else f"{dist[key] * 1000:.1f}"


def _int(x) -> str:
    return "-" if x is None else f"{x:,}"


def _mb(x) -> str:
    return "-" if x is None else f"{x / 2**20:.2f}"


def markdown(summary: dict) -> str:
    plan, ref = summary["plan"], summary["reference"]
    mach = summary["client_machine"]
    lines = [
        f"# Load test: {' vs '.join(plan['models'])}",
        "",
        f"- started {summary['started']} against `{summary['url']}`; client machine: {mach['host_cpu']} "
        f"({mach['cpus']} CPUs), {mach['platform']}, load average {num(mach['load_avg_1m_at_start'])} at start",
        f"- {plan['clips']} clips from `{plan['data']}` (mean {plan['clip_seconds_mean']:.2f} s), tasks "
        f"{', '.join(plan['tasks'])}, {'streaming (SSE)' if plan['stream'] else 'not streaming'}",
        f"- per level and model: {num(plan['duration_s_per_level_per_model'])} s of load, at most "
        f"{plan['max_requests_per_level_per_model']} requests; models interleaved: {plan['mix']}"
        + (f" (windows of {num(plan['window_s'])} s, A B B A ...)" if plan["mix"] == "alternate" else "")
        + f"; {plan['warmup_per_model']} warm-up requests per model, not counted",
    ]
    if summary.get("command"):
        lines.append(f"- command: `{summary['command']}`")
    lines += ["", "## Models", "", "| model | decoder layers | parameters | weights (MiB) | device | dtype |",
              "| --- | ---: | ---: | ---: | --- | --- |"]
    for m, info in summary["server"]["models"].items():
        lines.append(f"| {m} | {num(info.get('decoder_layers'))} | {_int(info.get('parameters'))} | "
                     f"{_mb(info.get('weight_bytes'))} | {info.get('device') or '-'} | {info.get('dtype') or '-'} |")
    lines += ["", "## Latency and throughput", "",
              "Latency in ms (successful requests); throughput over the time each model had load; "
              "RTFx = audio seconds answered per second.", "",
              "| level | model | requests | errors | p50 | p90 | p99 | TTFT p50 | req/s | tokens/s | RTFx "
              "| server batch | server queue ms |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lv in summary["levels"]:
        for m, s in lv["models"].items():
            srv = s.get("server") or {}
            q = srv.get("mean_queue_s")
            lines.append(
                f"| {lv['level']} | {m} | {s['requests']} | {s['errors']} | {ms(s['latency_s'], 'p50')} | "
                f"{ms(s['latency_s'], 'p90')} | {ms(s['latency_s'], 'p99')} | {ms(s['ttft_s'], 'p50')} | "
                f"{num(s['throughput_rps'])} | {num(s['tokens_per_s'])} | {num(s['rtfx'])} | "
                f"{num(srv.get('mean_batch_size'))} | {'-' if q is None else f'{q * 1000:.1f}'} |")
    for model, ideal in summary["ideal_ratios"].items():
        lines += ["", f"## {model} / {ref}", "",
                  f"Below 1 is better for latency, above 1 for throughput. Ideal: time proportional to the decoder "
                  f"layers ({ideal['decoder_layers']}); the encoder, projector and HTTP do not shrink, so at light "
                  "load the measured ratios lie between 1 and the ideal. Near the base model's saturation its "
                  "queueing grows faster than its service time, so latency ratios can drop below the ideal. In an "
                  "open loop below saturation throughput follows the Poisson arrivals: its ratio there is noise "
                  "around 1 (read latency); the closed loop measures capacity.", "",
                  "| level | " + " | ".join(c for _, c in _RATIO_COLUMNS) + " |",
                  "| --- |" + " ---: |" * len(_RATIO_COLUMNS)]
        for lv in summary["levels"]:
            r = lv["ratios"].get(model, {})
            lines.append(f"| {lv['level']} | " + " | ".join(num(r.get(k)) for k, _ in _RATIO_COLUMNS) + " |")
        lines.append("| ideal | " + " | ".join(num(ideal.get(k)) for k, _ in _RATIO_COLUMNS) + " |")
    errors = [(lv["level"], m, e) for lv in summary["levels"] for m, s in lv["models"].items()
              for e in s["first_errors"]]
    if errors:
        lines += ["", "## Errors (first of each level)", ""] + [f"- {lv} {m}: {e}" for lv, m, e in errors[:10]]
    lines += ["", "## Plots", "", "![latency CDF per model](latency_cdf.png)", "",
              "![throughput and p99 latency against offered load](load.png)", "",
              "Per-request records: `records.jsonl`; every number above: `summary.json` "
              "(definitions: `loadtests/stats.py`).", ""]
    return "\n".join(lines)


def console(summary: dict) -> str:
    ref = summary["reference"]
    out = []
    for lv in summary["levels"]:
        for m, s in lv["models"].items():
            out.append(f"{lv['level']:>16} {m:>12}: p50 {ms(s['latency_s'], 'p50'):>8} ms  p99 "
                       f"{ms(s['latency_s'], 'p99'):>8} ms  {num(s['throughput_rps']):>6} req/s  "
                       f"RTFx {num(s['rtfx']):>6}  errors {s['errors']}/{s['requests']}")
        for m, r in lv["ratios"].items():
            out.append(f"{'':>16} {m + '/' + ref:>12}: p50 x{num(r['latency_p50'])}  p99 x{num(r['latency_p99'])}"
                       f"  req/s x{num(r['throughput_rps'])}")
    return "\n".join(out)


def plot(summary: dict, records: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = summary["plan"]["models"]
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    levels = summary["levels"]
    paths = []

    # latency CDF per model, one panel per level
    cols = min(3, max(1, len(levels)))
    rows = max(1, -(-len(levels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, lv in zip(axes.flat, levels):
        for m in models:
            xs = sorted(r["latency_s"] * 1000 for r in records
                        if r["level"] == lv["level"] and r["model"] == m and r["ok"] and not r["warmup"])
            if xs:
                ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", color=colors[m],
                        label=f"{m} (n={len(xs)})")
        ax.set_title(lv["level"], fontsize=10)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no successful request", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(levels):]:
        ax.axis("off")
    fig.suptitle("Latency CDF per model")
    fig.tight_layout()
    paths.append(out / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # throughput and p99 against offered load, one row per loop kind
    modes = [m for m in ("open", "closed") if any(lv["mode"] == m for lv in levels)]
    fig, axes = plt.subplots(len(modes), 2, figsize=(9, 3.4 * len(modes)), squeeze=False)
    for row, mode in zip(axes, modes):
        lvs = [lv for lv in levels if lv["mode"] == mode]
        xs = [lv["offered"] for lv in lvs]
        xlabel = "offered load (req/s per model)" if mode == "open" else "concurrency (in flight per model)"
        for m in models:
            thr = [lv["models"][m]["throughput_rps"] for lv in lvs]
            p99 = [(lv["models"][m]["latency_s"] or {}).get("p99") for lv in lvs]
            row[0].plot(xs, [t if t is not None else float("nan") for t in thr], "o-", color=colors[m], label=m)
            row[1].plot(xs, [p * 1000 if p is not None else float("nan") for p in p99], "o-", color=colors[m],
                        label=m)
        if mode == "open":
            row[0].plot(xs, xs, ":", color="gray", label="offered")
        row[0].set(xlabel=xlabel, ylabel="throughput (req/s)", title=f"{mode} loop: throughput")
        row[1].set(xlabel=xlabel, ylabel="p99 latency (ms)", title=f"{mode} loop: p99 latency")
        for ax in row:
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "load.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write(summary: dict, records: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary["plots"] = [p.name for p in plot(summary, records, out)]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(markdown(summary))
