"""`analyze` under torchrun: ranks take disjoint runs of sequences, rank 0 merges and writes.

Every kept set of a `FeatureCollector` (top examples, quantile reservoir, negatives) is "the n
best keys" under keys that are functions of global coordinates (`keys.py`), so the union of the
ranks' sets, cut to the n best keys, is the set one process keeps. Histograms are first grown to
the global range (a bin depends only on the final range), then every count is summed. The only
difference to one process is the order of the float64 sums of activations (~1e-16 relative).
With one process every function here is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from monosemantic.analysis.collect import FeatureCollector
from monosemantic.utils import distributed as D

FEATURE_CHUNK = 2048  # features whose kept sets travel at once (bounds rank 0's memory)


def sequence_range(n_sequences: int) -> tuple[int, int]:
    """[lo, hi) of the sequences this rank analyses (all of them in one process)."""
    return D.split_range(n_sequences, D.world_size(), D.rank())


def _device() -> torch.device:
    """Where collectives run: NCCL moves CUDA tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sum(x: Tensor, op: str = "sum") -> Tensor:
    return D.all_reduce(x.to(_device()), op).to(x.device)


def _gather_main(x: Tensor) -> list[Tensor] | None:
    """Every rank's `x` (same shape everywhere) on rank 0, in rank order; None elsewhere."""
    dev = _device()
    x = x.contiguous().to(dev)
    parts = [torch.empty_like(x) for _ in range(D.world_size())] if D.is_main() else None
    dist.gather(x, parts, dst=0)
    return None if parts is None else [p.cpu() for p in parts]


def _merge_kept(state: dict[str, Tensor], largest: bool) -> None:
    """Rank 0's slots become the n best keys of every rank's slots, feature chunk by chunk."""
    F, n = state["key"].shape
    if n == 0:
        return
    for lo in range(0, F, FEATURE_CHUNK):
        hi = min(lo + FEATURE_CHUNK, F)
        parts = {k: _gather_main(v[lo:hi]) for k, v in state.items()}
        if not D.is_main():
            continue
        both = {k: torch.cat(p, dim=1) for k, p in parts.items()}  # [f, world * n, ...]
        sel = torch.topk(both["key"], n, dim=1, largest=largest).indices
        for k, v in both.items():
            idx = sel if v.dim() == 2 else sel.unsqueeze(-1).expand(-1, -1, v.shape[-1])
            state[k][lo:hi] = v.gather(1, idx)


@torch.no_grad()
def merge_collector(c: FeatureCollector) -> None:
    """Fold every rank's partial statistics into rank 0's collector (the others keep theirs).
    Collective: every rank calls it, in the same order of collectors."""
    c.flush()
    if D.world_size() == 1:
        return
    c.grow_scale(_sum(c.scale.clone(), "max"))  # every rank's bins on the global range
    c.nnz, c.sum, c.hist = _sum(c.nnz), _sum(c.sum), _sum(c.hist)
    c.n_tokens = int(_sum(torch.tensor([c.n_tokens], dtype=torch.int64)))
    if c.concepts is not None:
        c.concepts.pos_hist, c.concepts.n_pos = _sum(c.concepts.pos_hist), _sum(c.concepts.n_pos)
    _merge_kept(c.top, largest=True)
    _merge_kept(c.res, largest=False)
    _merge_kept(c.neg, largest=False)
    _merge_kept(c.hres, largest=False)
    _merge_kept(c.hneg, largest=False)
