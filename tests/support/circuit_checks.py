"""Checks shared by the circuit tests: every edge of a graph against the intervention it stands for."""

from __future__ import annotations

import torch

from monosemantic.circuits.pruning import prune


def intervention_matrix(rm, graph):
    """effects[t, s]: change of target t's linear value when source s is removed from the frozen model."""
    setup = rm.setup(graph.input_ids)
    sl = graph.slices()
    n_src = sl["embeddings"].stop
    B = n_src + 1  # row 0: nothing removed
    vals = [a.act.expand(B, -1).clone() for a in setup.active]
    errs = [e.expand(B, -1, -1).clone() for e in setup.errors]
    emb = setup.embed.expand(B, -1, -1).clone()
    for j in range(graph.n_features):
        d, _, p, idx = graph.features[j].tolist()
        a = setup.active[d]
        k = int(((a.pos == p) & (a.idx == idx)).nonzero())
        vals[d][1 + j, k] = 0
    for e in range(graph.n_errors):
        d, _, p = graph.errors[e].tolist()
        errs[d][1 + sl["errors"].start + e, p] = 0
    for p in range(graph.n_pos):
        emb[1 + sl["embeddings"].start + p, p] = 0
    with torch.no_grad():
        resid, inputs = rm.frozen(setup, batch=B, values=vals, errors=errs, embed=emb)
    W_U = rm.lm.W_U
    values = []  # [n_targets_rows, B]
    rows = []
    for j in range(graph.n_features):  # feature targets: encoder direction . input (Lorsa: all positions)
        d, _, p, idx = graph.features[j].tolist()
        _, _, where, vec = rm.feature_spec(setup, d, p, idx)
        x = inputs[d][:, where]
        values.append(x @ vec if vec.dim() == 1 else (x * vec).sum((-2, -1)))
        rows.append(j)
    for k, t in enumerate([t for t in graph.targets if t.kind != "feature"]):
        vec = W_U[:, t.token_id] - (W_U[:, t.contrast_id] if t.kind == "logit_diff" else W_U.mean(-1))
        values.append(resid[:, -1] @ vec)
        rows.append(sl["logits"].start + k)
    values = torch.stack(values)
    return rows, (values[:, :1] - values[:, 1:])  # removal effect = the edge


def check_edges(rm, graph, tol=1e-4):
    rows, effects = intervention_matrix(rm, graph)
    A = graph.adjacency.double()
    n_src = graph.slices()["embeddings"].stop
    computed = A[rows, :n_src]
    scale = computed.abs().max()
    assert scale > 0
    rel = (computed - effects).abs() / (computed.abs() + 1e-6 * scale)
    assert float(rel.max()) < tol, float(rel.max())
    pr = prune(graph, 0.8, 0.98)
    kept = pr.edge_mask[rows, :n_src]
    assert kept.any()
    assert float(rel[kept].max()) < tol


def edges_to_check(graph, n_random=400, seed=0):
    """[E, 2] (target row, source column): the pruned graph's links, every edge into the last feature,
    and random other edges (what the head-loading sums are checked on)."""
    sl = graph.slices()
    n_src = sl["embeddings"].stop
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(sl["logits"].start, sl["logits"].stop)])
    g = torch.Generator().manual_seed(seed)
    rand = torch.stack(
        [
            rows[torch.randint(len(rows), (n_random,), generator=g)],
            torch.randint(n_src, (n_random,), generator=g),
        ],
        1,
    )
    kept = prune(graph, 0.8, 0.98).edge_mask.nonzero()
    one = torch.stack([torch.full((n_src,), int(rows[graph.n_features - 1])), torch.arange(n_src)], 1)
    return torch.cat([kept, one, rand]).unique(dim=0)


def frozen_scores(rm, setup, layer, observe=None, batch=1, **kw):
    """Pre-softmax scores [B, H, T, T] of `layer` recomputed from the frozen model's residual (norm
    and q/k-norm scales held), and every site the pass saw."""
    seen = {}

    def obs(name, x):
        x = observe(name, x) if observe is not None else x
        seen[name] = x
        return x

    with torch.no_grad():
        rm.frozen(setup, batch=batch, observe=obs, **kw)
        lm, fz = rm.lm, setup.freeze
        x = lm.attn_in(layer, seen[f"blocks.{layer}.hook_resid_pre"], "frozen", fz)
        q, k, _, _ = lm.queries_keys(layer, x, "frozen", fz)
    return (q @ k.transpose(-1, -2)) * lm.score_scale(layer), seen


def held_attention(clean_z):
    """An observe callback holding every layer's hook_z at its clean value (attention outputs fixed)."""
    names = {f"blocks.{L}.attn.hook_z": z for L, z in enumerate(clean_z)}

    def hold(name, x):
        return names[name].expand_as(x) if name in names else x

    return hold
