"""Ablation-discovery graphs: edges are measured changes, not gradients.

Nodes are the active latents of the prompt (at most `max_feature_nodes`; when there are more, the
ones whose ablation the gradient estimates (fill - a) . dm/da to move the metric most), the
embeddings (context only) and the target metric. Each node is ablated in turn (zero or mean) in
the replacement model run freely; the edge s -> t is t's clean activation minus its activation with
s ablated (a total effect, through every path), the edge s -> metric the drop of the metric.
"""

from __future__ import annotations

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

from .ablation_discovery import AblationResult, ablation_discovery
from .attribution import Graph, dictionary_info
from .contrastive import _capture, _site_grads
from .replacement import ReplacementModel
from .targets import Target, select_targets


def target_metric(t: Target):
    """Last-position logits [B, V] -> [B] for a logit or logit-difference target (demeaned logit)."""
    if t.kind == "logit_diff":
        return lambda lg: lg[..., t.token_id] - lg[..., t.contrast_id]
    return lambda lg: lg[..., t.token_id] - lg.mean(-1)


def _estimate(rm: ReplacementModel, ids: Tensor, metric, means: list[Tensor] | None) -> list[Tensor]:
    """Per dictionary [T, d_sae]: the first-order estimate of each latent's ablation effect."""
    f_c, e_c, _, _ = _capture(rm, ids)
    out = []
    for i in range(len(rm.spliced)):
        g, _ = _site_grads(rm, ids, i, f_c[i][None], e_c[i][None], metric)
        fill = 0.0 if means is None else means[i]
        out.append(((f_c[i] - fill) * g[0]).detach().abs() * (f_c[i] != 0))
    return out


def ablation_graph(
    rm: ReplacementModel,
    prompt: str,
    target: str = "top_logits",
    target_token: str | None = None,
    contrast_token: str | None = None,
    max_feature_nodes: int = 4096,
    means: list[Tensor] | None = None,
    batch_size: int = 32,
    max_logit_prob: float = 0.95,
    max_n_logits: int = 10,
    show_progress: bool = True,
) -> tuple[Graph, AblationResult]:
    """Ablate the prompt's active latents (mean ablation with `means`, else zero) and build the graph.

    The metric is the first target (top logit, token or logit difference), demeaned as in attribution.
    """
    if target == "feature":
        raise MonosemanticError(
            "circuit.method = 'ablation' explains a logit; use target top_logits, token or logit_diff"
        )
    ids = rm.tokenize(prompt)
    setup = rm.setup(ids)
    t0 = select_targets(rm, setup, target, target_token, contrast_token, None, max_logit_prob, max_n_logits)[
        0
    ]
    t0.weight = 1.0
    metric = target_metric(t0)
    n_active = sum(len(a.pos) for a in setup.active)
    sources = None
    if n_active > max_feature_nodes:
        est = _estimate(rm, ids, metric, means)
        flat = torch.cat([e[a.pos, a.idx] for e, a in zip(est, setup.active, strict=True)])
        sources = flat.argsort(descending=True)[:max_feature_nodes].sort().values.cpu()
    res = ablation_discovery(rm, ids, metric, means, batch_size, show_progress, sources)
    src = res.sources
    m, T = len(src), setup.n_pos
    N = m + T + 1
    A = torch.zeros(N, N, dtype=torch.float64)
    E = res.effects[src].double()  # [m targets, m sources]
    E.fill_diagonal_(0)  # a latent's own ablation is not an edge
    A[:m, :m] = E
    A[N - 1, :m] = res.metric_effects.double()
    weights = torch.zeros(N, dtype=torch.float64)
    weights[N - 1] = 1.0
    layers = torch.tensor([s.layer for s in rm.spliced])
    d_i, pos, idx = res.features[src].unbind(1)
    graph = Graph(
        prompt=prompt,
        input_ids=ids.cpu(),
        tokens=[rm.token_str(int(x)) for x in ids],
        features=torch.stack([d_i, layers[d_i], pos, idx], 1),
        activations=res.activations[src].float(),
        errors=torch.zeros(0, 3, dtype=torch.long),
        adjacency=A,
        target_weights=weights,
        targets=[t0],
        dictionaries=dictionary_info(rm),
        n_layers=rm.lm.n_layers,
        total_active_features=n_active,
        logits=setup.logits[-1].detach().cpu().float(),
        meta={
            "mode": "ablation",
            "ablation": "mean" if means is not None else "zero",
            "metric_clean": res.metric_clean,
            "ablated_features": m,
        },
    )
    return graph, res
