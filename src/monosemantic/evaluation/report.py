"""Writing evaluation results: metrics.json, metrics.csv, concepts.json, plots, and a terminal table.

Layout of `evaluate.out` (one shape whether one dictionary or a sweep was evaluated):

- `metrics.json`: `{"sample": {...}, "dictionaries": {name: metrics, ...}}`. `sample` says which
  sequences were used (`selection` "all" or "random", `seed`, `n_sequences`, `n_tokens`,
  `cache_sequences`, `held_out`, `sequences` (their numbers; null: all), `note`); each dictionary's `metrics` is a flat dict (`name`,
  `path`, `hook_name`, `l0`, `fvu`, `mse`, `dead_fraction`, `ce_loss_*`, `kl_spliced`, concept
  summary, `density_histogram`, ...) to which other metric families add their own keys.
- `metrics.csv`: one row per dictionary (the scalar metrics).
- `concepts.json` per-concept and per-feature scores: at the top for one dictionary, else
  `NAME/concepts.json`.
- `density.png` (histograms of every dictionary); for a sweep also `frontier_l0_fvu.png` and
  `frontier_l0_ce_recovered.png`.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from monosemantic.utils.files import write_json_atomic, write_text_atomic
from monosemantic.utils.format import percent

from .plots import plot_density_histograms, plot_frontier

# Columns of the terminal table: (key, header, format).
TABLE = [
    ("l0", "L0", "{:.1f}"),
    ("fvu", "FVU", "{:.4g}"),
    ("cosine_similarity", "cos", "{:.3f}"),
    ("relative_reconstruction_bias", "γ", "{:.4g}"),
    ("dead_fraction", "dead", percent),
    ("dense_fraction", "dense", percent),
    ("ce_loss_spliced", "CE spliced", "{:.4f}"),
    ("ce_loss_recovered", "CE rec.", "{:.1%}"),
    ("kl_spliced", "KL", "{:.3g}"),
    ("concept_coverage", "cov.", "{:.0%}"),
]

COMPACT = ("l0", "fvu", "dead_fraction", "ce_loss_recovered", "kl_spliced", "concept_coverage")


def scalar_items(metrics: dict[str, Any]) -> dict[str, Any]:
    """The CSV-able part of a metrics dict: numbers, strings, booleans and None."""
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float, str, bool))}


def _json_safe(obj: Any) -> Any:
    """NaN/inf become None so metrics.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def metrics_csv(results: Sequence[dict[str, Any]]) -> str:
    rows = [scalar_items(r) for r in results]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def write_outputs(
    out: str | Path,
    results: Sequence[dict[str, Any]],
    concepts: dict[str, dict[str, Any]],
    plots: bool = True,
    sample: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every output file of the layout above; returns the paths written."""
    out = Path(out)
    written: list[Path] = []
    sweep = len(results) > 1
    by_name = {r["name"]: _json_safe(r) for r in results}
    write_json_atomic(
        out / "metrics.json", {"sample": _json_safe(dict(sample or {})), "dictionaries": by_name}
    )
    for name, report in concepts.items():
        path = out / name / "concepts.json" if sweep else out / "concepts.json"
        write_json_atomic(path, _json_safe(report))
        written.append(path)
    written.append(out / "metrics.json")
    write_text_atomic(out / "metrics.csv", metrics_csv(results))
    written.append(out / "metrics.csv")
    if plots:
        written.append(plot_density_histograms(results, out / "density.png"))
        if sweep:
            for metric, fname, label in (
                ("fvu", "frontier_l0_fvu.png", "FVU"),
                ("ce_loss_recovered", "frontier_l0_ce_recovered.png", "CE loss recovered"),
            ):
                path = plot_frontier(results, metric, out / fname, label)
                if path is not None:
                    written.append(path)
    return written


def print_table(results: Sequence[dict[str, Any]], console: Console) -> None:
    columns = [(k, h, f) for k, h, f in TABLE if any(r.get(k) is not None for r in results)]
    if console.width < 130:  # a narrow terminal: the essentials only (every number is in the files)
        columns = [c for c in columns if c[0] in COMPACT]
    rows = []
    for r in results:
        site = _short_site(r.get("hook_name") or "?")
        if r.get("hook_name_out") and r["hook_name_out"] != r.get("hook_name"):
            site = f"{site}→{_short_site(r['hook_name_out']).split(' ')[-1]}"
        cells = [r["name"], site]
        for key, _, fmt in columns:
            v = r.get(key)
            ok = isinstance(v, (int, float)) and math.isfinite(v)
            cells.append("–" if not ok else fmt(v) if callable(fmt) else fmt.format(v))
        rows.append(cells)
    headers = ["dictionary", "site", *(h for _, h, _ in columns)]
    table = Table(
        title="Dictionary evaluation",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, header in enumerate(headers):
        width = max(len(header), *(len(row[i]) for row in rows))
        # numbers keep their full width; only the names may be cut
        table.add_column(
            header, justify="left" if i < 2 else "right", no_wrap=True, min_width=width if i >= 2 else None
        )
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _short_site(site: str) -> str:
    """'blocks.1.hook_resid_post' -> 'L1 resid_post', for a narrow table."""
    parts = site.split(".")
    if len(parts) == 3 and parts[0] == "blocks":
        return f"L{parts[1]} {parts[2].removeprefix('hook_')}"
    return site
