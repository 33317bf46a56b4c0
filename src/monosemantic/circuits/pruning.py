"""Influence-based pruning (the circuit-tracer recipe).

Rows of |A| are normalised to sum to one, so each node splits its (unit) input among its sources;
a node's influence is the total weight of all paths from it to the targets, w (A + A^2 + ...),
i.e. w ((I - A)^-1 - I), summed as a power series (A is nilpotent: the graph is a DAG). Nodes are
kept up to `node_threshold` of the cumulative influence, then edges, scored by normalised weight
times the influence of their target, up to `edge_threshold`; nodes left without edges go.

Only features and targets have inputs: error and embedding rows of A are zero, and on long prompts
they are most of the rows (one error node per dictionary and position). So the work is done on the
non-zero rows, [R, N] instead of [N, N] (`nonzero_rows`, `row_influence`): at 4,096 tokens that is
about a sixth of the memory for each temporary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def normalize_matrix(A: Tensor) -> Tensor:
    a = A.abs()
    return a.div_(a.sum(1, keepdim=True).clamp_min(1e-10))


def nonzero_rows(A: Tensor, chunk: int = 1024) -> Tensor:
    """Indices of A's rows with a non-zero entry (scanned in chunks: no [N, N] temporary)."""
    found = [(A[c : c + chunk] != 0).any(1) for c in range(0, A.shape[0], chunk)]
    return torch.cat(found).nonzero().flatten() if found else torch.zeros(0, dtype=torch.long)


def row_influence(An: Tensor, rows: Tensor, weights: Tensor, max_iter: int = 10_000) -> Tensor:
    """`compute_influence` for the matrix whose rows `rows` are An [R, N] and whose other rows are 0."""
    cur = weights[rows] @ An
    total = cur.clone()
    for _ in range(max_iter):
        if not cur.any():
            return total
        cur = cur[rows] @ An
        total += cur
    raise RuntimeError("influence did not converge: the adjacency matrix has a cycle")


def compute_influence(A_norm: Tensor, weights: Tensor, max_iter: int = 10_000) -> Tensor:
    """w A + w A^2 + ... (stops when the series reaches zero; raises if A has a cycle)."""
    cur = weights @ A_norm
    total = cur.clone()
    for _ in range(max_iter):
        if not cur.any():
            return total
        cur = cur @ A_norm
        total += cur
    raise RuntimeError("influence did not converge: the adjacency matrix has a cycle")


def _abs_blocks(edge: Tensor, weights: Tensor | None, step: int, scratch: Tensor):
    """(row indices, |edge[rows]|) in blocks of up to `step` consecutive rows, skipping the rows whose
    weight is 0 (all rows when `weights` is None). Each block is written into `scratch`, small enough
    to stay in cache: the absolute value costs no extra pass over memory and no allocation."""
    for c in range(0, len(edge), step):
        stop = min(c + step, len(edge))
        live = None if weights is None else weights[c:stop] != 0
        if live is None or bool(live.all()):
            block = scratch[: stop - c]
            torch.abs(edge[c:stop], out=block)
            yield torch.arange(c, stop), block
        elif bool(live.any()):
            idx = live.nonzero().flatten() + c
            block = scratch[: len(idx)]
            torch.index_select(edge, 0, idx, out=block)
            yield idx, block.abs_()


