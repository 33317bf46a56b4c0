"""Candidates for the per-feature uniform reservoirs of one block (quantile samples).

Every activation has a uniform key in [0, 2^62) hashed from its coordinates (`keys.py`); each
feature keeps the R smallest keys seen, which is a uniform sample without replacement and does
not depend on the order or split in which activations arrive. Per block only a few keys can
still enter, so most are dropped before the (sorting) ranking step, provably without changing
the sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from monosemantic.analysis.keys import BITS, EMPTY


def _segment_rank(segment: Tensor, key: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """Sort entries by (segment, key) and return (order, rank of each sorted entry in its segment).
    The 62-bit keys leave no room for the segment in one int64, so: a sort by key, then a stable
    sort by segment (on 16 or 32 bits, which torch's integer sort does in a few passes)."""
    by_key = torch.argsort(key)
    seg = segment.index_select(0, by_key).to(torch.int16 if n_segments <= 2**15 else torch.int32)
    order = by_key.index_select(0, torch.argsort(seg, stable=True))
    seg_sorted = segment[order]
    counts = torch.bincount(seg_sorted, minlength=n_segments)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[seg_sorted]
    return order, rank


def reservoir_candidates(
    key: Tensor, kept_max: Tensor, R: int, counts: Tensor, b: Tensor, t: Tensor, f: Tensor, v: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The block's reservoir candidates as dense `[F, R]` blocks (key, value, sequence, position),
    at most R per feature, ranked by key (empty slots: key `EMPTY`); None when no key can enter.

    `key` is each activation's int64 key, `kept_max` each feature's largest kept key, `counts`
    each feature's activations in the block. A key above `kept_max` cannot enter. Nor can one
    above `bound`, when at least R of the block's keys lie below it (R smaller candidates beat
    it): among n uniform keys, R + 4 sqrt(R) + 4 fall below (R + 4 sqrt(R) + 4) / n of the range
    but for a ~1e-4 chance, and features where fewer than R did fall back to the kept-key limit,
    so the filter only saves ranking work and never changes the sample."""
    F = kept_max.numel()
    frac = (R + 4 * R**0.5 + 4) / counts.clamp_min(1).double()
    bound = (frac.clamp_max(1.0) * 2.0**BITS).long()  # at most 2^62 < EMPTY
    limit = torch.minimum(kept_max, bound)
    can = key <= limit[f]
    short = (torch.bincount(f[can], minlength=F) < counts.clamp_max(R)) & (bound < kept_max)
    if bool(short.any()):
        can = key <= torch.where(short, kept_max, limit)[f]
    if not bool(can.all()):
        idx = can.nonzero().squeeze(1)
        if idx.numel() == 0:
            return None
        key, b, t, f, v = (x.index_select(0, idx) for x in (key, b, t, f, v))
    order, rank = _segment_rank(f, key, F)
    keep = rank < R  # at most R candidates per feature can enter the reservoir
    order, slot = order[keep], rank[keep]
    lin = f[order] * R + slot
    ckey = torch.full((F, R), EMPTY, dtype=torch.int64)
    cval = torch.full((F, R), float("nan"))
    cb = torch.zeros(F, R, dtype=torch.int64)
    ct = torch.zeros(F, R, dtype=torch.int64)
    for dst, src in ((ckey, key), (cval, v), (cb, b), (ct, t)):
        dst.view(-1).index_copy_(0, lin, src[order].to(dst.dtype))
    return ckey, cval, cb, ct
