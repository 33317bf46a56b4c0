"""Ground truth B: how well single features detect the concepts planted in storyworld.

Every storyworld token carries labels for the latent concepts that produced it (the cache's
`concepts` tensor, columns ordered as `monosemantic.corpus.concepts.CONCEPTS`). For each
(feature, concept) pair we score the feature's activation as a detector of the concept:

- **AUROC**, exact (the Mann-Whitney rank statistic with mid-ranks for ties), for every pair.
  Activations are sparse, so only the nonzero (token, feature, value) triples are kept; a
  feature's zeros form one tie block whose rank is known without materialising it.
  AUROC = (R_pos - P(P+1)/2) / (P * N), R_pos the rank sum of the P positive tokens among all.
- **best feature** of a concept: the feature with the highest AUROC; its **F1** is the best F1
  over all thresholds t (predict "concept" when activation >= t), computed exactly.
- **coverage**: the fraction of concepts present in the evaluated tokens whose best feature
  reaches AUROC >= 0.95.
- **purity** of a feature: take its `top_n` highest activations on the evaluated tokens (all of
  them if it fired fewer times); its best concept is the concept it detects with the highest
  AUROC; purity = the fraction of those top tokens labelled with that best concept. The mean is
  over features that fired at least once.
Special-token positions are excluded (the caller passes `keep`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

COVERAGE_AUROC = 0.95
TOP_N = 20


class ConceptMetrics:
    """Collects sparse feature activations and concept labels over batches; `compute()` scores them."""

    def __init__(self, d_sae: int, n_concepts: int, top_n: int = TOP_N) -> None:
        self.d_sae, self.n_concepts, self.top_n = d_sae, n_concepts, top_n
        self.n_tokens = 0
        self._tok: list[Tensor] = []
        self._feat: list[Tensor] = []
        self._val: list[Tensor] = []
        self._labels: list[Tensor] = []

    @torch.no_grad()
    def update(self, f: Tensor, labels: Tensor, keep: Tensor | None = None) -> None:
        """Add `f` [..., d_sae] feature activations and `labels` [..., n_concepts] (0/1) for the same tokens."""
        f = f.reshape(-1, f.shape[-1])
        labels = labels.reshape(-1, labels.shape[-1])
        if keep is not None:
            keep = keep.reshape(-1)
            f, labels = f[keep.to(f.device)], labels[keep.to(labels.device)]
        if f.shape[1] != self.d_sae or labels.shape != (len(f), self.n_concepts):
            raise ValueError(
                f"shape mismatch: f {tuple(f.shape)}, labels {tuple(labels.shape)} "
                f"for d_sae={self.d_sae}, n_concepts={self.n_concepts}"
            )
        tok, feat = f.nonzero(as_tuple=True)
        self._tok.append((tok + self.n_tokens).cpu())
        self._feat.append(feat.cpu())
        self._val.append(f[tok, feat].float().cpu())
        self._labels.append((labels != 0).to(torch.uint8).cpu())
        self.n_tokens += len(f)

    def compute(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Scores: `summary` (scalars), `concepts` (one row per concept), `features` (alive features)."""
        if self.n_tokens == 0:
            raise ValueError("no tokens were given to ConceptMetrics")
        names = list(names) if names is not None else [str(i) for i in range(self.n_concepts)]
        if len(names) != self.n_concepts:
            raise ValueError(f"{len(names)} concept names for {self.n_concepts} label columns")
        labels = torch.cat(self._labels).double()
        tok, feat, val = torch.cat(self._tok), torch.cat(self._feat), torch.cat(self._val)
        s = _SortedActivations(tok, feat, val, self.d_sae, self.n_tokens)
        auroc = s.auroc(labels)  # [d_sae, C]
        n_pos = labels.sum(0)
        present = (n_pos > 0) & (n_pos < self.n_tokens)

        best_auroc, best_feat = torch.nan_to_num(auroc, nan=-1.0).max(dim=0)
        best_concept = torch.nan_to_num(auroc, nan=-1.0).argmax(dim=1)
        purity = s.purity(labels, best_concept, self.top_n)
        alive = s.counts > 0

        rows = []
        for c, name in enumerate(names):
            row: dict[str, Any] = {"concept": name, "n_positive": int(n_pos[c])}
            if present[c]:
                j = int(best_feat[c])
                f1, threshold, precision, recall = s.best_f1(j, labels[:, c])
                row.update(
                    best_feature=j,
                    auroc=float(best_auroc[c]),
                    f1=f1,
                    f1_threshold=threshold,
                    precision=precision,
                    recall=recall,
                    best_feature_purity=float(purity[j]) if alive[j] else None,
                )
            rows.append(row)
        scored = [r for r in rows if "auroc" in r]
        features = [
            {
                "feature": j,
                "n_fired": int(s.counts[j]),
                "best_concept": names[int(best_concept[j])],
                "auroc": float(auroc[j, best_concept[j]]),
                "purity": float(purity[j]),
            }
            for j in alive.nonzero().flatten().tolist()
        ]
        summary = {
            "concept_n_present": len(scored),
            "concept_coverage": _mean([r["auroc"] >= COVERAGE_AUROC for r in scored]),
            "concept_mean_best_auroc": _mean([r["auroc"] for r in scored]),
            "concept_mean_best_f1": _mean([r["f1"] for r in scored]),
            "feature_purity_mean": float(purity[alive].mean()) if alive.any() else math.nan,
            "feature_purity_top_n": self.top_n,
        }
        return {"summary": summary, "concepts": rows, "features": features}


