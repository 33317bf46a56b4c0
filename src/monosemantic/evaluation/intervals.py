"""95% intervals for every compared metric: over seeds, or by bootstrap over sequences for one seed.

- **Across seeds** (`[train].seeds`): mean ± t(0.975, n-1) · s / sqrt(n), the Student-t interval
  of the mean of n independent training runs (n = 3 gives t = 4.30: wide, and honestly so).
- **One seed**: a percentile bootstrap over the evaluated *sequences* (never tokens: tokens of one
  story are correlated), `N_BOOT` resamples drawn with a fixed seed. Each resample reweights the
  per-sequence sums that the metrics are ratios of, so a resampled FVU is a ratio of resampled
  sums, exactly like the point estimate.
A difference is only called a win when the two intervals do not overlap (`decide`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

N_BOOT = 1000
LEVEL = 0.95

# Metrics that get an interval (the ones tables compare); lower is better unless listed in HIGHER.
INTERVAL_METRICS = (
    "l0", "fvu", "explained_variance", "mse", "cosine_similarity", "l2_ratio",
    "ce_loss_spliced", "ce_loss_increase", "ce_loss_recovered", "kl_spliced",
    "dead_fraction", "concept_coverage",
)  # fmt: skip
HIGHER = {"explained_variance", "cosine_similarity", "ce_loss_recovered", "concept_coverage"}


def resample_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> Tensor:
    """[n_boot, n] float64 counts of each sequence in each bootstrap resample (rows sum to n)."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n, (n_boot, n), generator=g)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(counts))
    return counts


def percentile_interval(samples: Tensor) -> list[float] | None:
    """The central 95% of finite bootstrap replicates, or None when too few are finite."""
    s = samples[torch.isfinite(samples)].double()
    if s.numel() < 0.9 * samples.numel() or s.numel() < 2:
        return None
    alpha = (1 - LEVEL) / 2
    lo, hi = torch.quantile(s, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return [lo, hi]


def bootstrap(
    sums: dict[str, Tensor], statistic: Callable[[dict[str, Tensor]], dict[str, Tensor]], seed: int = 0
) -> dict[str, list[float] | None]:
    """Percentile intervals of `statistic` over sequence resamples.

    `sums[key]` is [n_seq] or [n_seq, d] per-sequence sums; `statistic` maps the resampled totals
    ([n_boot] or [n_boot, d]) to {metric: [n_boot]}."""
    n = next(iter(sums.values())).shape[0]
    if n < 2:
        return {}
    w = resample_weights(n, seed=seed)
    totals = {k: w @ v.double() for k, v in sums.items()}
    return {k: percentile_interval(v) for k, v in statistic(totals).items()}


def student_t_quantile(df: int, level: float = LEVEL) -> float:
    """t_{(1+level)/2, df}, from scipy (a dependency of scikit-learn)."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def seed_interval(values: Sequence[float]) -> tuple[float, list[float] | None]:
    """(mean, [lo, hi]) of a metric over seeds; no interval from one finite value."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not xs:
        return math.nan, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    half = student_t_quantile(len(xs) - 1) * sd / math.sqrt(len(xs))
    return mean, [mean - half, mean + half]


def aggregate_seeds(members: Sequence[dict]) -> dict:
    """One row for the runs of one dictionary at several seeds: mean and 95% interval per metric."""
    first = members[0]
    row = {k: first.get(k) for k in ("architecture", "hook_name", "hook_name_out", "is_transcoder", "k")}
    row.update(
        name=first.get("seed_group") or first["name"],
        seeds=[m.get("seed") for m in members],
        members=[m["name"] for m in members],
        n_seeds=len(members),
        interval="seeds",
        ci95={},
    )
    for key in INTERVAL_METRICS:
        values = [m.get(key) for m in members]
        if not any(isinstance(v, (int, float)) for v in values):
            continue
        row[key], row["ci95"][key] = seed_interval(values)
    flags = [m.get("ce_loss_recovered_reliable") for m in members]
    if any(f is not None for f in flags):
        row["ce_loss_recovered_reliable"] = all(f is not False for f in flags)
    return row


def overlaps(a: list[float] | None, b: list[float] | None) -> bool:
    """True unless both intervals exist and are disjoint."""
    return a is None or b is None or a[1] >= b[0] and b[1] >= a[0]


def decide(rows: Sequence[dict], metric: str) -> str | None:
    """'X is best on METRIC (interval disjoint from every other)' or 'no win: X and Y overlap', for
    rows of one site; None when fewer than two rows have the metric."""
    have = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if len(have) < 2:
        return None
    have.sort(key=lambda r: r[metric], reverse=metric in HIGHER)
    best = have[0]
    ci = lambda r: (r.get("ci95") or {}).get(metric)  # noqa: E731
    tied = [r["name"] for r in have[1:] if overlaps(ci(best), ci(r))]
    if ci(best) is None:
        return f"{metric}: {best['name']} is ahead but has no interval, so no win is claimed"
    if tied:
        return f"{metric}: no win: {best['name']}'s 95% interval overlaps that of {', '.join(tied)}"
    return f"{metric}: {best['name']} wins (its 95% interval is disjoint from every other's)"


def spliced_intervals(per_sequence: dict[str, Tensor], seed: int = 0) -> dict[str, list[float] | None]:
    """Bootstrap intervals of the spliced CE/KL metrics from `SplicedEvaluator`'s per-sequence sums."""

    def statistic(t: dict[str, Tensor]) -> dict[str, Tensor]:
        n = t["n"].clamp_min(1)
        clean, zero, ce = t["clean"] / n, t["zero"] / n, t["spliced"] / n
        return {
            "ce_loss_spliced": ce,
            "ce_loss_increase": ce - clean,
            "ce_loss_recovered": (zero - ce) / (zero - clean),
            "kl_spliced": t["kl"] / t["n_kl"].clamp_min(1),
        }

    return bootstrap(per_sequence, statistic, seed)
