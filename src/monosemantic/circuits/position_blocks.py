"""Gradient-times-vector contraction for features grouped by position: the inner loop of attribution.

A feature's edge from a batch of target rows is the gradient at its position dotted with its vector
(activation x decoder row): out[b, f] = G[b, pos[f]] . v[f]. Gathering G[:, pos] first copies
batch x features x d floats per row batch, which dominated attribution time. Instead the vectors are
laid out once as [T, cap, d] (each position's features in slots 0..c_p-1, zero padding after), so one
batched matmul G^T [T, B, d] @ V^T [T, d, cap] gives every (position, batch row, slot) product without
a copy of G; features beyond `cap` at crowded positions (BOS often has many) take the gather path.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PositionBlocks:
    """Where each active feature of one dictionary sits in the [T, cap] layout."""

    def __init__(self, pos: Tensor, n_pos: int, quantile: float = 0.9) -> None:
        n = len(pos)
        counts = torch.bincount(pos, minlength=n_pos)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(pos, stable=True)
        rank = torch.empty(n, dtype=torch.long, device=pos.device)
        rank[order] = torch.arange(n, device=pos.device) - starts[pos[order]]
        nonzero = counts[counts > 0].float()
        # the padded width: most positions fit, so padding stays small and crowded positions overflow
        self.cap = int(torch.quantile(nonzero, quantile).ceil()) if len(nonzero) else 0
        inside = rank < self.cap
        self.n, self.n_pos = n, n_pos
        self.regular = inside.nonzero().flatten()  # feature indices laid out in [T, cap]
        self.overflow = (~inside).nonzero().flatten()  # gathered one by one
        self.pos_r, self.slot_r = pos[self.regular], rank[self.regular]
        self.pos_o = pos[self.overflow]

    def layout(self, vecs: Tensor) -> tuple[Tensor, Tensor]:
        """vecs [n, d] -> (padded [T, d, cap] for the batched matmul, overflow rows [n_o, d])."""
        padded = vecs.new_zeros(self.n_pos, self.cap, vecs.shape[1])
        padded[self.pos_r, self.slot_r] = vecs[self.regular]
        return padded.transpose(1, 2).contiguous(), vecs[self.overflow]

    def contract(self, G: Tensor, laid_out: tuple[Tensor, Tensor]) -> Tensor:
        """G [B, T, d] gradients -> [B, n]: each feature's gradient at its position dot its vector."""
        padded, over = laid_out
        out = G.new_zeros(G.shape[0], self.n)
        if self.cap and len(self.regular):
            prod = torch.bmm(G.transpose(0, 1), padded)  # [T, B, cap]
            out[:, self.regular] = prod[self.pos_r, :, self.slot_r].T
        if len(self.overflow):
            out[:, self.overflow] = torch.einsum("bnd,nd->bn", G[:, self.pos_o], over)
        return out