def _mean(xs: list[Any]) -> float:
    return float(sum(xs) / len(xs)) if xs else math.nan


class _SortedActivations:
    """Nonzero activations sorted by (feature, value): each feature's entries are one ascending slice."""

    def __init__(self, tok: Tensor, feat: Tensor, val: Tensor, d_sae: int, n_tokens: int) -> None:
        order = torch.sort(val, stable=True).indices
        order = order[torch.sort(feat[order], stable=True).indices]
        self.tok, self.feat, self.val = tok[order], feat[order], val[order].double()
        self.d_sae, self.T = d_sae, n_tokens
        self.counts = torch.bincount(self.feat, minlength=d_sae)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.pos = torch.arange(len(self.feat)) - self.starts[self.feat]  # index within the feature's slice

    def auroc(self, labels: Tensor) -> Tensor:
        """Exact AUROC of every feature for every label column, [d_sae, C] (NaN where a class is empty)."""
        n = len(self.feat)
        new = torch.ones(n, dtype=torch.bool)
        if n > 1:
            new[1:] = (self.feat[1:] != self.feat[:-1]) | (self.val[1:] != self.val[:-1])
        group = torch.cumsum(new, 0) - 1
        group_start = self.pos[new]
        group_size = torch.bincount(group, minlength=int(new.sum()))
        lo = group_start[group].double()
        mid = lo + (group_size[group].double() + 1) / 2  # mean 1-based rank of the tie group
        zeros = (self.T - self.counts).double()
        n_neg = torch.zeros(self.d_sae, dtype=torch.float64).index_add_(0, self.feat, (self.val < 0).double())
        mid = mid + torch.where(self.val > 0, zeros[self.feat], torch.zeros_like(mid))
        zero_rank = n_neg + (zeros + 1) / 2

        idx = torch.stack([self.feat, self.tok])
        rank_sum_nz = torch.sparse_coo_tensor(idx, mid, (self.d_sae, self.T), check_invariants=False) @ labels
        pos_nz = (
            torch.sparse_coo_tensor(
                idx, torch.ones(n, dtype=torch.float64), (self.d_sae, self.T), check_invariants=False
            )
            @ labels
        )
        P = labels.sum(0)
        N = self.T - P
        rank_sum = rank_sum_nz + (P - pos_nz) * zero_rank[:, None]
        return (rank_sum - P * (P + 1) / 2) / (P * N)

    def purity(self, labels: Tensor, best_concept: Tensor, top_n: int) -> Tensor:
        """Fraction of each feature's top-`top_n` activations labelled with its best concept, [d_sae]."""
        top = self.pos >= (self.counts[self.feat] - top_n)
        feat, tok = self.feat[top], self.tok[top]
        hits = labels[tok, best_concept[feat]]
        total = torch.bincount(feat, weights=hits, minlength=self.d_sae)
        return total / self.counts.clamp(max=top_n).clamp_min(1)

    def best_f1(self, j: int, y: Tensor) -> tuple[float, float, float, float]:
        """Best F1 of feature j as a detector of labels `y` [T]: (f1, threshold, precision, recall)."""
        a, b = int(self.starts[j]), int(self.starts[j] + self.counts[j])
        vals = torch.cat([self.val[a:b], torch.zeros(1, dtype=torch.float64)])
        pos_nz = y[self.tok[a:b]]
        P = float(y.sum())
        zeros_pos = P - float(pos_nz.sum())
        zeros_neg = (self.T - (b - a)) - zeros_pos
        pos = torch.cat([pos_nz, torch.tensor([zeros_pos], dtype=torch.float64)])
        neg = torch.cat([1 - pos_nz, torch.tensor([zeros_neg], dtype=torch.float64)])
        uniq, inverse = torch.unique(vals, return_inverse=True)  # ascending
        tp_at = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, pos).flip(0).cumsum(0)
        fp_at = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, neg).flip(0).cumsum(0)
        f1 = 2 * tp_at / (tp_at + fp_at + P)
        k = int(f1.argmax())
        tp, fp = float(tp_at[k]), float(fp_at[k])
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        return float(f1[k]), float(uniq.flip(0)[k]), precision, tp / P if P > 0 else 0.0
