"""`monosemantic compare CONFIG`: one table and plots across the dictionaries of a run.

Reads `[evaluate].out/metrics.json` (after `monosemantic evaluate`, with or without benchmarks),
prints the table with 95% intervals and writes `compare/` beside it (or `[compare].out`):
- `compare.md`, `compare.csv`: one row per dictionary, or per seed group for a run with
  `[train].seeds` (mean over seeds): site, architecture, L0, FVU, CE increase (nats), CE loss
  recovered (or "low gap" where it is ill-conditioned), KL, concept coverage, each with its 95%
  interval (over seeds, else a bootstrap over the evaluated sequences), sparse-probing accuracy
  (mean over tasks) at k = 1, 5, 20 and of the dense probe, absorption rate and fraction, SCR and
  TPP at 10 latents, autointerp mean with its 95% interval; above it, which sequences were
  evaluated (held out or not), and below it, per site, which differences are wins: a difference
  inside the intervals is not called one (`intervals.decide`);
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

from .conditioning import FLAG
from .intervals import decide
from .plots import _save, error_bars, plt
from .seeds import table_rows

COLUMNS: list[tuple[str, str]] = [
    ("name", "dictionary"),
    ("site", "site"),
    ("architecture", "arch"),
    ("n_seeds", "seeds"),
    ("l0", "L0"),
    ("fvu", "FVU"),
    ("ce_loss_increase", "CE increase (nats)"),
    ("ce_loss_recovered", "CE rec."),
    ("kl_spliced", "KL"),
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


# Metrics shown with their interval, and how many decimals (the rest are plain values).
WITH_INTERVAL = {"l0": 1, "fvu": 4, "ce_loss_increase": 4, "ce_loss_recovered": 3, "kl_spliced": 4,
                 "concept_coverage": 3}  # fmt: skip
# Metrics whose winners compare names, per site (lower is better unless intervals.HIGHER says so).
DECIDED = ("fvu", "ce_loss_increase", "kl_spliced")


def load_document(path: Path) -> dict[str, Any]:
    """metrics.json as written by `evaluate` (an old one-dictionary file becomes the sweep shape)."""
    if not path.exists():
        raise DataError(f"{path} does not exist; run `monosemantic evaluate` on this config first")
    data = json.loads(path.read_text())
    if isinstance(data.get("dictionaries"), dict):
        return data
    if "name" in data:
        return {"sample": {}, "dictionaries": {data["name"]: data}}
    raise DataError(f"{path} is not a metrics.json written by `monosemantic evaluate`")


def load_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """name -> metrics entry, from either metrics.json shape (a sweep's or one dictionary's)."""
    return dict(load_document(path)["dictionaries"])


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def row(m: dict[str, Any]) -> dict[str, Any]:
    """One table row from a metrics entry (None where the metric was not computed)."""
    site = m.get("hook_name") or ""
    if m.get("hook_name_out") and m["hook_name_out"] != site:
        site = f"{site} -> {m['hook_name_out']}"
    out: dict[str, Any] = {
        k: m.get(k)
        for k in ("name", "architecture", "n_seeds", "l0", "fvu", "ce_loss_increase", "ce_loss_recovered",
                  "kl_spliced", "concept_coverage", "ci95", "ce_loss_recovered_reliable")
    }  # fmt: skip
    out["site"] = site
    probing = m.get("sparse_probing") or {}
    for k in ("1", "5", "20"):
        out[f"probe_top_{k}"] = _mean([t["k"].get(k) for t in probing.values()])
    out["probe_dense"] = _mean([t.get("dense") for t in probing.values()])
    absorption = m.get("absorption") or {}
    out["absorption_rate"] = (
        "refused" if absorption.get("refused") else absorption.get("mean_absorption_rate")
    )
    out["absorption_fraction"] = (
        "refused" if absorption.get("refused") else absorption.get("mean_absorption_fraction_score")
    )
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


def _cell(r: dict[str, Any], key: str) -> str:
    """A value with its 95% interval, `0.0651 [0.0612, 0.0703]`; CE recovered shows the flag
    where it is ill-conditioned."""
    if key == "ce_loss_recovered" and r.get("ce_loss_recovered_reliable") is False:
        return FLAG
    v = r.get(key)
    if key not in WITH_INTERVAL or not isinstance(v, (int, float)) or not math.isfinite(v):
        return _fmt(v)
    d = WITH_INTERVAL[key]
    ci = (r.get("ci95") or {}).get(key)
    if not ci or None in ci:
        return f"{v:.{d}f}"
    return f"{v:.{d}f} [{ci[0]:.{d}f}, {ci[1]:.{d}f}]"


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in rows)]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r, k) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]]) -> str:
    """Values and their interval bounds in separate columns (`fvu`, `fvu_lo`, `fvu_hi`)."""
    fields = []
    for k, _ in COLUMNS:
        fields += [k, f"{k}_lo", f"{k}_hi"] if k in WITH_INTERVAL else [k]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        out = {k: "" if r.get(k) is None else r[k] for k, _ in COLUMNS}
        for k in WITH_INTERVAL:
            ci = (r.get("ci95") or {}).get(k) or [None, None]
            out[f"{k}_lo"], out[f"{k}_hi"] = ("" if c is None else c for c in ci)
        if r.get("ce_loss_recovered_reliable") is False:
            out["ce_loss_recovered"] = FLAG
        w.writerow(out)
    return buf.getvalue()


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per site with two or more rows: which comparisons are wins and which are ties within the
    95% intervals (`intervals.decide`)."""
    by_site: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_site.setdefault(r.get("site") or "?", []).append(r)
    lines = []
    for site, group in by_site.items():
        said = [v for m in DECIDED if (v := decide(group, m)) is not None]
        if said:
            lines.append(f"- {site}: " + "; ".join(said))
    return lines


