"""`evaluate` under torchrun: ranks take disjoint contiguous runs of the evaluation batches.

Every accumulator is a sum over tokens (or, for concepts, the list of non-zero activations), so
merging the ranks' partial results gives the single-process numbers up to float64 summation order.
Rank 0 writes `metrics.json`. With one process every function here is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from monosemantic.utils import distributed as D
from monosemantic.utils.errors import ConfigError

from .concepts import ConceptMetrics
from .metrics import ReconstructionMetrics
from .spliced import SplicedEvaluator, recovered


def _gather(obj: Any) -> list[Any]:
    if D.world_size() == 1:
        return [obj]
    out: list[Any] = [None] * D.world_size()
    dist.all_gather_object(out, obj)
    return out


def batch_range(n_sequences: int, batch_size: int) -> tuple[int, int]:
    """[lo, hi) of the evaluation batches this rank evaluates."""
    n_batches = -(-n_sequences // batch_size)
    if n_batches < D.world_size():
        raise ConfigError(
            f"{n_batches} evaluation batches cannot be spread over {D.world_size()} ranks; lower "
            "evaluate.batch_size, raise evaluate.max_sequences, or use fewer ranks"
        )
    return D.split_range(n_batches, D.world_size(), D.rank())


def local_error_checks(n_check: int | None, lo: int, hi: int) -> int | None:
    """The spliced+error check runs on the first `n_check` global batches: how many of them are here."""
    return None if n_check is None else max(0, min(n_check - lo, hi - lo))


def merge_site_sums(site_sum: dict[str, Tensor], site_n: int) -> tuple[dict[str, Tensor], int]:
    parts = _gather((site_sum, site_n))
    return {s: sum(p[0][s] for p in parts) for s in site_sum}, sum(p[1] for p in parts)


def merge_reconstruction(m: ReconstructionMetrics) -> None:
    """Replace this rank's sums with the sums over every rank."""
    parts = _gather(
        {k: v for k, v in vars(m).items() if k.startswith(("sum_", "n_", "fire_")) or k == "per_sequence"}
    )
    for key in parts[0]:
        if key == "per_sequence":  # ranks hold contiguous runs of batches: rank order is sequence order
            m.per_sequence = [b for p in parts for b in p[key]]
        else:
            setattr(m, key, sum(p[key] for p in parts))


def merge_concepts(c: ConceptMetrics | None) -> None:
    """Concatenate every rank's activations and labels, token ids shifted to one global numbering."""
    if c is None:
        return
    parts = _gather((c._tok, c._feat, c._val, c._labels, c.n_tokens))
    offset = 0
    c._tok, c._feat, c._val, c._labels = [], [], [], []
    for tok, feat, val, labels, n in parts:
        c._tok += [t + offset for t in tok]
        c._feat += feat
        c._val += val
        c._labels += labels
        offset += n
    c.n_tokens = offset


def merge_spliced(results: list[dict[str, Any]], evaluator: SplicedEvaluator) -> list[dict[str, Any]]:
    """Every rank's spliced metrics merged: per-sequence sums concatenated in rank order (ranks hold
    contiguous batch runs), means recomputed from them; the error check weighted by its predictions."""
    parts = _gather((results, evaluator.n_check_predictions))
    if len(parts) == 1:
        return results
    n_check = max(sum(p[1] for p in parts), 1)
    merged = []
    for i, first in enumerate(results):
        rows = [(p[0][i], p[1]) for p in parts]
        per_seq = {k: torch.cat([r["per_sequence"][k] for r, _ in rows]) for k in first["per_sequence"]}
        n = float(per_seq["n"].sum())
        b = {k: float(per_seq[k].sum()) / n for k in ("clean", "zero", "mean")}
        ce = float(per_seq["spliced"].sum()) / n
        out = dict(first)
        out.update(
            ce_loss_clean=b["clean"],
            ce_loss_zero_ablated=b["zero"],
            ce_loss_mean_ablated=b["mean"],
            ce_loss_spliced=ce,
            ce_loss_increase=ce - b["clean"],
            ce_loss_zero_ablation_increase=b["zero"] - b["clean"],
            ce_loss_recovered=recovered(b["zero"], ce, b["clean"]),
            ce_loss_recovered_mean_ablation=recovered(b["mean"], ce, b["clean"]),
            kl_spliced=float(per_seq["kl"].sum()) / float(per_seq["n_kl"].sum()),
            splice_error_check_max_logit_diff=max(r["splice_error_check_max_logit_diff"] for r, _ in rows),
            splice_error_check_batches=sum(r["splice_error_check_batches"] for r, _ in rows),
            n_predictions=int(n),
            per_sequence=per_seq,
        )
        for key in ("ce_loss_spliced_with_error", "kl_spliced_with_error"):
            out[key] = sum(r[key] * c for r, c in rows) / n_check
        merged.append(out)
    return merged
