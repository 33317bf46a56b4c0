"""Head loadings: each edge of an attribution graph split by the attention head that carries it.

With attention patterns and norm scales frozen, the replacement model is linear in its sources, and
positions mix only inside attention. Every path from a source to a target ends with some number of
steps at the target's position p_t; its *last attention hop* is the last head (layer L, head h) it
goes through, whose query is necessarily p_t. Paths with no attention hop at all stay at one
position (only same-position edges have them). So, exactly,

    edge(t, s) = no_hop(t, s) + sum over (L, h) of head(t, s; L, h)

Write the model as a function of its sources and of every layer's per-head mixed values z_L
(`blocks.L.attn.hook_z`, [T, H, hd]) treated as independent inputs ("attention cut"): the chain rule
for z_L = Z_L(sources, z_<L) gives exactly this split, with

    no_hop(t, s)       = d t / d s           in the cut model (attention contributes nothing)
    head(t, s; L, h)   = w_t[L, h] . dz_L[p_t, h] / ds,   w_t[L, h] = d t / d z_L[p_t, h] in the cut model

where dz_L / ds is the full frozen model's (total) derivative. Two passes compute everything:

1. a backward pass per batch of *targets* through the cut model (attention values detached, a
   gradient leaf added at every hook_z) gives w_t for every layer and head, and the no-hop
   gradient at every source's injection point (non-zero only at p_t: the cut model is position-wise);
2. a plain forward pass per batch of *sources* through the full frozen model (affine in what it is
   given, so dz_L / ds is the difference from a baseline row with every source off) gives every
   layer's dz_L / ds at every position, contracted with w_t at p_t for each edge of that source.

The work is one backward row per target node and one forward row per source node of the edges asked
for (the pruned graph's), instead of one row per target and head. The terms sum to the edge up to
float rounding (tests check it, and each term against an intervention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .attribution import Graph, seed_rows, target_spec
from .replacement import ReplacementModel, Setup


class HeadLoadings(NamedTuple):
    heads: Tensor  # [n_edges, n_layers, n_heads]: the part of each edge whose last hop is that head
    no_hop: Tensor  # [n_edges]: the part with no attention hop (zero across positions)


def z_site(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def node_position(graph: Graph, node: int) -> int:
    """The token position of any node (logit targets sit at the last position)."""
    sl = graph.slices()
    if node < sl["features"].stop:
        return int(graph.features[node, 2])
    if node < sl["errors"].stop:
        return int(graph.errors[node - sl["errors"].start, 2])
    if node < sl["embeddings"].stop:
        return node - sl["embeddings"].start
    t = [t for t in graph.targets if t.kind != "feature"][node - sl["logits"].start]
    return t.pos if t.kind == "direction" else graph.n_pos - 1


def target_of(rm: ReplacementModel, graph: Graph, node: int, setup: Setup) -> tuple[tuple, int]:
    """(row spec for `seed_rows`, position) of a target node: a feature (its pre-activation) or a
    logit / logit difference / direction node."""
    sl = graph.slices()
    if node < sl["features"].stop:
        d, _, pos, idx = graph.features[node].tolist()
        return rm.feature_spec(setup, d, pos, idx), pos
    if not sl["logits"].start <= node < sl["logits"].stop:
        raise ValueError(f"node {node} is an error or embedding node, which is never a target")
    t = [t for t in graph.targets if t.kind != "feature"][node - sl["logits"].start]
    return target_spec(rm, t), node_position(graph, node)


def writes_of(
    rm: ReplacementModel, graph: Graph, setup: Setup, node: int
) -> tuple[int, list[tuple[str, Tensor]]]:
    """(position, [(injection point, vector)]) of a source node: what it adds to the residual stream
    (a CLT latent writes to every later layer's output; embeddings to "embed")."""
    sl = graph.slices()
    if node < sl["features"].stop:
        d, _, pos, idx = graph.features[node].tolist()
        a = setup.active[d]
        act = a.act[((a.pos == pos) & (a.idx == idx)).nonzero().flatten()[0]]
        out = [(s.hook_name_out, act * W[idx]) for s in rm.spliced for j, W in s.sources if j == d]
        return pos, out
    if node < sl["errors"].stop:
        d, _, pos = graph.errors[node - sl["errors"].start].tolist()
        return pos, [(rm.spliced[d].hook_name_out, setup.errors[d][pos])]
    if node < sl["embeddings"].stop:
        pos = node - sl["embeddings"].start
        return pos, [("embed", setup.embed[pos])]
    raise ValueError(f"node {node} is a target node, which is never a source")


def injection_points(rm: ReplacementModel, batch: int, T: int) -> dict[str, Tensor]:
    inj = {"embed": torch.zeros(batch, T, rm.lm.d_model, dtype=rm.dtype, device=rm.device)}
    for s in rm.spliced:
        inj[s.hook_name_out] = torch.zeros(batch, T, int(s.dic.cfg.d_out), dtype=rm.dtype, device=rm.device)
    return inj


def cut_gradients(
    rm: ReplacementModel, setup: Setup, specs: Sequence[tuple]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Backward pass of the attention-cut model for a batch of target specs: (gradient at every
    layer's hook_z [B, L, T, H, hd], gradient at every injection point {name: [B, T, d]})."""
    B, T, lm = len(specs), setup.n_pos, rm.lm
    inj = {k: v.requires_grad_(True) for k, v in injection_points(rm, B, T).items()}
    leaves = [
        torch.zeros(B, T, lm.n_heads, lm.head_dim, dtype=rm.dtype, device=rm.device, requires_grad=True)
        for _ in range(lm.n_layers)
    ]
    z_layer = {z_site(L): L for L in range(lm.n_layers)}
    read: dict[str, Tensor] = {}
    sites = {spec[1] for spec in specs if spec[0] == "site"}

    def observe(name: str, x: Tensor) -> Tensor:
        if name in z_layer:  # cut: nothing upstream of attention's values gets gradient through it
            return x.detach() + leaves[z_layer[name]]
        if name in sites:
            read[name] = x
        return x

    with torch.enable_grad():
        resid, inputs = rm.frozen(setup, batch=B, inject=inj, observe=observe)
        outs, seeds = seed_rows(specs, resid, inputs, read)
        keys = list(inj)
        gs = torch.autograd.grad(outs, [inj[k] for k in keys] + leaves, seeds, allow_unused=True)
    zero = torch.zeros_like
    g_inj = {k: (g if g is not None else zero(inj[k])) for k, g in zip(keys, gs, strict=False)}
    g_z = [g if g is not None else zero(leaf) for g, leaf in zip(gs[len(keys) :], leaves, strict=True)]
    return torch.stack(g_z, 1).detach(), {k: g.detach() for k, g in g_inj.items()}


def sources_off(setup: Setup) -> dict:
    """`frozen` keyword arguments that zero every source (latents, errors, embedding): what is left
    is the constant part of the frozen model (its biases), a small baseline to subtract from."""
    return {
        "values": [torch.zeros_like(a.act) for a in setup.active],  # unbatched: decoded once
        "errors": [torch.zeros_like(e) for e in setup.errors],
        "embed": torch.zeros_like(setup.embed),
    }


@torch.no_grad()
def source_z_deltas(rm: ReplacementModel, setup: Setup, writes: Sequence[Sequence[tuple]]) -> Tensor:
    """How every layer's hook_z moves when row b injects writes[b] (position, [(point, vector)]) into
    the full frozen model: [B, L, T, H, hd]. The frozen model is affine in what it is given, so this
    is z(sources off + writes[b]) - z(sources off), from one plain forward pass whose row 0 is the
    baseline (a forward-mode pass gives the same derivative at about 2.5x the cost)."""
    B, T, lm = len(writes), setup.n_pos, rm.lm
    inj = injection_points(rm, B + 1, T)
    for b, (pos, ws) in enumerate(writes):
        for point, vec in ws:
            inj[point][b + 1, pos] += vec
    z_layer = {z_site(L): L for L in range(lm.n_layers)}
    out: list[Tensor | None] = [None] * lm.n_layers

    def observe(name: str, x: Tensor) -> Tensor:
        if name in z_layer:
            out[z_layer[name]] = x[1:] - x[:1]
        return x

    rm.frozen(setup, batch=B + 1, inject=inj, observe=observe, **sources_off(setup))
    return torch.stack(out, 1)


def head_loadings(
    rm: ReplacementModel,
    graph: Graph,
    edges: Tensor,
    setup: Setup | None = None,
    batch_size: int = 64,
) -> HeadLoadings:
    """Split the edges [(target node, source node)] of `graph` (built by `attribute` on `rm`) into
    per-head terms and a no-hop term (see the module docstring)."""
    setup = setup or rm.setup(graph.input_ids)
    lm = rm.lm
    edges = edges.reshape(-1, 2).long().cpu()
    heads = torch.zeros(len(edges), lm.n_layers, lm.n_heads, dtype=torch.float64)
    no_hop = torch.zeros(len(edges), dtype=torch.float64)
    if len(edges) == 0:
        return HeadLoadings(heads, no_hop)
    tgt_nodes, tgt_of_edge = edges[:, 0].unique(return_inverse=True)
    src_nodes, src_of_edge = edges[:, 1].unique(return_inverse=True)
    # 1. per target: w_t at its position [L, H, hd] and the cut model's gradient at each injection point
    w_t, g_t, p_t = [], {}, []
    for c in range(0, len(tgt_nodes), batch_size):
        specs_pos = [target_of(rm, graph, int(n), setup) for n in tgt_nodes[c : c + batch_size]]
        g_z, g_inj = cut_gradients(rm, setup, [s for s, _ in specs_pos])
        pos = torch.tensor([p for _, p in specs_pos], device=rm.device)
        rows = torch.arange(len(pos), device=rm.device)
        w_t.append(g_z[rows, :, pos])  # [b, L, H, hd]
        for k, g in g_inj.items():
            g_t.setdefault(k, []).append(g[rows, pos])  # [b, d]
        p_t.append(pos)
    w = torch.cat(w_t)
    g_cut = {k: torch.cat(v) for k, v in g_t.items()}
    pos_t = torch.cat(p_t)
    # 2. per source batch: dz/ds at every layer and position, contracted with each edge's w_t at p_t
    for c in range(0, len(src_nodes), batch_size):
        writes = [writes_of(rm, graph, setup, int(n)) for n in src_nodes[c : c + batch_size]]
        dz = source_z_deltas(rm, setup, writes)  # [B, L, T, H, hd]
        e = ((src_of_edge >= c) & (src_of_edge < c + len(writes))).nonzero().flatten()
        b, t = (src_of_edge[e] - c).to(rm.device), tgt_of_edge[e].to(rm.device)
        heads[e] = (w[t] * dz[b, :, pos_t[t]]).sum(-1).double().cpu()  # [e, L, H]
        # no hop: the cut model's gradient at the source's own position (zero unless it is p_t)
        same = torch.tensor([p for p, _ in writes], device=rm.device)[b] == pos_t[t]
        nh = torch.zeros(len(e), dtype=w.dtype, device=rm.device)
        for point, g in g_cut.items():
            vec = torch.zeros(len(writes), g.shape[1], dtype=w.dtype, device=rm.device)
            for k, (_, ws) in enumerate(writes):
                for pt, v in ws:
                    if pt == point:
                        vec[k] += v
            nh += (g[t] * vec[b]).sum(-1)
        no_hop[e] = torch.where(same, nh, torch.zeros_like(nh)).double().cpu()
    return HeadLoadings(heads, no_hop)
