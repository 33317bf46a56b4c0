"""PNG plots of evaluation results (matplotlib's Agg backend: no display needed).

- `plot_density_histograms`: log10 feature density of each dictionary (dead features counted apart).
- `plot_frontier`: one metric against L0 across a sweep, the sparsity-fidelity trade-off, with
  95% intervals as error bars (`ci95`: over seeds or a bootstrap over sequences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from monosemantic.utils.files import atomic_path  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def error_bars(rows: Sequence[dict[str, Any]], key: str) -> list[list[float]] | None:
    """matplotlib's [below, above] error lengths from each row's `ci95[key]` (0 where it has none);
    None when no row has an interval."""
    cis = [(r.get("ci95") or {}).get(key) for r in rows]
    if not any(cis):
        return None
    below = [max(r[key] - c[0], 0.0) if c and None not in c else 0.0 for r, c in zip(rows, cis, strict=True)]
    above = [max(c[1] - r[key], 0.0) if c and None not in c else 0.0 for r, c in zip(rows, cis, strict=True)]
    return [below, above]


def plot_density_histograms(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Step histograms of log10 feature density, one line per dictionary."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        hist = r["density_histogram"]
        edges, counts = hist["log10_edges"], hist["counts"]
        label = f"{r['name']} (dead {hist['dead']})"
        ax.stairs(counts, edges, label=label)
    ax.set_xlabel("log10 feature density (fraction of tokens on which a feature fires)")
    ax.set_ylabel("features")
    ax.axvline(-1, color="grey", linestyle=":", linewidth=1)  # the dense threshold, 10%
    ax.set_title("Feature density")
    ax.legend(fontsize=7)
    return _save(fig, Path(path))


def plot_frontier(
    results: Sequence[dict[str, Any]], metric: str, path: str | Path, label: str
) -> Path | None:
    """`metric` against L0 (log scale), one labelled point per dictionary; None if nothing to plot."""
    rows = [
        r
        for r in results
        if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]) and r.get("l0", 0) > 0
    ]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    rows.sort(key=lambda r: (r["l0"], r[metric]))
    points = [(r["l0"], r[metric], r["name"]) for r in rows]
    xs, ys, names = zip(*points, strict=True)
    ax.errorbar(xs, ys, xerr=error_bars(rows, "l0"), yerr=error_bars(rows, metric), fmt="o-", alpha=0.8,
                capsize=3)  # fmt: skip
    for x, y, name in points:
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs L0")
    ax.grid(True, alpha=0.3)
    return _save(fig, Path(path))
