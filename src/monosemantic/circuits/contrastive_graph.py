"""Contrastive attribution graphs: node and edge effects of patching clean -> corrupted (SFC).

Nodes are the latents whose activation differs between the prompts (the `max_feature_nodes` with
the largest |effect|), one error node per (dictionary, position), one embedding node per position
and the metric m = logit[target] - logit[contrast]. A node's effect is attribution patching
Δa . dm/da (or integrated gradients, see `contrastive`). The edge u -> d is
    Δa_u * (dm/da_d) * (da_d/da_u),
with da_d/da_u the direct effect in the model linearised at the clean run (attention patterns, norm
scales and non-replaced MLPs frozen, the other latents held fixed: the attribution graph's Jacobian)
and dm/da_d the total-effect gradient at the clean point (averaged along the path for integrated
gradients). The edge u -> m is Δa_u times u's direct effect on m. Error and embedding nodes are
sources (Δ error or Δ embedding dotted with the same gradients). A latent inactive on the clean run
has da_d/d(pre-activation) = 0 there, so it only sends edges.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attribution import Graph, _Rows, dictionary_info
from .contrastive import ContrastiveResult, contrastive, same_length
from .replacement import ReplacementModel, Setup
from .targets import Target, _token_id


def _at(dense: list[Tensor], table: Tensor) -> Tensor:
    """Values of per-dictionary dense [T, d_sae] tensors at the (dictionary, pos, latent) rows of `table`."""
    out = dense[0].new_zeros(len(table))
    for i, x in enumerate(dense):
        sel = table[:, 0] == i
        out[sel] = x[table[sel, 1], table[sel, 2]]
    return out


def pick_tokens(
    rm: ReplacementModel, ids_c: Tensor, ids_x: Tensor, target: str | None, contrast: str | None
) -> tuple[int, int]:
    """Target/contrast token ids: the ones given, else the clean run's top token and, among the
    corrupted run's top 10 other than it, the one the corruption raises most (log-prob difference)."""
    lp = rm.plain_logits(torch.stack([ids_c, ids_x]))[:, -1].double().log_softmax(-1)
    t = _token_id(rm, target, "target_token") if target else int(lp[0].argmax())
    if contrast:
        return t, _token_id(rm, contrast, "contrast_token")
    top = [int(j) for j in lp[1].topk(11).indices if int(j) != t][:10]
    return t, max(top, key=lambda j: float(lp[1, j] - lp[0, j]))


def contrastive_graph(
    rm: ReplacementModel,
    clean: str,
    corrupted: str,
    target_token: str | None = None,
    contrast_token: str | None = None,
    steps: int = 0,
    max_feature_nodes: int = 4096,
    batch_size: int = 64,
) -> tuple[Graph, Tensor, ContrastiveResult]:
    """(graph, node effect [N], raw scores); `steps` > 0 uses integrated gradients."""
    ids_c, ids_x = same_length(rm, clean, corrupted)
    t, c = pick_tokens(rm, ids_c, ids_x, target_token, contrast_token)
    res = contrastive(rm, ids_c, ids_x, t, c, steps)
    use_ig = steps > 0
    f_score, e_score, emb_score = (
        (res.ig, res.ig_error, res.ig_embed) if use_ig else (res.atp, res.atp_error, res.atp_embed)
    )
    setup = rm.setup(ids_c)
    table, total_changed = _changed_latents(res, f_score, max_feature_nodes)
    A = _adjacency(rm, setup, res, table, res.grad_ig if use_ig else res.grad, t, c, batch_size)
    n_feat, N = len(table), len(A)
    effect = torch.zeros(N, dtype=torch.float64)
    effect[:n_feat] = _at(f_score, table).double().cpu()
    effect[n_feat : N - 1 - setup.n_pos] = torch.cat(e_score).double().cpu()
    effect[N - 1 - setup.n_pos : N - 1] = emb_score.double().cpu()
    effect[N - 1] = res.metric_corrupt - res.metric_clean
    meta = {
        "mode": "contrastive",
        "method": "integrated_gradients" if use_ig else "attribution_patching",
        "ig_steps": steps,
        "clean_prompt": clean,
        "corrupted_prompt": corrupted,
        "corrupted_tokens": [rm.token_str(int(x)) for x in ids_x],
        "metric": f"logit[{rm.token_str(t)}] - logit[{rm.token_str(c)}]",
        "metric_clean": res.metric_clean,
        "metric_corrupted": res.metric_corrupt,
    }
    return _graph(rm, setup, res, table, A, (clean, ids_c), (t, c), total_changed, meta), effect, res


