"""Checks shared by the circuit tests: every edge of a graph against the intervention it stands for,
and a contrastive graph's edges and effects against finite differences."""

from __future__ import annotations

import pytest
import torch

from monosemantic.circuits.pruning import find_threshold, prune, prune_by_effect


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


def _metric_vec(rm, graph):
    t = graph.targets[0]
    return rm.lm.W_U[:, t.token_id] - rm.lm.W_U[:, t.contrast_id]


def check_contrastive_edges(rm, graph, res, prompt: str) -> None:
    """A contrastive graph's edges against finite differences: latent -> latent (Δa_u x dm/da_d x the
    frozen direct Jacobian), latent -> metric, error -> metric; inactive latents receive none."""
    setup = rm.setup(rm.tokenize(prompt))
    A, F, N = graph.adjacency, graph.features, len(graph.target_weights)
    vec = _metric_vec(rm, graph)
    base_vals = [a.act.clone() for a in setup.active]

    def frozen_at(u: int, eps: float):
        """Frozen model with latent u (active on the clean run) moved by eps; the others held."""
        d, _, p, k = F[u].tolist()
        a = setup.active[d]
        j = int(((a.pos == p) & (a.idx == k)).nonzero()[0])
        vals = [v.clone() for v in base_vals]
        vals[d][j] += eps
        resid, inputs = rm.frozen(setup, values=vals)
        return resid, inputs

    def free_metric(d: int, p: int, k: int, eps: float) -> float:
        def edit(i, f):
            if i == d:
                f = f.clone()
                f[:, p, k] += eps
            return f

        lg = rm.free(setup.input_ids[None], edit=edit)[0, -1]
        return float(lg[graph.targets[0].token_id] - lg[graph.targets[0].contrast_id])

    # an edge layer-0 latent u -> layer-1 latent d, both changed by the corruption and active on clean
    l0 = [j for j in range(len(F)) if F[j, 0] == 0 and graph.activations[j] != 0]
    l1 = [j for j in range(len(F)) if F[j, 0] == 1 and graph.activations[j] != 0]
    assert l0 and l1
    sub = A[l1][:, l0].abs()
    r, c = divmod(int(sub.argmax()), sub.shape[1])
    d_node, u_node = l1[r], l0[c]
    eps = 1e-3
    with torch.no_grad():
        r0, in0 = frozen_at(u_node, 0.0)
        r1, in1 = frozen_at(u_node, eps)
        dd, _, dp, dk = F[d_node].tolist()
        enc = rm.spliced[dd].encoder_dirs(torch.tensor([dk]))[0]
        jac = float((in1[dd][0, dp] - in0[dd][0, dp]) @ enc) / eps  # d pre_d / d a_u, frozen, direct
        dm_dad = (free_metric(dd, dp, dk, eps) - free_metric(dd, dp, dk, -eps)) / (2 * eps)
        metric_jac = float((r1[0, -1] - r0[0, -1]) @ vec) / eps
    ud, _, up, uk = F[u_node].tolist()
    delta_u = float(res.acts_corrupt[ud][up, uk] - res.acts_clean[ud][up, uk])
    # with integrated gradients, dm/da_d is the path average; the clean gradient is AtP's factor
    g_ig = float(res.grad_ig[dd][dp, dk])
    assert float(res.grad[dd][dp, dk]) == pytest.approx(dm_dad, rel=1e-4, abs=1e-7)
    assert float(A[d_node, u_node]) == pytest.approx(delta_u * g_ig * jac, rel=1e-6, abs=1e-10)
    assert float(A[N - 1, u_node]) == pytest.approx(delta_u * metric_jac, rel=1e-6, abs=1e-10)
    # an error node -> metric: Δerror . gradient, by finite difference on the frozen error term
    T, i, p = graph.n_pos, 1, graph.n_pos - 1
    errs = [e.clone() for e in setup.errors]
    errs[i][p] += eps * res.delta_error[i][p]
    with torch.no_grad():
        r_e, _ = rm.frozen(setup, errors=errs)
    err_node = graph.n_features + i * T + p
    expect = float((r_e[0, -1] - r0[0, -1]) @ vec) / eps
    assert float(A[N - 1, err_node]) == pytest.approx(expect, rel=1e-6, abs=1e-10)
    assert expect != 0
    # latents inactive on the clean run receive no edges (their gate is closed there)
    inactive = [j for j in range(len(F)) if graph.activations[j] == 0]
    assert all(A[j].abs().sum() == 0 for j in inactive)


def check_ig_completeness(graph, effect, res, corrupted: str) -> None:
    """Integrated gradients' embedding effects sum to the metric's change (attribution patching's do
    not); pruning by effect keeps the largest nodes."""
    diff = res.metric_corrupt - res.metric_clean
    sl = graph.slices()
    assert abs(diff) > 1e-3
    assert float(effect[sl["embeddings"]].sum()) == pytest.approx(diff, rel=0.02, abs=1e-6)
    assert float(effect[-1]) == pytest.approx(diff)
    # attribution patching's embedding sum is the first-order estimate, not exact
    atp = float(res.atp_embed.sum())
    assert atp != pytest.approx(diff, rel=1e-3)
    pruned = prune_by_effect(graph, effect, 0.8, 0.98)
    kept = pruned.node_mask[sl["features"]]
    assert kept.any() and pruned.edge_mask.any()
    # kept nodes are among those with the largest |effect| (up to 80% of the total)
    cand = effect[: sl["errors"].stop].abs()
    assert (cand[pruned.node_mask[: sl["errors"].stop]] >= find_threshold(cand, 0.8)).all()
    assert graph.meta["mode"] == "contrastive" and graph.meta["corrupted_prompt"] == corrupted
