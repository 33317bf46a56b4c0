"""A fused encoder for TopK-style dictionaries whose backward touches only the selected latents.

The forward pass is one dense matmul (`x W_enc + b_enc`, [B, d_sae]) followed by a selection
(TopK per row, BatchTopK over the batch, AuxK among dead latents). Autograd through the dense
matmul would cost two more [B, d_in] x [d_in, d_sae] matmuls in the backward pass; but only the
B*k selected pre-activations receive gradient, so the backward here is three gathers with
`F.embedding_bag` (a fused gather-scale-sum that never materialises [B*k, d_in]):

    grad_x[b]     = sum_j g[b, j] W_enc[:, c_bj]       (bags = rows)
    grad_W_enc[:, c] = sum_{(b, c)} g[b, c] x[b]         (bags = columns)
    grad_b_enc[c] = sum_{(b, c)} g[b, c]

The idea is EleutherAI sparsify's `fused_encoder.py`, generalised to any selection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# A selection maps the dense pre-activations [B, d_sae] to groups of (rows, cols) coordinates,
# each group sorted by row. It runs without grad.
Selection = Callable[[Tensor], list[tuple[Tensor, Tensor]]]

# The [B, d_sae] pre-activation matrix is the one big temporary of a step (256 MB at B=4096,
# d_sae=16384). A fresh allocation of that size is a fresh mmap, so every step would pay ~65k
# page faults before the matmul writes a byte; reusing one workspace costs nothing. Only one
# matrix is live at a time per thread (selections copy out what they keep), so the dictionaries
# a thread trains share it; each thread has its own, so concurrent encoders never collide.
_workspace = threading.local()


def _preact_buffer(n_rows: int, width: int, like: Tensor) -> Tensor:
    buf = getattr(_workspace, "pre", None)
    if buf is None or buf.dtype != like.dtype or buf.device != like.device or buf.numel() < n_rows * width:
        _workspace.pre = None  # free the old one before allocating the new one
        buf = _workspace.pre = torch.empty(n_rows * width, dtype=like.dtype, device=like.device)
    return buf[: n_rows * width].view(n_rows, width)


def _bag_offsets(keys: Tensor, n_bags: int) -> Tensor:
    counts = torch.bincount(keys, minlength=n_bags)
    return torch.cumsum(counts, 0) - counts


def _sort_order(keys: Tensor) -> Tensor:
    """Permutation that sorts integer keys; int32 keys take PyTorch's fast radix sort
    (int64 sorts, and argsort(stable=True), are 10-50x slower on CPU here)."""
    return torch.sort(keys.to(torch.int32), stable=True).indices


class _SparseEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, select: Selection, sizes: list[int]):
        with torch.no_grad():
            pre = torch.addmm(b_enc, x, W_enc, out=_preact_buffer(x.shape[0], W_enc.shape[1], x))
            groups = select(pre)
            rows = torch.cat([r for r, _ in groups])
            cols = torch.cat([c for _, c in groups])
            vals = pre[rows, cols]
            del pre  # the workspace is reused by the next call: nothing may keep a view of it
        sizes.extend(len(r) for r, _ in groups)
        ctx.save_for_backward(x, W_enc, rows, cols)
        ctx.mark_non_differentiable(rows, cols)
        ctx.rows_sorted = len(groups) == 1  # each group is row-sorted; a concatenation is not
        return vals, rows, cols

    @staticmethod
    def backward(ctx, grad_vals: Tensor, _rows: Tensor | None, _cols: Tensor | None):
        x, W_enc, rows, cols = ctx.saved_tensors
        g = grad_vals.to(x.dtype)
        n_rows, d_sae = x.shape[0], W_enc.shape[1]
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            order = None if ctx.rows_sorted else _sort_order(rows)
            c, w = (cols, g) if order is None else (cols[order], g[order])
            grad_x = F.embedding_bag(
                c, W_enc.T.contiguous(), _bag_offsets(rows, n_rows), mode="sum", per_sample_weights=w
            )
        if ctx.needs_input_grad[1]:
            order = _sort_order(cols)
            grad_W = F.embedding_bag(
                rows[order], x, _bag_offsets(cols, d_sae), mode="sum", per_sample_weights=g[order]
            ).T
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(d_sae, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        return grad_x, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """sum_j vals_j W[cols_j] per row; PyTorch's own embedding_bag backward for the weight
    sorts with a slow stable argsort, so both gradients are computed here."""

    @staticmethod
    def forward(ctx, vals: Tensor, W: Tensor, rows: Tensor, cols: Tensor, n_rows: int):
        offsets = _bag_offsets(rows, n_rows)
        ctx.save_for_backward(vals, W, rows, cols, offsets)
        return F.embedding_bag(cols, W, offsets, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx, grad: Tensor):
        vals, W, rows, cols, offsets = ctx.saved_tensors
        grad = grad.contiguous()
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_vals = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad, W, cols, offsets, rows, 0, -1
            )
        if ctx.needs_input_grad[1]:
            order = _sort_order(cols)
            grad_W = F.embedding_bag(
                rows[order], grad, _bag_offsets(cols, W.shape[0]), mode="sum", per_sample_weights=vals[order]
            )
        return grad_vals, grad_W, None, None, None


def sparse_decode(vals: Tensor, W: Tensor, rows: Tensor, cols: Tensor, n_rows: int) -> Tensor:
    """[n_rows, d_out] = for each row, the sum of vals * W[cols] over its entries (rows sorted)."""
    return _SparseDecode.apply(vals.to(W.dtype), W, rows, cols, n_rows)


def sparse_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, select: Selection
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Pre-activations at the selected coordinates: one (rows, cols, vals) triple per group.

    Differentiable in x, W_enc and b_enc; under autocast the matmul runs in the autocast dtype.
    """
    if torch.is_autocast_enabled(x.device.type):
        dt = torch.get_autocast_dtype(x.device.type)
        x, W_enc, b_enc = x.to(dt), W_enc.to(dt), b_enc.to(dt)
    else:
        x, b_enc = x.to(W_enc.dtype), b_enc.to(W_enc.dtype)
    sizes: list[int] = []
    with torch.autocast(x.device.type, enabled=False):
        vals, rows, cols = _SparseEncode.apply(x, W_enc, b_enc, select, sizes)
    out, start = [], 0
    for n in sizes:
        out.append((rows[start : start + n], cols[start : start + n], vals[start : start + n]))
        start += n
    return out


