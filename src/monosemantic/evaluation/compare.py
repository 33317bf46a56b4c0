"""`monosemantic compare CONFIG`: one table and plots across the dictionaries of a run.

Reads `[evaluate].out/metrics.json` (after `monosemantic evaluate`, with or without benchmarks)
and writes `compare/` beside it (or `[compare].out`):
- `compare.md`, `compare.csv`: one row per dictionary: site, architecture, L0, FVU, CE loss
  recovered, concept coverage, sparse-probing accuracy (mean over tasks) at k = 1, 5, 20 and of
  the dense probe, absorption rate and fraction, SCR and TPP at 10 latents, autointerp mean with
  its 95% interval;
- `frontier_fvu.png`, `frontier_ce_recovered.png` (vs L0, one series per site),
  `probing_vs_k.png`, `absorption.png`, `autointerp.png` (with intervals), `coverage.png`;
  plots whose metric no dictionary has are skipped.
The blind comparison of two dictionaries (`monosemantic blind` / `unblind`) lives in `blind.py`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from monosemantic.config import Config
from monosemantic.utils.errors import DataError
from monosemantic.utils.files import write_text_atomic

from .plots import _save, plot_frontier, plt

COLUMNS: list[tuple[str, str]] = [
    ("name", "dictionary"),
    ("site", "site"),
    ("architecture", "arch"),
    ("l0", "L0"),
    ("fvu", "FVU"),
    ("ce_loss_recovered", "CE rec."),
    ("concept_coverage", "coverage"),
    ("probe_top_1", "probe k=1"),
    ("probe_top_5", "probe k=5"),
    ("probe_top_20", "probe k=20"),
    ("probe_dense", "probe dense"),
    ("absorption_rate", "absorption"),
    ("absorption_fraction", "abs. fraction"),
    ("scr_10", "SCR@10"),
    ("tpp_10", "TPP@10"),
    ("autointerp", "autointerp"),
    ("autointerp_ci95", "autointerp 95% CI"),
]


def load_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """name -> metrics entry, from either metrics.json shape (a sweep's or one dictionary's)."""
    if not path.exists():
        raise DataError(f"{path} does not exist; run `monosemantic evaluate` on this config first")
    data = json.loads(path.read_text())
    if isinstance(data.get("dictionaries"), dict):
        return dict(data["dictionaries"])
    if "name" in data:
        return {data["name"]: data}
    raise DataError(f"{path} is not a metrics.json written by `monosemantic evaluate`")


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def row(m: dict[str, Any]) -> dict[str, Any]:
    """One table row from a metrics entry (None where the metric was not computed)."""
    site = m.get("hook_name") or ""
    if m.get("hook_name_out") and m["hook_name_out"] != site:
        site = f"{site} -> {m['hook_name_out']}"
    out: dict[str, Any] = {
        k: m.get(k) for k in ("name", "architecture", "l0", "fvu", "ce_loss_recovered", "concept_coverage")
    }
    out["site"] = site
    probing = m.get("sparse_probing") or {}
    for k in ("1", "5", "20"):
        out[f"probe_top_{k}"] = _mean([t["k"].get(k) for t in probing.values()])
    out["probe_dense"] = _mean([t.get("dense") for t in probing.values()])
    absorption = m.get("absorption") or {}
    out["absorption_rate"] = absorption.get("mean_absorption_rate")
    out["absorption_fraction"] = absorption.get("mean_absorption_fraction_score")
    out["scr_10"] = (m.get("scr") or {}).get("scr_metric_threshold_10")
    out["tpp_10"] = (m.get("tpp") or {}).get("tpp_threshold_10_total_metric")
    auto = m.get("autointerp") or {}
    out["autointerp"] = auto.get("mean")
    ci = auto.get("ci95")
    out["autointerp_ci95"] = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else None
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k, _ in COLUMNS})
    return buf.getvalue()


def _frontier(metrics: dict[str, dict[str, Any]], key: str, label: str, path: Path) -> Path | None:
    """The sweep's frontier, one line per site and kind (`plots.plot_frontier`)."""
    return plot_frontier([{"name": name, **m} for name, m in metrics.items()], key, path, label)


def _probing(metrics: dict[str, dict[str, Any]], path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for name, m in metrics.items():
        tasks = m.get("sparse_probing") or {}
        ks = sorted({int(k) for t in tasks.values() for k in t["k"]})
        ys = [_mean([t["k"].get(str(k)) for t in tasks.values()]) for k in ks]
        pts = [(k, y) for k, y in zip(ks, ys, strict=True) if y is not None]
        if not pts:
            continue
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)[0]
        dense = _mean([t.get("dense") for t in tasks.values()])
        if dense is not None:
            ax.axhline(dense, color=line.get_color(), linestyle=":", linewidth=0.8)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set(xlabel="k (latents in the probe)", ylabel="held-out accuracy (mean over tasks)",
           title="Sparse probing (dotted: probe on raw activations)")  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _bars(rows: list[dict[str, Any]], key: str, label: str, path: Path, ci_key: str | None = None,
          metrics: dict[str, dict[str, Any]] | None = None) -> Path | None:  # fmt: skip
    pts = [
        (r["name"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(pts) + 2), 4))
    err = None
    if ci_key and metrics:
        lo_hi = [(metrics[n].get("autointerp") or {}).get("ci95") or [v, v] for n, v in pts]
        err = [[v - (c[0] if c[0] is not None else v) for (_, v), c in zip(pts, lo_hi, strict=True)],
               [(c[1] if c[1] is not None else v) - v for (_, v), c in zip(pts, lo_hi, strict=True)]]  # fmt: skip
    ax.bar(range(len(pts)), [v for _, v in pts], yerr=err, capsize=3)
    ax.set_xticks(range(len(pts)), [n for n, _ in pts], rotation=45, ha="right", fontsize=7)
    ax.set(ylabel=label, title=label)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def compare_folder(cfg: Config) -> Path:
    """Where `compare` writes (and `blind`/`unblind` under `blind/`): `[compare].out`, by default
    `compare` beside `[evaluate].out`."""
    return Path(cfg.compare.out) if cfg.compare.out is not None else Path(cfg.evaluate.out).parent / "compare"


def compare(cfg: Config, out: str | Path | None = None) -> Path:
    """Write the table and plots for every dictionary in `[evaluate].out/metrics.json`; returns the folder."""
    metrics = load_metrics(Path(cfg.evaluate.out) / "metrics.json")
    folder = Path(out) if out is not None else compare_folder(cfg)
    rows = [row(m) for m in metrics.values()]
    write_text_atomic(folder / "compare.md", markdown_table(rows))
    write_text_atomic(folder / "compare.csv", csv_table(rows))
    _frontier(metrics, "fvu", "FVU", folder / "frontier_fvu.png")
    _frontier(metrics, "ce_loss_recovered", "CE loss recovered", folder / "frontier_ce_recovered.png")
    _probing(metrics, folder / "probing_vs_k.png")
    _bars(rows, "absorption_rate", "absorption rate (first letter)", folder / "absorption.png")
    _bars(
        rows, "autointerp", "autointerp score (95% CI)", folder / "autointerp.png", "autointerp_ci95", metrics
    )
    _bars(rows, "concept_coverage", "storyworld concept coverage", folder / "coverage.png")
    return folder
