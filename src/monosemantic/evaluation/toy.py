"""Ground truth A: toy superposition data with planted directions, and recovery scores.

Sharkey, Braun & Millidge (2022, "Taking features out of superposition with sparse
autoencoders") and Cunningham et al. (2023, "Sparse Autoencoders Find Highly Interpretable
Features in Language Models") test dictionary learning on synthetic data: many more sparse
features than dimensions, each feature a fixed unit direction, samples sparse sums of them.
Because the directions are known, a learned decoder can be scored directly: the mean max
cosine similarity (MMCS) between each planted direction and its closest learned atom, and the
fraction of planted directions recovered above a cosine threshold.

Real activations are harder than independent random directions with equal magnitudes, so the
generator also plants the difficulties a trainer must survive: directions that share a component
within small clusters (`direction_correlation`), per-feature scales spread over orders of magnitude
(`magnitude_range`), dense Gaussian noise (`noise`), steep power-law firing (`decay`) and features
that fire together (`n_correlated_pairs`). `benchmarks/bench_toy_recovery.py` varies each.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK = 1 << 15


def make_toy_data(
    n_features: int,
    d: int,
    n_samples: int,
    *,
    avg_active: float = 5.0,
    decay: float = 1.0,
    n_correlated_pairs: int = 0,
    pair_strength: float = 0.9,
    min_magnitude: float = 0.0,
    max_magnitude: float = 1.0,
    direction_correlation: float = 0.0,
    cluster_size: int = 4,
    magnitude_range: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Samples `x = sum_i a_i * u_i` of sparse features `a` on planted unit directions `u`.

    Returns `(activations [n_samples, d] float32, directions [n_features, d] float32)`, rows of
    `directions` unit-norm. Feature i fires independently with probability proportional to
    `(i + 1) ** -decay` (a power law; `decay=0` gives equal frequencies), scaled so that
    `avg_active` features fire per sample on average (probabilities are capped at 1). Magnitudes
    are uniform in `[min_magnitude, max_magnitude]`. `n_correlated_pairs` random disjoint pairs
    `(a, b)` are coupled: whenever `a` fires, `b` also fires with probability `pair_strength`.
    `direction_correlation` rho > 0 groups the directions into random clusters of `cluster_size`
    sharing a common unit component (pairwise cosine ~rho within a cluster); `magnitude_range` R > 1
    scales each feature's magnitudes by a fixed factor log-uniform in [1/R, 1]; `noise` adds
    isotropic Gaussian noise of that standard deviation per dimension. Everything is a
    deterministic function of `seed` (the three options draw after the rest, so a generator
    without them is unchanged).
    """
    if n_features < 1 or d < 1 or n_samples < 1:
        raise ValueError("make_toy_data needs n_features, d and n_samples >= 1")
    toy = ToyFeatures.planted(
        n_features, d, avg_active=avg_active, decay=decay, n_correlated_pairs=n_correlated_pairs,
        pair_strength=pair_strength, min_magnitude=min_magnitude, max_magnitude=max_magnitude,
        direction_correlation=direction_correlation, cluster_size=cluster_size,
        magnitude_range=magnitude_range, noise=noise, seed=seed,
    )  # fmt: skip
    out = torch.empty(n_samples, d, dtype=torch.float32)
    for start in range(0, n_samples, _CHUNK):
        n = min(_CHUNK, n_samples - start)
        out[start : start + n] = toy.sample(n, toy.generator)
    return out, toy.directions