def _changed_latents(res: ContrastiveResult, f_score: list[Tensor], max_nodes: int) -> tuple[Tensor, int]:
    """Rows (dictionary, pos, latent) of the latents whose activation differs between the runs, the
    `max_nodes` with the largest |effect| (a zero effect dropped), and how many differed in all."""
    cand, scores = [], []
    for i, (fc, fx) in enumerate(zip(res.acts_clean, res.acts_corrupt, strict=True)):
        p, k = (fc != fx).nonzero(as_tuple=True)
        cand.append(torch.stack([torch.full_like(p, i), p, k], 1))
        scores.append(f_score[i][p, k])
    table, sc = torch.cat(cand), torch.cat(scores)
    keep = sc.abs().argsort(descending=True)[:max_nodes]
    return table[keep[sc[keep] != 0]], len(table)


def _adjacency(
    rm: ReplacementModel,
    setup: Setup,
    res: ContrastiveResult,
    table: Tensor,
    grad: list[Tensor],
    t: int,
    c: int,
    batch_size: int,
) -> Tensor:
    """A [N, N] over (kept latents, errors per dictionary and position, embeddings, metric): rows are
    the metric and each kept latent active on the clean run, scaled by its total-effect gradient."""
    T, n_dict, n_feat = setup.n_pos, len(rm.spliced), len(table)
    N = n_feat + n_dict * T + T + 1
    A = torch.zeros(N, N, dtype=torch.float64)
    d_i, pos, idx = table.unbind(1)
    clean_act = _at(res.acts_clean, table)
    delta = _at(res.acts_corrupt, table) - clean_act
    rows = _Rows(rm, setup, batch_size)
    specs: list[tuple] = [("logit", rm.lm.W_U[:, t] - rm.lm.W_U[:, c])]
    row_nodes, row_scale = [N - 1], [torch.ones((), dtype=rm.dtype, device=rm.device)]
    for j in (clean_act != 0).nonzero().flatten().tolist():
        i, p, k = table[j].tolist()
        specs.append(rm.feature_spec(setup, i, p, int(table[j, 2])))
        row_nodes.append(j)
        row_scale.append(grad[i][p, k])
    for b in range(0, len(specs), batch_size):
        chunk = specs[b : b + batch_size]
        n = len(chunk)
        G = rows.grads(chunk)
        cols = torch.zeros(n, N - 1, dtype=rm.dtype, device=rm.device)
        for i, s in enumerate(rm.spliced):
            for j, W in s.sources:  # latents of dictionary j writing to this output (a CLT: several)
                sel = (d_i == j).nonzero().flatten()
                if len(sel):
                    g = G[s.hook_name_out][:n][:, pos[sel]]  # [n, m, d]
                    cols[:, sel] += torch.einsum("bmd,md->bm", g, W[idx[sel]]) * delta[sel]
            off = n_feat + i * T
            cols[:, off : off + T] = torch.einsum("btd,td->bt", G[s.hook_name_out][:n], res.delta_error[i])
        cols[:, N - 1 - T :] = torch.einsum("btd,td->bt", G["embed"][:n], res.delta_embed)
        scale = torch.stack(row_scale[b : b + n])[:, None]
        A[row_nodes[b : b + n], : N - 1] = (cols * scale).double().cpu()
    return A


def _graph(
    rm: ReplacementModel,
    setup: Setup,
    res: ContrastiveResult,
    table: Tensor,
    A: Tensor,
    prompt: tuple[str, Tensor],
    tokens: tuple[int, int],
    total_changed: int,
    meta: dict,
) -> Graph:
    """The graph of the clean prompt (text, ids), its single target the metric logit[t] - logit[c]."""
    (clean, ids_c), (t, c) = prompt, tokens
    T, n_dict = setup.n_pos, len(rm.spliced)
    d_i, pos, idx = table.unbind(1)
    layers = torch.tensor([s.layer for s in rm.spliced], device=table.device)
    weights = torch.zeros(len(A), dtype=torch.float64)
    weights[-1] = 1.0
    probs = torch.softmax(setup.logits[-1].double(), -1)
    target = Target("logit_diff", f"{rm.token_str(t)} - {rm.token_str(c)}", 1.0, t, c, prob=float(probs[t]))
    err_d = torch.arange(n_dict).repeat_interleave(T)
    return Graph(
        prompt=clean,
        input_ids=ids_c.cpu(),
        tokens=[rm.token_str(int(x)) for x in ids_c],
        features=torch.stack([d_i, layers[d_i], pos, idx], 1).cpu(),
        activations=_at(res.acts_clean, table).detach().float().cpu(),
        errors=torch.stack([err_d, layers.cpu()[err_d], torch.arange(T).repeat(n_dict)], 1),
        adjacency=A,
        target_weights=weights,
        targets=[target],
        dictionaries=dictionary_info(rm),
        n_layers=rm.lm.n_layers,
        total_active_features=total_changed,
        logits=setup.logits[-1].detach().cpu().float(),
        meta=meta,
    )
