"""Reconstruction and sparsity metrics, accumulated in one streaming pass.

`ReconstructionMetrics.update(y, y_hat, f)` takes one batch of targets (the dictionary's input
for an SAE, the MLP output for a transcoder), reconstructions and feature activations, with
special-token positions already dropped (or dropped via `keep`). Memory is O(d_sae + d_out):
sums in float64, so that a mean over millions of tokens does not drift.

Definitions (means are over evaluated tokens; ||.|| is the L2 norm over the model dimension):
- `l0`: mean number of nonzero features per token.
- `mse`: mean squared error per element, mean((y - y_hat)^2) (torch's `mse_loss`, SAELens' `mse`);
  `mse_per_token`: mean ||y - y_hat||^2 (= mse * d_out).
- `fvu`: fraction of variance unexplained, sum ||y - y_hat||^2 / sum ||y - mean(y)||^2, both sums
  over the evaluated set and `mean(y)` its mean vector; `explained_variance = 1 - fvu`.
- `cosine_similarity`: mean cos(y, y_hat); `l2_ratio`: mean ||y_hat|| / ||y||.
- `relative_reconstruction_bias`: gamma = argmin_g E||y_hat / g - y||^2 = E||y_hat||^2 / E[y_hat . y]
  (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders",
  "relative reconstruction bias"): gamma < 1 means the reconstructions are shrunk (the L1
  shrinkage bias), 1 is unbiased.
- `dead_fraction`, `near_dead_fraction`, `dead_tokens`: the one definition of `training/dead.py`
  (`latent_liveness`) over the evaluated tokens (`dead_tokens` of them): dead = never fired, near
  dead = fired on fewer than 1 in 100,000; `dense_fraction`: features firing on more than
  `dense_threshold` (10%) of them.
- `feature_density`: per-feature firing frequency; `density_histogram`: counts of log10(density) in
  fixed bins (dead features, log10(0) = -inf, are counted separately as `dead`).

Given batches of whole sequences ([B, T, d]), the same sums are also kept per sequence, from which
`intervals()` gives bootstrap 95% intervals over sequences (`intervals.py`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from monosemantic.training.dead import latent_liveness

DENSE_THRESHOLD = 0.1
# log10 density bins from 1e-8 to 1, half a decade wide: comparable across dictionaries.
DENSITY_BIN_EDGES: list[float] = [x / 2 for x in range(-16, 1)]


class ReconstructionMetrics:
    """Streaming accumulator of the metrics listed in the module docstring."""

    def __init__(self, d_sae: int, d_out: int, dense_threshold: float = DENSE_THRESHOLD) -> None:
        self.d_sae, self.d_out, self.dense_threshold = d_sae, d_out, dense_threshold
        f64 = torch.float64
        self.n_tokens = 0
        self.fire_counts = torch.zeros(d_sae, dtype=torch.long)
        self.sum_l0 = 0
        self.sum_sq_err = torch.zeros((), dtype=f64)
        self.sum_y = torch.zeros(d_out, dtype=f64)
        self.sum_y_sq = torch.zeros((), dtype=f64)
        self.sum_yhat_sq = torch.zeros((), dtype=f64)
        self.sum_dot = torch.zeros((), dtype=f64)
        self.sum_cos = torch.zeros((), dtype=f64)
        self.sum_l2_ratio = torch.zeros((), dtype=f64)
        self.sum_act = torch.zeros(d_sae, dtype=f64)
        self.per_sequence: list[dict[str, Tensor]] = []  # per batch of whole sequences

    @torch.no_grad()
    def update(self, y: Tensor, y_hat: Tensor, f: Tensor, keep: Tensor | None = None) -> None:
        """Add a batch: `y`, `y_hat` [..., d_out], `f` [..., d_sae]; `keep` [...] selects tokens.
        With [B, T, d] batches of whole sequences, per-sequence sums are kept too."""
        if y.ndim == 3:
            self._per_sequence(y, y_hat, f, keep)
        y, y_hat, f = (
            y.reshape(-1, y.shape[-1]),
            y_hat.reshape(-1, y_hat.shape[-1]),
            f.reshape(-1, f.shape[-1]),
        )
        if keep is not None:
            keep = keep.reshape(-1).to(y.device)
            y, y_hat, f = y[keep], y_hat[keep], f[keep]
        if y.shape[-1] != self.d_out or y_hat.shape != y.shape or f.shape != (len(y), self.d_sae):
            raise ValueError(
                f"shape mismatch: y {tuple(y.shape)}, y_hat {tuple(y_hat.shape)}, f {tuple(f.shape)} "
                f"for d_out={self.d_out}, d_sae={self.d_sae}"
            )
        if len(y) == 0:
            return
        y, y_hat = y.double(), y_hat.double()
        fired = f != 0
        self.n_tokens += len(y)
        self.fire_counts += fired.sum(0).cpu()
        self.sum_l0 += int(fired.sum())
        self.sum_act += f.double().sum(0).cpu()
        self.sum_sq_err += (y - y_hat).pow(2).sum().cpu()
        self.sum_y += y.sum(0).cpu()
        y_sq, yhat_sq = y.pow(2).sum(-1), y_hat.pow(2).sum(-1)
        self.sum_y_sq += y_sq.sum().cpu()
        self.sum_yhat_sq += yhat_sq.sum().cpu()
        dot = (y * y_hat).sum(-1)
        self.sum_dot += dot.sum().cpu()
        norms = y_sq.sqrt() * yhat_sq.sqrt()
        cos = torch.where(norms > 0, dot / norms.clamp_min(1e-30), torch.zeros_like(dot))
        self.sum_cos += cos.sum().cpu()
        ratio = torch.where(y_sq > 0, (yhat_sq / y_sq.clamp_min(1e-30)).sqrt(), torch.zeros_like(dot))
        self.sum_l2_ratio += ratio.sum().cpu()

    @torch.no_grad()
    def _per_sequence(self, y: Tensor, y_hat: Tensor, f: Tensor, keep: Tensor | None) -> None:
        B, T = y.shape[:2]
        w = torch.ones(B, T, dtype=torch.float64, device=y.device)
        if keep is not None:
            w = keep.to(y.device, torch.float64).reshape(B, T)
        y, y_hat = y.double(), y_hat.double()
        y_sq, yhat_sq = y.pow(2).sum(-1), y_hat.pow(2).sum(-1)
        dot = (y * y_hat).sum(-1)
        norms = y_sq.sqrt() * yhat_sq.sqrt()
        cos = torch.where(norms > 0, dot / norms.clamp_min(1e-30), torch.zeros_like(dot))
        ratio = torch.where(y_sq > 0, (yhat_sq / y_sq.clamp_min(1e-30)).sqrt(), torch.zeros_like(dot))
        rows = {
            "n": w,
            "l0": (f != 0).sum(-1).double(),
            "sq_err": (y - y_hat).pow(2).sum(-1),
            "y_sq": y_sq,
            "cos": cos,
            "l2_ratio": ratio,
        }
        out = {k: (v * w).sum(1).cpu() for k, v in rows.items()}
        out["sum_y"] = (y * w[..., None]).sum(1).cpu()
        self.per_sequence.append(out)

    def intervals(self, seed: int = 0) -> dict[str, list[float] | None]:
        """Bootstrap 95% intervals over the evaluated sequences (empty without per-sequence sums).

        FVU's centre is the full sample's mean in every resample (an O(1/n) simplification)."""
        from .intervals import bootstrap

        if not self.per_sequence:
            return {}
        sums = {k: torch.cat([p[k] for p in self.per_sequence]) for k in self.per_sequence[0]}
        mean_y = sums["sum_y"].sum(0) / sums["n"].sum().clamp_min(1)
        n_seq = sums["n"]
        # sum over a sequence of ||y - mean||^2 = sum ||y||^2 - 2 mean . sum y + n ||mean||^2
        sums["var"] = sums["y_sq"] - 2 * sums.pop("sum_y") @ mean_y + n_seq * mean_y.pow(2).sum()
        d_out = self.d_out

        def statistic(t: dict[str, Tensor]) -> dict[str, Tensor]:
            n = t["n"].clamp_min(1)
            fvu = t["sq_err"] / t["var"]
            return {
                "l0": t["l0"] / n,
                "fvu": fvu,
                "explained_variance": 1 - fvu,
                "mse": t["sq_err"] / (n * d_out),
                "cosine_similarity": t["cos"] / n,
                "l2_ratio": t["l2_ratio"] / n,
            }

        return bootstrap(sums, statistic, seed)

    def feature_density(self) -> Tensor:
        """Firing frequency of each feature on the evaluated tokens, float64 [d_sae]."""
        return self.fire_counts.double() / max(self.n_tokens, 1)

    def compute(self) -> dict[str, Any]:
        """The scalar metrics (floats) plus `density_histogram` (a dict); raises on an empty set."""
        n = self.n_tokens
        if n == 0:
            raise ValueError("no tokens were evaluated (every position was a special token?)")
        total_var = (self.sum_y_sq - self.sum_y.pow(2).sum() / n).item()
        sq_err = self.sum_sq_err.item()
        fvu = sq_err / total_var if total_var > 0 else math.nan
        density = self.feature_density()
        dot = self.sum_dot.item()
        return {
            "n_tokens": n,
            "d_sae": self.d_sae,
            "l0": self.sum_l0 / n,
            "mse": sq_err / (n * self.d_out),
            "mse_per_token": sq_err / n,
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "cosine_similarity": self.sum_cos.item() / n,
            "l2_ratio": self.sum_l2_ratio.item() / n,
            "relative_reconstruction_bias": self.sum_yhat_sq.item() / dot if dot != 0 else math.nan,
            **latent_liveness(self.fire_counts, n).summary(),
            "dense_fraction": (density > self.dense_threshold).double().mean().item(),
            "mean_activation_when_fired": (
                (self.sum_act.sum() / self.fire_counts.sum()).item() if self.fire_counts.sum() > 0 else 0.0
            ),
            "density_histogram": density_histogram(density),
        }


def density_histogram(density: Tensor, edges: list[float] = DENSITY_BIN_EDGES) -> dict[str, Any]:
    """Counts of log10(density) in `edges` bins; densities below the first edge go in the first bin."""
    alive = density[density > 0]
    log_density = alive.log10().clamp(min=edges[0], max=edges[-1])
    counts = torch.histogram(log_density.double(), bins=torch.tensor(edges, dtype=torch.float64)).hist
    return {
        "log10_edges": list(edges),
        "counts": [int(c) for c in counts.tolist()],
        "dead": int((density == 0).sum()),
    }


def log10_density(density: Tensor, eps: float = 1e-10) -> Tensor:
    """log10(density + eps), the SAELens `sparsity.safetensors` convention (dead features at -10)."""
    return (density.double() + eps).log10().float()
