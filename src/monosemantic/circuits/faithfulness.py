"""How much of the model a graph explains.

- replacement score (circuit-tracer): of the influence that reaches the targets from the
  embeddings and error nodes, the fraction that comes from embeddings (i.e. through features);
- completeness score: the influence-weighted fraction of every node's input that is not error;
- ablation faithfulness (Sparse Feature Circuits): run the replacement model freely with every
  feature and error node outside the circuit ablated (zero or mean) and report
  (m(C) - m(empty)) / (m(M) - m(empty)) for the target metric m.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .attribution import Graph
from .pruning import nonzero_rows, normalize_matrix, row_influence
from .replacement import ReplacementModel

ABLATION_FAITHFULNESS = (
    "(m(circuit) - m(empty)) / (m(full) - m(empty)) for the target metric m (target logit minus the mean "
    "logit, the logit difference, the target feature's pre-activation or the direction's value), with every feature and error node outside the circuit ablated "
    "(zero or mean) in a free run of the replacement model. 1 means the circuit alone moves the metric as "
    "much as the whole model; it exceeds 1 when the ablated nodes, taken together, pushed the metric the "
    "other way (e.g. features that suppress the target token), and is below 0 when the circuit alone moves "
    "it the wrong way."
)


def graph_scores(graph: Graph, node_mask: Tensor | None = None) -> tuple[float, float]:
    """(replacement_score, completeness_score); with `node_mask`, on the pruned graph."""
    A, w = graph.adjacency, graph.target_weights
    rows = nonzero_rows(A)
    Ar = A[rows]  # [R, N]: error and embedding rows are zero (see pruning)
    if node_mask is not None:
        Ar[~node_mask[rows]] = 0
        Ar[:, ~node_mask] = 0
    sl = graph.slices()
    has_input_r = Ar.abs().sum(-1) > 0
    An = normalize_matrix(Ar)
    infl = row_influence(An, rows, w)
    tok, err = infl[sl["embeddings"]].sum(), infl[sl["errors"]].sum()
    replacement = float(tok / (tok + err)) if tok + err > 0 else 0.0
    non_error = torch.ones_like(w)
    non_error[rows] = torch.where(
        has_input_r, 1 - An[:, sl["errors"]].sum(-1), torch.ones_like(has_input_r, dtype=w.dtype)
    )
    out = infl + w
    completeness = float((non_error * out).sum() / out.sum()) if out.sum() > 0 else 0.0
    return replacement, completeness


def metric(graph: Graph, logits: Tensor) -> Tensor:
    """A logit target's value per batch row from logits [B, vocab] at the last position."""
    t = graph.targets[0]
    if t.kind == "logit_diff":
        return logits[:, t.token_id] - logits[:, t.contrast_id]
    return logits[:, t.token_id] - logits.mean(-1)


def free_metric(rm: ReplacementModel, graph: Graph, ids: Tensor, edit, edit_error) -> Tensor:
    """The first target's value per batch row in a free run of the replacement model with these
    edits: a logit (difference), a direction read at its site, or a feature's pre-activation (its
    encoder direction . input; the encoder bias would cancel in every difference of the metric)."""
    t = graph.targets[0]
    if t.kind == "direction":
        site, vec = t.site, t.vector
    elif t.kind == "feature":
        d, _, pos, idx = graph.features[t.feature].tolist()
        site, vec = (
            rm.spliced[d].hook_name,
            rm.spliced[d].encoder_dirs(torch.tensor([idx], device=rm.device))[0],
        )
    else:
        return metric(graph, rm.free(ids, edit=edit, edit_error=edit_error)[:, -1].double())
    pos = t.pos if t.kind == "direction" else pos
    seen: dict[str, Tensor] = {}

    def observe(name: str, x: Tensor) -> Tensor:
        if name == site:
            seen[name] = x
        return x

    rm.free(ids, edit=edit, edit_error=edit_error, observe=observe)
    return (seen[site][:, pos] @ vec.to(seen[site].dtype)).double()


def feature_means(
    rm: ReplacementModel, cache_dir: str | Path | None, max_sequences: int = 64
) -> tuple[list[Tensor], list[Tensor]] | None:
    """Mean latent activations and mean errors of each dictionary over an activation cache.

    Returns None when no cache holds the sites the dictionaries read and write.
    """
    if cache_dir is None or not Path(cache_dir).is_dir():
        return None
    try:
        from monosemantic.activations.cache import ActivationCache

        cache = ActivationCache(cache_dir)
    except Exception:  # a missing or unreadable cache means "no means": fall back to zero ablation
        return None
    sites = sorted({s.hook_name for s in rm.spliced} | {s.hook_name_out for s in rm.spliced})
    if any(site not in cache.sites for site in sites):
        return None
    sums_f = [torch.zeros(int(s.dic.cfg.d_sae), dtype=torch.float64) for s in rm.spliced]
    sums_e = [torch.zeros(int(s.dic.cfg.d_out), dtype=torch.float64) for s in rm.spliced]
    n = 0
    with torch.no_grad():
        for batch in cache.iter_sequences(sites, 16):
            keep = cache.keep_mask(batch["tokens"], batch.get("roles"))
            x_in = [batch[s.hook_name][keep].to(rm.device, rm.dtype) for s in rm.spliced]
            fs = [s.dic.encode(x) for s, x in zip(rm.spliced, x_in, strict=True)]
            for i, s in enumerate(rm.spliced):
                x_out = batch[s.hook_name_out][keep].to(rm.device, rm.dtype)
                sums_f[i] += fs[i].double().sum(0).cpu()
                sums_e[i] += (x_out - rm.decode(i, fs, x_in[i])).double().sum(0).cpu()
            n += int(keep.sum())
            if n >= max_sequences * batch["tokens"].shape[1]:
                break
    if n == 0:
        return None
    return [(f / n).to(rm.device, rm.dtype) for f in sums_f], [
        (e / n).to(rm.device, rm.dtype) for e in sums_e
    ]


