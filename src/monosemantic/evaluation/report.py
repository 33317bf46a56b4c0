"""Writing evaluation results: metrics.json, metrics.csv, concepts.json, plots, and a terminal table.

Layout of `evaluate.out` (one shape whether one dictionary or a sweep was evaluated):

- `metrics.json`: `{"sample": {...}, "dictionaries": {name: metrics, ...}, "seed_groups": {...}}`.
  `sample` says which sequences were used (`selection` "held_out", "all" or "random", `seed`,
  `n_sequences`, `n_tokens`, `cache_sequences`, `held_out` (true: only sequences training never
  read), `eval_sequences` (the cache's split: seed, fraction, n), `sequences` (their numbers; null:
  all), `note`); each dictionary's `metrics` is a flat dict (`name`, `path`, `hook_name`, `l0`,
  `fvu`, `mse`, `dead_fraction`, `ce_loss_*` with `ce_convention`, `ce_loss_increase` (nats),
  `ce_loss_recovered_reliable`, `kl_spliced`, `ci95` (metric -> [lo, hi], with `interval` saying
  how), `seed`/`seed_group` for a run with seeds, concept summary, `density_histogram`, ...) to
  which other metric families add their own keys. `seed_groups` (runs with `[train].seeds`): per
  group, the mean and 95% interval over seeds of each metric.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from monosemantic.config.site import Site, SiteError
from monosemantic.utils.files import write_json_atomic, write_text_atomic
from monosemantic.utils.format import percent

from .conditioning import FLAG, recovered_cell
from .plots import plot_density_histograms, plot_frontier
from .seeds import table_rows

# Columns of the terminal table: (key, header, format).
TABLE = [
    ("l0", "L0", "{:.1f}"),
    ("fvu", "FVU", "{:.4f}"),
    ("cosine_similarity", "cos", "{:.3f}"),
    ("relative_reconstruction_bias", "γ", "{:.4g}"),
    ("dead_fraction", "dead", percent),
    ("near_dead_fraction", "near dead", percent),
    ("dense_fraction", "dense", percent),
    ("ce_loss_spliced", "CE spliced", "{:.4f}"),
    ("ce_loss_increase", "ΔCE nats", "{:.4f}"),
    ("ce_loss_recovered", "CE rec.", "{:.1%}"),
    ("kl_spliced", "KL", "{:.4f}"),
    ("concept_coverage", "cov.", "{:.0%}"),
]

COMPACT = ("l0", "fvu", "ce_loss_increase", "ce_loss_recovered", "kl_spliced", "concept_coverage")


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
    seed_groups: dict[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write every output file of the layout above; returns the paths written."""
    out = Path(out)
    written: list[Path] = []
    sweep = len(results) > 1
    by_name = {r["name"]: _json_safe(r) for r in results}
    document: dict[str, Any] = {"sample": _json_safe(dict(sample or {})), "dictionaries": by_name}
    if seed_groups:
        document["seed_groups"] = _json_safe(seed_groups)
    write_json_atomic(out / "metrics.json", document)
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
            rows = table_rows(list(results), seed_groups or {})
            for metric, fname, label in (
                ("fvu", "frontier_l0_fvu.png", "FVU"),
                ("ce_loss_recovered", "frontier_l0_ce_recovered.png", "CE loss recovered"),
            ):
                path = plot_frontier(rows, metric, out / fname, label)
                if path is not None:
                    written.append(path)
    return written


def cell(r: dict[str, Any], key: str, fmt: str | Callable[[float], str], interval: bool = True) -> str:
    """A table cell: the value, ± half its 95% interval when it has one; CE recovered shows the
    ill-conditioning flag instead of its percentage (`conditioning.py`)."""
    if key == "ce_loss_recovered":
        shown = recovered_cell(r, fmt)
        if shown is None or shown == FLAG:
            return shown or "–"
    v = r.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "–"
    show = fmt if callable(fmt) else fmt.format
    text = show(v)
    ci = (r.get("ci95") or {}).get(key)
    if interval and ci and None not in ci and all(math.isfinite(c) for c in ci):
        half = (ci[1] - ci[0]) / 2
        text += "±" + show(half).lstrip("+")
    return text


def print_table(results: Sequence[dict[str, Any]], console: Console) -> None:
    """The terminal table; rows with a 95% interval show value±half-width (seed groups: over seeds,
    else a bootstrap over sequences)."""
    columns = [(k, h, f) for k, h, f in TABLE if any(r.get(k) is not None for r in results)]
    if console.width < 150:  # a narrow terminal: the essentials only (every number is in the files)
        columns = [c for c in columns if c[0] in COMPACT]
    rows = []
    for r in results:
        site = _short_site(r.get("hook_name") or "?")
        if r.get("hook_name_out") and r["hook_name_out"] != r.get("hook_name"):
            site = f"{site}→{_short_site(r['hook_name_out']).split(' ')[-1]}"
        name = r["name"] + (f" ({r['n_seeds']} seeds)" if r.get("n_seeds") else "")
        rows.append([name, site, *(cell(r, key, fmt) for key, _, fmt in columns)])
    headers = ["dictionary", "site", *(h for _, h, _ in columns)]
    table = Table(
        title="Dictionary evaluation (± half the 95% interval)",
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
    try:
        parsed = Site.parse(site)
    except SiteError:
        return site
    if not parsed.block or parsed.is_group or parsed.is_pair:
        return site
    return f"{'B ' if parsed.model == 'b' else ''}L{parsed.layer} {parsed.hook.removeprefix('hook_')}"
