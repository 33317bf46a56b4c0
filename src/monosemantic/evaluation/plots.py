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


def _fitted(architecture: Any) -> bool:
    """A baseline fitted in one pass (PCA, ICA, random, neurons): drawn apart from trained ones."""
    from monosemantic.dictionaries.registry import dictionary_class
    from monosemantic.utils.errors import MonosemanticError

    try:
        return bool(dictionary_class(str(architecture)).fitted)
    except MonosemanticError:
        return False


def series_name(r: dict[str, Any]) -> str:
    """What one frontier line joins: dictionaries of the same kind at the same site (an SAE at a
    site, a transcoder from one site to another, a fitted baseline at a site are three lines)."""
    site_in, site_out = r.get("hook_name") or "?", r.get("hook_name_out")
    site = f"{site_in} → {site_out}" if site_out and site_out != site_in else site_in
    return f"{site} (baseline)" if _fitted(r.get("architecture")) else site


def plot_frontier(
    results: Sequence[dict[str, Any]], metric: str, path: str | Path, label: str
) -> Path | None:
    """`metric` against L0 (log scale), one labelled point per dictionary and one line per series
    (`series_name`), so dictionaries of different sites or kinds are never joined, 95% intervals
    as error bars; None if nothing to plot."""
    by_series: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        x, y = r.get("l0"), r.get(metric)
        if isinstance(y, (int, float)) and math.isfinite(y) and isinstance(x, (int, float)) and x > 0:
            by_series.setdefault(series_name(r), []).append(r)
    if not by_series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for series, rows in sorted(by_series.items()):
        rows.sort(key=lambda r: (r["l0"], r[metric]))
        style = "s:" if series.endswith("(baseline)") else "o-"
        ax.errorbar([r["l0"] for r in rows], [r[metric] for r in rows], xerr=error_bars(rows, "l0"),
                    yerr=error_bars(rows, metric), fmt=style, alpha=0.8, capsize=3, label=series)  # fmt: skip
        for r in rows:
            ax.annotate(
                r["name"], (r["l0"], r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs L0")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, Path(path))
