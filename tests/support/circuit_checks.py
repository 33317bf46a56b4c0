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
    for j in range(graph.n_features):  # feature targets: encoder direction . input
        d, _, p, idx = graph.features[j].tolist()
        enc = rm.spliced[d].encoder_dirs(torch.tensor([idx]))[0]
        values.append(inputs[d][:, p] @ enc)
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
