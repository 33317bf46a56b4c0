"""PNG plots of evaluation results (matplotlib's Agg backend: no display needed).

- `plot_density_histograms`: log10 feature density of each dictionary (dead features counted apart).
- `plot_frontier`: one metric against L0 across a sweep, the sparsity-fidelity trade-off.
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
    (`series_name`), so dictionaries of different sites or kinds are never joined; None if nothing
    to plot."""
    by_series: dict[str, list[tuple[float, float, str]]] = {}
    for r in results:
        x, y = r.get("l0"), r.get(metric)
        if isinstance(y, (int, float)) and math.isfinite(y) and isinstance(x, (int, float)) and x > 0:
            by_series.setdefault(series_name(r), []).append((x, y, r["name"]))
    if not by_series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for series, pts in sorted(by_series.items()):
        pts.sort()
        style = "s:" if series.endswith("(baseline)") else "o-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, alpha=0.8, label=series)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs L0")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, Path(path))
