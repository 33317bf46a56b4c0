"""Context windows around kept examples, read from one block's sparse codes."""

from __future__ import annotations

import torch
from torch import Tensor


class ContextWindows:
    """Context windows of one block read from its sparse codes, not a dense `[B, T, F]` tensor.

    Non-zeros are sorted by (feature, sequence, position), so a window's activations are one
    contiguous run found by two binary searches: the cost follows the windows' non-zeros (a
    couple per window for a sparse feature), not `n x (2w+1)` reads. The entries arrive sorted
    by flat token `b * T + t`, so a stable sort on the feature alone gives that order; it runs
    on 16-bit keys when the features fit (torch's integer sort costs about one pass per key
    byte, so this is twice as fast as sorting 32-bit keys). Token windows come from a padded
    unfold."""

    def __init__(self, tokens: Tensor, tok: Tensor, f: Tensor, v: Tensor, F: int, w: int) -> None:
        B, T = tokens.shape
        self.BT, self.T, self.w = B * T, T, w
        order = torch.argsort(f.to(torch.int16 if F <= 2**15 else torch.int32), stable=True)
        dtype = torch.int32 if F * B * T < 2**31 else torch.int64
        tok_sorted = tok.index_select(0, order)
        self.key = f.index_select(0, order).to(dtype) * self.BT + tok_sorted.to(dtype)
        self.t, self.v = tok_sorted % T, v.index_select(0, order)
        padded = torch.nn.functional.pad(tokens.to(torch.int32), (w, w), value=-1)
        self.tok = padded.unfold(1, 2 * w + 1, 1)  # [B, T, W] view

    def __call__(self, b: Tensor, p: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """`[n, 2w+1]` activation and token windows around positions `p` of sequences `b` for
        features `f`; positions outside the sequence give token -1 and activation 0."""
        T, w, dtype = self.T, self.w, self.key.dtype
        base = (f * self.BT + b * T).to(dtype)
        lo = torch.searchsorted(self.key, base + (p - w).clamp_min(0).to(dtype))
        hi = torch.searchsorted(self.key, base + (p + w + 1).clamp_max(T).to(dtype))
        counts = hi - lo
        row = torch.repeat_interleave(torch.arange(b.numel()), counts)
        entry = torch.arange(row.numel()) - (torch.cumsum(counts, 0) - counts)[row] + lo[row]
        W = 2 * w + 1
        win_act = torch.zeros(b.numel(), W)
        win_act.view(-1).index_copy_(0, row * W + self.t[entry] - p[row] + w, self.v[entry])
        return win_act, self.tok[b, p]

    def silent(self, b: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """Windows where the feature never fires (negatives): zero activations, no search."""
        return torch.zeros(b.numel(), 2 * self.w + 1), self.tok[b, p]