def circuit_masks(rm: ReplacementModel, graph: Graph, node_mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per dictionary: bool [T, d_sae] of latents in the circuit, bool [T] of error nodes in it."""
    T = graph.n_pos
    feats = [torch.zeros(T, int(s.dic.cfg.d_sae), dtype=torch.bool, device=rm.device) for s in rm.spliced]
    errs = [torch.zeros(T, dtype=torch.bool, device=rm.device) for _ in rm.spliced]
    sl = graph.slices()
    for j in node_mask[sl["features"]].nonzero().flatten().tolist():
        d, _, p, idx = graph.features[j].tolist()
        feats[d][p, idx] = True
    for j in node_mask[sl["errors"]].nonzero().flatten().tolist():
        d, _, p = graph.errors[j].tolist()
        errs[d][p] = True
    return feats, errs


# (m(C) - m(empty)) / (m(full) - m(empty)) is only a score when the full and empty circuits really
# differ: with a gap under this fraction of |m| (seen: -275.7) the ratio amplifies noise.
ILL_CONDITIONED_GAP = 0.05


def faithfulness_ratio(m_full: float, m_circ: float, m_empty: float) -> tuple[float | None, str | None]:
    """(ratio, None), or (None, why) when the ratio is ill-conditioned."""
    gap = m_full - m_empty
    scale = max(abs(m_full), abs(m_circ), abs(m_empty))
    if abs(gap) <= max(ILL_CONDITIONED_GAP * scale, 1e-12):
        return None, (
            f"ill-conditioned: m(full) - m(empty) = {gap:.3g} is under {ILL_CONDITIONED_GAP:.0%} of "
            f"|m| = {scale:.3g}, so the ratio would amplify noise (m(circuit) = {m_circ:.4g})"
        )
    return (m_circ - m_empty) / gap, None


@torch.no_grad()
def ablation_faithfulness(
    rm: ReplacementModel,
    graph: Graph,
    node_mask: Tensor,
    means: tuple[list[Tensor], list[Tensor]] | None = None,
    keep_errors: bool = False,
) -> dict:
    """m(M), m(C), m(empty) and the kept fraction, ablating with `means` (None: zero).

    `keep_errors` leaves every error term in place (for graphs without error nodes).
    """
    feats, errs = circuit_masks(rm, graph, node_mask)
    if keep_errors:
        errs = [torch.ones_like(e) for e in errs]
    ones_f = [torch.ones_like(f) for f in feats]
    ones_e = [torch.ones_like(e) for e in errs]
    zeros_f = [torch.zeros_like(f) for f in feats]
    zeros_e = [torch.ones_like(e) if keep_errors else torch.zeros_like(e) for e in errs]
    # batch rows: full model, circuit, empty circuit
    keep_f = [torch.stack(x) for x in zip(ones_f, feats, zeros_f, strict=False)]
    keep_e = [torch.stack(x) for x in zip(ones_e, errs, zeros_e, strict=False)]

    def edit(i: int, f: Tensor) -> Tensor:
        fill = means[0][i] if means is not None else torch.zeros_like(f[0, 0])
        return torch.where(keep_f[i], f, fill)

    def edit_error(i: int, e: Tensor) -> Tensor:
        fill = means[1][i] if means is not None else torch.zeros_like(e[0, 0])
        return torch.where(keep_e[i][..., None], e, fill)

    ids = graph.input_ids.to(rm.device)[None].expand(3, -1)
    m_full, m_circ, m_empty = free_metric(rm, graph, ids, edit, edit_error).tolist()
    frac, note = faithfulness_ratio(m_full, m_circ, m_empty)
    return {
        "ablation_faithfulness": frac,
        "ablation_faithfulness_ill_conditioned": frac is None,
        **({"ablation_faithfulness_note": note} if note else {}),
        "metric_full": m_full,
        "metric_circuit": m_circ,
        "metric_empty": m_empty,
        "ablation": "mean" if means is not None else "zero",
        "circuit_features": int(sum(int(f.sum()) for f in feats)),
        "circuit_error_nodes": int(sum(int(e.sum()) for e in errs)),
    }
