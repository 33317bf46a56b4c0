"""Gradient-times-vector contraction for features grouped by position: the inner loop of attribution.

A feature's edge from a batch of target rows is the gradient at its position dotted with its vector
(activation x decoder row): out[b, f] = G[b, pos[f]] . v[f]. Gathering G[:, pos] first copies
batch x features x d floats per row batch, which dominated attribution time. Instead each position's
features are cut into blocks of at most `width` (the median count per position, so blocks are
nearly full), the vectors laid out once as [blocks, d, width], and one batched matmul of the
gradients at the blocks' positions [blocks, B, d] by that layout gives every product: the gradient
is read once per block instead of once per feature. A CLT layer's latents write to several outputs;
their products accumulate in the same matmul output (`baddbmm`).
"""

from __future__ import annotations

import torch
from torch import Tensor


class PositionBlocks:
    """Where each active feature of one dictionary sits in the [blocks, width] layout."""

    def __init__(self, pos: Tensor, n_pos: int) -> None:
        n = len(pos)
        counts = torch.bincount(pos, minlength=n_pos)
        nonzero = counts[counts > 0]
        self.n = n
        self.width = max(1, int(nonzero.median())) if len(nonzero) else 1
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(pos, stable=True)
        rank = torch.empty(n, dtype=torch.long, device=pos.device)
        rank[order] = torch.arange(n, device=pos.device) - starts[pos[order]]
        per_pos = (counts + self.width - 1) // self.width  # blocks at each position
        first = torch.cumsum(per_pos, 0) - per_pos
        self.block_pos = torch.repeat_interleave(torch.arange(n_pos, device=pos.device), per_pos)
        self.block = first[pos] + rank // self.width
        self.slot = rank % self.width
        self.flat = self.block * self.width + self.slot  # feature -> column of the flattened product

    @property
    def n_blocks(self) -> int:
        return len(self.block_pos)

    def layout(self, vecs: Tensor) -> Tensor:
        """vecs [n, d] -> [blocks, d, width], zero where a block has fewer than `width` features."""
        out = vecs.new_zeros(self.n_blocks, self.width, vecs.shape[1])
        out[self.block, self.slot] = vecs
        return out.transpose(1, 2).contiguous()

    def contract(self, grads: list[Tensor], laid_out: list[Tensor]) -> Tensor:
        """Sum over k of grads[k] [B, T, d] at each feature's position dot its vector in laid_out[k]:
        [B, n]."""
        B = grads[0].shape[0]
        if self.n == 0:
            return grads[0].new_zeros(B, 0)
        acc = None
        for G, V in zip(grads, laid_out, strict=True):
            Gb = G.transpose(0, 1).index_select(0, self.block_pos)  # [blocks, B, d]
            acc = torch.bmm(Gb, V) if acc is None else acc.baddbmm_(Gb, V)
        return acc.permute(1, 0, 2).reshape(B, -1)[:, self.flat]