def _topk_cols(pre: Tensor, k: int, group: int = 64) -> Tensor:
    """Column indices of each row's k largest entries: `pre.topk(k).indices`, faster.

    Split each row into blocks of `group` columns. An entry among the row's k largest lies in a
    block whose maximum is among the k largest block maxima (fewer than k blocks can hold a
    larger entry), so the top k of those k blocks' entries is exact. One vectorised max pass
    plus a top-k over k*group candidates beats a top-k over the whole row (torch's CPU top-k
    is a per-row partial sort). Only ties may pick different, equal-valued entries.
    """
    n, width = pre.shape
    if width % group or width // group < 4 * k or not pre.is_contiguous():
        return pre.topk(k, dim=-1, sorted=False).indices
    blocks = width // group
    best = pre.view(n, blocks, group).amax(-1).topk(k, dim=-1, sorted=False).indices  # [n, k]
    flat = (best + torch.arange(n, device=pre.device).unsqueeze(1) * blocks).view(-1)
    cand = pre.view(n * blocks, group).index_select(0, flat).view(n, k * group)
    top = cand.topk(k, dim=-1, sorted=False).indices
    return best.gather(1, top // group) * group + top % group


def topk_rows(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Coordinates of the k largest entries of each row (rows sorted)."""
    idx = _topk_cols(pre, k)
    rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(k)
    return rows, idx.reshape(-1)


def topk_batch(pre: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Coordinates of the n largest entries of the whole matrix (BatchTopK), sorted by row.

    A top-k over all B*d_sae entries is slow, so first take each row's top m = 4n/B candidates
    and select among those; that is exact unless some row's smallest candidate still reaches
    the selection threshold (then a row may have more winners than candidates: fall back).
    """
    n_rows, width = pre.shape
    n = min(n, pre.numel())
    m = min(width, 4 * -(-n // n_rows))
    if m < width:
        cand = pre.topk(m, dim=-1, sorted=False)
        top = cand.values.reshape(-1).topk(n, sorted=False)
        if bool((cand.values.min(dim=-1).values < top.values.min()).all()):
            rows = top.indices // m
            cols = cand.indices.reshape(-1)[top.indices]
            order = _sort_order(rows)
            return rows[order], cols[order]
    flat = pre.reshape(-1).topk(n, sorted=False).indices
    flat = flat[_sort_order(flat)] if pre.numel() < 2**31 else flat.sort().values
    return flat // width, flat % width


def topk_dead(pre: Tensor, dead: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest pre-activations per row among dead latents (AuxK), rows sorted."""
    dead_idx = dead.nonzero().squeeze(1)
    rows, local = topk_rows(pre[:, dead_idx], min(k, len(dead_idx)))
    return rows, dead_idx[local]
