"""Figures of the pruning pipeline, written as PNG files (matplotlib, Agg backend, no display).

    heatmap_grid([("speech / transcribe", matrix), ...], "out/heatmaps_last.png", title=...)
    degradation_curves({"transcribe": {"test-clean": [(0.1, 0.02), ...]}}, "out/degradation.png")

``matrix[n - 1][l]`` is the angular distance d(l, n) of the block of ``n`` layers starting at
layer ``l`` (``None`` where l + n > L), as ``prune_tools.analyze`` stores it. The heatmap puts the
start layer on the x axis and the block size on the y axis, like the paper's Figure 1.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.debug("wrote %s", path)
    return path


def _as_array(matrix: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=np.float64)


def _draw_heatmap(ax, matrix, title: str, vmin: float, vmax: float, best: list[dict] | None = None):
    arr = np.ma.masked_invalid(_as_array(matrix))
    L = arr.shape[0]
    im = ax.imshow(arr, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax,
                   extent=(-0.5, arr.shape[1] - 0.5, 0.5, L + 0.5), interpolation="nearest")
    if best:  # the best (most redundant) start layer per block size
        ax.plot([b["start"] for b in best], [b["n"] for b in best], "w.", markersize=4)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("start layer l")
    ax.set_ylabel("block size n")
    return im


def heatmap_grid(panels: list[tuple[str, list, list | None]], path: str | Path, title: str = "",
                 cols: int | None = None) -> Path:
    """One heatmap per (title, matrix, best-blocks or None) panel, sharing one colour scale; a None panel
    leaves its cell empty (to start a new row of the grid)."""
    plt = _pyplot()
    cols = cols or min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    values = np.concatenate([_as_array(p[1]).ravel() for p in panels if p is not None])
    values = values[np.isfinite(values)]
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.8, 3.1 * rows), squeeze=False, layout="constrained")
    im = None
    for i, ax in enumerate(axes.ravel()):
        if i < len(panels) and panels[i] is not None:
            im = _draw_heatmap(ax, panels[i][1], panels[i][0], vmin, vmax, panels[i][2])
        else:
            ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label="angular distance d(l, n)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def degradation_curves(curves: dict[str, dict[str, list[tuple[float, float | None]]]], path: str | Path,
                       tolerance: float = 0.25, max_fraction: float | None = None,
                       ylabels: dict[str, str] | None = None, title: str = "") -> Path:
    """One panel per task, one line per split: relative degradation vs fraction of decoder layers removed.

    ``curves[task][split] = [(fraction, degradation or None[, low, high]), ...]``: a point with ``low`` and
    ``high`` (not None) gets an error bar over its interval; the dashed line is the tolerance.
    """
    plt = _pyplot()
    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for split, pts in curves[task].items():
            pts = sorted(((*p, None, None)[:4] for p in pts if p[1] is not None), key=lambda p: p[0])
            if pts:
                line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=split, markersize=4)
                bars = [p for p in pts if p[2] is not None]
                if bars:  # the interval of each point that has one, in its line's colour
                    ax.errorbar([p[0] for p in bars], [p[1] for p in bars], capsize=3, linestyle="none",
                                color=line.get_color(), yerr=[[p[1] - p[2] for p in bars], [p[3] - p[1] for p in bars]])
        ax.axhline(tolerance, color="k", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}")
        if max_fraction is not None:
            ax.axvline(max_fraction, color="grey", linestyle=":", linewidth=1)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("fraction of decoder layers removed")
        ax.set_ylabel((ylabels or {}).get(task, "relative degradation"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, path)


def pair_matrix(labels: list[str], values: list[list[float | None]], annotations: list[list[float | None]] | None,
                path: str | Path, title: str = "") -> Path:
    """A labelled condition x condition matrix (e.g. Spearman, -1 .. 1), each cell annotated with its value
    and, when given, ``annotations`` as a share (e.g. "0.82 / 64%"); None cells stay blank."""
    plt = _pyplot()
    n = len(labels)
    arr = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float))
    size = 1.2 + 0.75 * n
    fig, ax = plt.subplots(figsize=(size + 2.5, size), layout="constrained")
    im = ax.imshow(arr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for i in range(n):
        for j in range(n):
            if values[i][j] is None:
                continue
            text = f"{values[i][j]:.2f}"
            if annotations is not None and annotations[i][j] is not None and i != j:
                text += f"\n{annotations[i][j]:.0%}"
            ax.text(j, i, text, ha="center", va="center", fontsize=6,
                    color="white" if abs(values[i][j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Spearman")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(plt, fig, path)