def influence_from_rows(
    edge: Tensor, row_node: Tensor, target_w: Tensor, n_targets: int, n_cols: int, block_bytes: int = 1 << 22
) -> Tensor:
    """Influence of every column node from the rows computed so far (rows: targets first).

    The edge matrix is the largest thing attribution holds (rows x every active feature), so no
    normalised copy of it is made: each power-series step is (weight / row sum) @ |rows|, read in
    cache-sized blocks of rows, and only over the rows whose weight is non-zero at that step."""
    size = max(n_cols, int(row_node.max()) + 1) if len(row_node) else n_cols
    step = max(1, block_bytes // max(1, n_cols * edge.element_size()))
    scratch = torch.empty(min(step, max(1, len(edge))), n_cols, dtype=edge.dtype)
    inv = torch.empty(len(edge), dtype=edge.dtype)
    for idx, block in _abs_blocks(edge, None, step, scratch):
        inv[idx] = 1.0 / block.sum(1).clamp_min(1e-10)
    prod = torch.zeros(size, dtype=edge.dtype)
    prod[row_node[:n_targets]] = target_w.to(edge.dtype)
    total = torch.zeros(n_cols, dtype=edge.dtype)
    for _ in range(10_000):
        q = prod[row_node] * inv
        cur = torch.zeros(n_cols, dtype=edge.dtype)
        for idx, block in _abs_blocks(edge, q, step, scratch):
            cur.addmv_(block.T, q[idx])
        if not cur.any():
            return total
        total += cur
        prod = torch.zeros(size, dtype=edge.dtype)
        prod[:n_cols] = cur
    raise RuntimeError("influence did not converge: the adjacency matrix has a cycle")


def find_threshold(scores: Tensor, threshold: float) -> Tensor:
    s = scores.flatten().sort(descending=True).values
    total = s.sum()
    if total <= 0:
        return s[-1] if len(s) else torch.tensor(0.0)
    cum = s.cumsum(0) / total
    i = min(int(torch.searchsorted(cum, torch.tensor(threshold, dtype=cum.dtype))), len(s) - 1)
    return s[i]


class PruneResult(NamedTuple):
    node_mask: Tensor  # [N] bool
    edge_mask: Tensor  # [N, N] bool (target, source)
    cumulative: Tensor  # [N] cumulative influence rank of each node (0..1, lower = more influential)
    influence: Tensor  # [N] raw node influence


def prune(
    graph, node_threshold: float = 0.8, edge_threshold: float = 0.98, free_sources: Tensor | None = None
) -> PruneResult:
    """Keep the nodes and edges that carry most of the influence on the targets.

    A kept feature needs an incoming kept edge unless `free_sources` (bool [N]) marks it as a source
    (contrastive features active only on the corrupted prompt, every node of an ablation graph).
    """
    if not (0 < node_threshold <= 1 and 0 < edge_threshold <= 1):
        raise ValueError("node_threshold and edge_threshold must be in (0, 1]")
    A, w = graph.adjacency, graph.target_weights
    sl = graph.slices()
    n_feat, N = graph.n_features, len(w)
    always = torch.zeros(N, dtype=torch.bool)
    always[sl["embeddings"]] = True
    always[sl["logits"]] = True
    always[w != 0] = True
    rows = nonzero_rows(A)
    Ar = A[rows]  # [R, N]: the only non-zero rows
    infl = row_influence(normalize_matrix(Ar), rows, w)
    node_mask = (infl >= find_threshold(infl, node_threshold)) & (infl > 0) | always
    Pn = Ar  # the kept nodes' edges, normalised in place (Ar is a copy)
    Pn[~node_mask[rows]] = 0
    Pn[:, ~node_mask] = 0
    Pn = normalize_matrix(Pn)
    del Ar
    scores = Pn.mul_((row_influence(Pn, rows, w) + w)[rows][:, None])  # edge scores, [R, N]
    em = (scores >= find_threshold(scores[scores > 0], edge_threshold)) & (scores > 0)
    del scores, Pn
    src_ok = slice(0, sl["errors"].stop)  # features and errors need outgoing edges
    old = None
    while old is None or not torch.equal(old, node_mask):
        old = node_mask.clone()
        em[~node_mask[rows]] = False
        em[:, ~node_mask] = False
        node_mask[src_ok] &= em[:, src_ok].any(0) | always[src_ok]
        has_input = torch.zeros(N, dtype=torch.bool)
        has_input[rows] = em.any(1)
        needs_none = always[:n_feat] if free_sources is None else always[:n_feat] | free_sources[:n_feat]
        node_mask[:n_feat] &= has_input[:n_feat] | needs_none
    edge_mask = torch.zeros(N, N, dtype=torch.bool)
    edge_mask[rows] = em
    order = infl.argsort(descending=True)
    cum = torch.zeros_like(infl)
    tot = infl.sum()
    cum[order] = infl[order].cumsum(0) / tot if tot > 0 else 0.0
    return PruneResult(node_mask, edge_mask, cum, infl)


def prune_by_effect(
    graph, effect: Tensor, node_threshold: float = 0.8, edge_threshold: float = 0.98
) -> PruneResult:
    """Sparse Feature Circuits pruning for contrastive graphs: keep the feature and error nodes with
    the largest |node effect| up to `node_threshold` of their total, then the edges between kept nodes
    with the largest |edge effect| up to `edge_threshold` of theirs; nodes left without edges go.

    (Influence pruning normalises each row, which would cancel the dm/da_d factor of every edge.)
    """
    if not (0 < node_threshold <= 1 and 0 < edge_threshold <= 1):
        raise ValueError("node_threshold and edge_threshold must be in (0, 1]")
    A, w = graph.adjacency, graph.target_weights
    sl = graph.slices()
    score = effect.abs().to(A.dtype)
    cand = torch.zeros(len(w), dtype=torch.bool)
    cand[: sl["errors"].stop] = True
    always = ~cand
    node_mask = always.clone()
    if cand.any():
        node_mask |= cand & (score >= find_threshold(score[cand], node_threshold)) & (score > 0)
    P = A.abs().clone()
    P[~node_mask] = 0
    P[:, ~node_mask] = 0
    edge_mask = (P >= find_threshold(P[P > 0], edge_threshold)) & (P > 0) if (P > 0).any() else P > 0
    old = None
    while old is None or not torch.equal(old, node_mask):
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[cand] &= edge_mask[:, cand].any(0)  # a kept node must reach something
    order = score.argsort(descending=True)
    cum = torch.zeros_like(score)
    tot = score[cand].sum()
    cum[order] = score[order].cumsum(0) / tot if tot > 0 else 0.0
    return PruneResult(node_mask, edge_mask, cum, score)