def header(document: dict[str, Any]) -> str:
    """What the numbers are computed on: held-out sequences or not, and how the intervals were made."""
    sample = document.get("sample") or {}
    note = sample.get("note") or "evaluated on sequences metrics.json does not describe"
    seeds = (
        "; rows with seeds: mean and 95% Student-t interval over seeds" if document.get("seed_groups") else ""
    )
    return (
        f"{note}.\n\nIntervals are 95%: a percentile bootstrap over the evaluated sequences for one "
        f"dictionary{seeds}. {FLAG}: CE recovered is ill-conditioned there (zero-ablating the site costs "
        "too little); read the CE increase and KL.\n"
    )


def _frontier(metrics: dict[str, dict[str, Any]], key: str, label: str, path: Path) -> Path | None:
    """`key` against L0, one series per site, 95% intervals as error bars."""
    by_site: dict[str, list[dict[str, Any]]] = {}
    for m in metrics.values():
        x, y = m.get("l0"), m.get(key)
        if key == "ce_loss_recovered" and m.get("ce_loss_recovered_reliable") is False:
            continue  # an ill-conditioned percentage is not plotted as if it were one
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and math.isfinite(y):
            by_site.setdefault(m.get("hook_name") or "?", []).append(m)
    if not by_site:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for site, pts in sorted(by_site.items()):
        pts.sort(key=lambda m: (m["l0"], m[key]))
        ax.errorbar([m["l0"] for m in pts], [m[key] for m in pts], xerr=error_bars(pts, "l0"),
                    yerr=error_bars(pts, key), fmt="o", capsize=3, label=site)  # fmt: skip
        for m in pts:
            ax.annotate(m["name"], (m["l0"], m[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="L0 (active latents per token)", ylabel=label, title=f"{label} vs L0")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


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


def compare(cfg: Config, out: str | Path | None = None, console: Any = None) -> Path:
    """Write the table and plots for every dictionary in `[evaluate].out/metrics.json` (seed groups
    as one row each), print the table with its intervals; returns the folder."""
    document = load_document(Path(cfg.evaluate.out) / "metrics.json")
    members = list(document["dictionaries"].values())
    grouped = table_rows(members, document.get("seed_groups") or {})
    metrics = {m["name"]: m for m in grouped}
    folder = Path(out) if out is not None else compare_folder(cfg)
    rows = [row(m) for m in grouped]
    wins = verdicts(rows)
    text = header(document) + "\n" + markdown_table(rows)
    if wins:
        text += "\nWins (a difference inside the 95% intervals is not one):\n\n" + "\n".join(wins) + "\n"
    write_text_atomic(folder / "compare.md", text)
    write_text_atomic(folder / "compare.csv", csv_table(rows))
    if console is not None:
        print_compare(console, document, rows, wins)
    _frontier(metrics, "fvu", "FVU", folder / "frontier_fvu.png")
    _frontier(metrics, "ce_loss_recovered", "CE loss recovered", folder / "frontier_ce_recovered.png")
    _probing(metrics, folder / "probing_vs_k.png")
    _bars(rows, "absorption_rate", "absorption rate (first letter)", folder / "absorption.png")
    _bars(
        rows, "autointerp", "autointerp score (95% CI)", folder / "autointerp.png", "autointerp_ci95", metrics
    )
    _bars(rows, "concept_coverage", "storyworld concept coverage", folder / "coverage.png")
    return folder


def print_compare(
    console: Any, document: dict[str, Any], rows: list[dict[str, Any]], wins: list[str]
) -> None:
    """The comparison on the terminal: what was evaluated, the table with intervals, the verdicts."""
    from rich import box
    from rich.table import Table

    cols = [(k, h) for k, h in _columns(rows) if k in ("name", "site", "n_seeds", *WITH_INTERVAL)]
    table = Table(title="Comparison (95% intervals)", box=box.SIMPLE_HEAD, header_style="bold")
    for i, (_, h) in enumerate(cols):
        table.add_column(h, justify="left" if i < 2 else "right", no_wrap=i >= 2)
    for r in rows:
        table.add_row(*(_cell(r, k) for k, _ in cols))
    console.print(header(document), highlight=False, soft_wrap=True)
    console.print(table)
    if wins:
        console.print("Wins (a difference inside the 95% intervals is not one):", highlight=False)
        for line in wins:
            console.print(line, highlight=False, soft_wrap=True)