class ToyFeatures:
    """The planted model behind `make_toy_data`, kept so that samples can be streamed batch by batch.

    A training benchmark of millions of tokens need not hold them in memory: `sample(n, gen)`
    draws fresh i.i.d. rows from the same directions, probabilities and pairs.
    """

    def __init__(
        self, directions: Tensor, probs: Tensor, pairs: Tensor, pair_strength: float,
        min_magnitude: float, max_magnitude: float, generator: torch.Generator,
        scales: Tensor | None = None, noise: float = 0.0,
    ) -> None:  # fmt: skip
        self.directions, self.probs, self.pairs = directions, probs, pairs
        self.pair_strength = pair_strength
        self.min_magnitude, self.max_magnitude = min_magnitude, max_magnitude
        self.scales = scales  # [n_features] fixed per-feature magnitude factors, or None (all 1)
        self.noise = noise
        self.generator = generator  # the seeded generator that drew the directions, for `make_toy_data`

    @classmethod
    def planted(
        cls, n_features: int, d: int, *, avg_active: float = 5.0, decay: float = 1.0,
        n_correlated_pairs: int = 0, pair_strength: float = 0.9, min_magnitude: float = 0.0,
        max_magnitude: float = 1.0, direction_correlation: float = 0.0, cluster_size: int = 4,
        magnitude_range: float = 1.0, noise: float = 0.0, seed: int = 0,
    ) -> ToyFeatures:  # fmt: skip
        """Random unit directions, power-law probabilities and random disjoint pairs, optionally
        clustered directions, spread magnitudes and noise (see `make_toy_data`)."""
        if n_features < 1 or d < 1:
            raise ValueError("toy features need n_features and d >= 1")
        if 2 * n_correlated_pairs > n_features:
            raise ValueError(
                f"{n_correlated_pairs} disjoint pairs need at least {2 * n_correlated_pairs} features"
            )
        if not 0 <= min_magnitude <= max_magnitude:
            raise ValueError("need 0 <= min_magnitude <= max_magnitude")
        if not 0 <= direction_correlation < 1 or cluster_size < 1 or magnitude_range < 1 or noise < 0:
            raise ValueError(
                "need 0 <= direction_correlation < 1, cluster_size >= 1, magnitude_range >= 1, noise >= 0"
            )
        gen = torch.Generator().manual_seed(seed)
        directions = torch.randn(n_features, d, generator=gen, dtype=torch.float64)
        directions = (directions / directions.norm(dim=1, keepdim=True)).float()
        probs = feature_probabilities(n_features, avg_active, decay).float()
        pairs = torch.randperm(n_features, generator=gen)[: 2 * n_correlated_pairs].view(-1, 2)
        if direction_correlation > 0:
            directions = _clustered(directions, direction_correlation, cluster_size, gen)
        scales = None
        if magnitude_range > 1:
            scales = (magnitude_range ** -torch.rand(n_features, generator=gen, dtype=torch.float64)).float()
        return cls(directions, probs, pairs, pair_strength, min_magnitude, max_magnitude, gen, scales, noise)

    def mean_l0(self) -> float:
        """Expected active features per sample: the independent firings plus the pair followers'."""
        extra = 0.0
        if len(self.pairs):
            a, b = self.probs[self.pairs[:, 0]].double(), self.probs[self.pairs[:, 1]].double()
            extra = (a * self.pair_strength * (1 - b)).sum().item()
        return self.probs.double().sum().item() + extra

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """`n` fresh rows `sum_i a_i u_i` [n, d] float32, drawn with `gen`."""
        fires = torch.rand(n, len(self.probs), generator=gen) < self.probs
        if len(self.pairs):
            follow = torch.rand(n, len(self.pairs), generator=gen) < self.pair_strength
            fires[:, self.pairs[:, 1]] |= fires[:, self.pairs[:, 0]] & follow
        rows, cols = fires.nonzero(as_tuple=True)
        span = self.max_magnitude - self.min_magnitude
        mags = self.min_magnitude + span * torch.rand(len(rows), generator=gen)
        if self.scales is not None:
            mags = mags * self.scales[cols]
        out = torch.zeros(n, self.directions.shape[1], dtype=torch.float32)
        out.index_add_(0, rows, mags[:, None] * self.directions[cols])
        if self.noise > 0:
            out += self.noise * torch.randn(out.shape, generator=gen)
        return out


def _clustered(directions: Tensor, rho: float, cluster_size: int, gen: torch.Generator) -> Tensor:
    """Unit directions mixed with a shared unit component per random cluster: sqrt(1 - rho) u_i +
    sqrt(rho) c_cluster(i), renormalised, so two directions of one cluster have cosine ~rho."""
    n, d = directions.shape
    n_clusters = -(-n // cluster_size)
    centres = torch.randn(n_clusters, d, generator=gen, dtype=torch.float64)
    centres = centres / centres.norm(dim=1, keepdim=True)
    cluster = torch.randperm(n, generator=gen) % n_clusters
    mixed = (1 - rho) ** 0.5 * directions.double() + rho**0.5 * centres[cluster]
    return (mixed / mixed.norm(dim=1, keepdim=True)).float()


def feature_probabilities(n_features: int, avg_active: float, decay: float) -> Tensor:
    """Power-law firing probabilities summing to `avg_active` (before capping at 1)."""
    if avg_active <= 0:
        raise ValueError("avg_active must be > 0")
    raw = torch.arange(1, n_features + 1, dtype=torch.float64) ** -decay
    return (raw * (avg_active / raw.sum())).clamp(max=1.0)


def max_cosine_similarities(learned: Tensor, planted: Tensor) -> Tensor:
    """For each planted direction [n_features, d], its best cosine with any learned atom [d_sae, d]."""
    if learned.shape[-1] != planted.shape[-1]:
        raise ValueError(f"decoder width {learned.shape[-1]} != planted direction width {planted.shape[-1]}")
    learned = torch.nn.functional.normalize(learned.detach().double(), dim=1)
    planted = torch.nn.functional.normalize(planted.detach().double(), dim=1)
    best = torch.empty(len(planted), dtype=torch.float64)
    for start in range(0, len(planted), 4096):
        best[start : start + 4096] = (planted[start : start + 4096] @ learned.T).max(dim=1).values
    return best


def mmcs(learned: Tensor, planted: Tensor) -> float:
    """Mean max cosine similarity: the average over planted directions of the best-matching atom."""
    return max_cosine_similarities(learned, planted).mean().item()


def recovered_fraction(learned: Tensor, planted: Tensor, threshold: float = 0.9) -> float:
    """The fraction of planted directions that some learned atom matches with cosine > `threshold`."""
    return (max_cosine_similarities(learned, planted) > threshold).double().mean().item()


def toy_scores(learned: Tensor, planted: Tensor, threshold: float = 0.9) -> dict[str, float]:
    """MMCS and recovered fraction of a decoder `W_dec [d_sae, d]` against the planted directions."""
    best = max_cosine_similarities(learned, planted)
    return {"mmcs": best.mean().item(), "recovered_fraction": (best > threshold).double().mean().item()}
