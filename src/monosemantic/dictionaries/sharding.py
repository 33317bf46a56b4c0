"""Collectives a TopK-family dictionary needs when its batch rows or its latents are split over ranks.

A `Sharding` is attached to a dictionary (`dic.sharding`) by the distributed trainer. It knows two
process groups:

- `latents`: ranks that each hold a contiguous slice [offset, offset + d_sae_local) of the latents
  (encoder columns, decoder rows). Selections are global: every rank proposes its local top-k
  candidates, all ranks gather them and keep the global winners that fall in their own slice.
  Decoding sums the partial reconstructions (all-reduce forward, identity backward: every rank
  computes the same loss on the same sum), and the encoder input's gradient is summed over the
  slices (identity forward, all-reduce backward), the Megatron f/g pair.
- `rows`: ranks that each hold a disjoint slice of the batch rows (data parallel). Only selections
  that look across rows (BatchTopK) and the BatchTopK threshold need them.

Without a `Sharding` (one process) none of this runs and the dictionary is the plain one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from monosemantic.utils import distributed as D

from .sparse_encoder import topk_batch, topk_dead, topk_rows


class _SumPartials(torch.autograd.Function):
    """Forward: sum of every latent slice's partial reconstruction. Backward: identity."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        return D.all_reduce(x.clone(), "sum", group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _EnterSlices(torch.autograd.Function):
    """Forward: identity. Backward: sum of the input gradients every latent slice computed."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return D.all_reduce(grad.contiguous().clone(), "sum", ctx.group), None


@dataclass
class Sharding:
    latents: dist.ProcessGroup | None  # ranks splitting the latents (None: the world)
    rows: dist.ProcessGroup | None  # ranks splitting the batch rows
    both: dist.ProcessGroup | None  # the union (the whole mesh)
    offset: int  # first global latent index held here
    width: int  # latents held here
    d_sae: int  # global number of latents
    split_latents: bool
    split_rows: bool

    def __deepcopy__(self, memo: dict) -> None:
        return None  # a copy (an export) is a plain single-process dictionary

    # ---- counts and extremes over the whole dictionary ------------------------------------------
    def latent_sum(self, x: Tensor) -> Tensor:
        return D.all_reduce(x.clone(), "sum", self.latents) if self.split_latents else x

    def row_sum(self, x: Tensor) -> Tensor:
        return D.all_reduce(x.clone(), "sum", self.rows) if self.split_rows else x

    def global_min(self, x: Tensor) -> Tensor:
        return D.all_reduce(x.clone(), "min", self.both)

    # ---- the forward pass ---------------------------------------------------------------------
    def enter(self, x_in: Tensor) -> Tensor:
        return _EnterSlices.apply(x_in, self.latents) if self.split_latents else x_in

    def sum_partials(self, out: Tensor) -> Tensor:
        return _SumPartials.apply(out, self.latents) if self.split_latents else out

    def _row_winners(self, vals: Tensor, cols: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Global top-k per row among every slice's candidates (vals/cols [B, m], cols global);
        the winners in this slice as (rows, local cols), rows sorted."""
        all_vals = torch.cat(D.all_gather(vals, self.latents), dim=1)  # [B, m * F]
        all_cols = torch.cat(D.all_gather(cols, self.latents), dim=1)
        top = all_vals.topk(k, dim=1, sorted=False)
        win_vals, win_cols = top.values, all_cols.gather(1, top.indices)
        local = win_cols - self.offset
        mine = (local >= 0) & (local < self.width) & (win_vals > -torch.inf)
        rows = torch.arange(vals.shape[0], device=vals.device)[:, None].expand_as(local)
        return rows[mine], local[mine]

    def topk_rows(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if not self.split_latents:
            return topk_rows(pre, k)
        m = min(k, pre.shape[1])
        top = pre.topk(m, dim=1, sorted=False)
        vals, cols = _pad(top.values, top.indices + self.offset, k)
        return self._row_winners(vals, cols, k)

    def topk_dead(self, pre: Tensor, dead: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if not self.split_latents:
            return topk_dead(pre, dead, k)
        n_dead = int(self.latent_sum(dead.sum().reshape(1))[0])
        k = min(k, n_dead)
        dead_idx = dead.nonzero().squeeze(1)
        m = min(k, len(dead_idx))
        top = pre[:, dead_idx].topk(m, dim=1, sorted=False)
        vals, cols = _pad(top.values, dead_idx[top.indices] + self.offset, k)
        return self._row_winners(vals, cols, k)

    def topk_batch(self, pre: Tensor, k_per_row: int) -> tuple[Tensor, Tensor]:
        """BatchTopK over every row and latent of the mesh: the global n-th largest value is the
        threshold; each rank keeps its entries at or above it."""
        n_rows = int(self.row_sum(torch.tensor([pre.shape[0]], device=pre.device))[0])
        n = k_per_row * n_rows
        if not (self.split_rows or self.split_latents):
            return topk_batch(pre, n)
        m = min(n, pre.numel())
        cand = pre.reshape(-1).topk(m, sorted=False).values
        gathered = torch.cat(D.all_gather_varlen(cand, self.both))
        threshold = gathered.topk(min(n, gathered.numel()), sorted=False).values.min()
        rows, cols = (pre >= threshold).nonzero(as_tuple=True)
        return rows, cols


def _pad(vals: Tensor, cols: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Pad [B, m] candidates to [B, k] with -inf (a slice may hold fewer than k latents)."""
    if vals.shape[1] == k:
        return vals, cols
    pad = k - vals.shape[1]
    vals = torch.cat([vals, vals.new_full((vals.shape[0], pad), -torch.inf)], dim=1)
    cols = torch.cat([cols, cols.new_full((cols.shape[0], pad), -1)], dim=1)
    return vals, cols
