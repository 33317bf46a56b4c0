"""Head loadings and QK attributions for a pruned graph's links, in graph.json's shape (DESIGN §6).

Every kept link gets `"heads": [{"layer", "head", "weight"}, ...]` (the heads with a non-zero term)
and `"no_hop": w`, with sum(heads) + no_hop == weight. The heads that carry each cross-position link
(those within `QK_SHARE` of its largest head term, at most `QK_HEADS_PER_LINK`) get a QK attribution
of their (query = target position, key = source position) pair, stored once per pair under the
graph's top-level `"qk"` list rather than in every link.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from .attribution import Graph
from .heads import head_loadings, node_position
from .pruning import PruneResult
from .qk import qk_terms
from .replacement import ReplacementModel, Setup

QK_SHARE = 0.2  # a head carries a link when its |term| is at least this share of the largest head's
QK_HEADS_PER_LINK = 3


def kept_links(graph: Graph, pruned: PruneResult) -> Tensor:
    """[n, 2] (target, source) of the links graph.json keeps: kept edges between kept nodes."""
    edges = pruned.edge_mask.nonzero()
    keep = pruned.node_mask[edges[:, 0]] & pruned.node_mask[edges[:, 1]]
    return edges[keep]


def qk_pairs(heads: Tensor, q: Tensor, k: Tensor) -> list[tuple[int, int, int, int]]:
    """The (layer, head, query, key) pairs whose QK attribution is worth computing, largest first:
    for each cross-position link (head terms [n, L, H], query = target position q, key = source
    position k) the heads that carry it (at most `QK_HEADS_PER_LINK`, each within `QK_SHARE` of its
    largest term), a pair ranked by the largest |term| it carries over the links."""
    mag = heads.abs().flatten(1)
    top = mag.topk(min(QK_HEADS_PER_LINK, mag.shape[1]), dim=1)
    keep = (top.values >= QK_SHARE * top.values[:, :1]) & (top.values > 0) & (q != k)[:, None]
    n, j = keep.nonzero().T
    i, H = top.indices[n, j], heads.shape[2]
    keys = torch.stack([i // H, i % H, q[n], k[n]], 1)
    if not len(keys):
        return []
    unique, inverse = keys.unique(dim=0, return_inverse=True)
    best = torch.zeros(len(unique), dtype=mag.dtype).scatter_reduce(0, inverse, top.values[n, j], "amax")
    return [tuple(p) for p in unique[best.argsort(descending=True, stable=True)].tolist()]


def _link_fields(heads: Tensor, no_hop: Tensor) -> list[dict]:
    """graph.json's per-link fields: the non-zero head terms and the no-hop term of each link."""
    out = [{"heads": [], "no_hop": v} for v in no_hop.tolist()]
    nz = heads.nonzero()
    for (n, L, h), w in zip(nz.tolist(), heads[tuple(nz.T)].tolist(), strict=True):
        out[n]["heads"].append({"layer": L, "head": h, "weight": w})
    return out


def annotate_heads(
    rm: ReplacementModel,
    graph: Graph,
    pruned: PruneResult,
    qk_top: int = 20,
    batch_size: int = 64,
    setup: Setup | None = None,
) -> tuple[dict[tuple[int, int], dict], list[dict], dict]:
    """(per-link fields keyed by (target, source) node, the QK entries, timings)."""
    setup = setup or rm.setup(graph.input_ids)
    t0 = time.perf_counter()
    links = kept_links(graph, pruned)
    hl = head_loadings(rm, graph, links, setup, batch_size)
    per_link = dict(zip(map(tuple, links.tolist()), _link_fields(hl.heads, hl.no_hop), strict=True))
    nodes = links.unique()
    pos = torch.zeros(int(nodes.max()) + 1 if len(nodes) else 0, dtype=torch.long)
    pos[nodes] = torch.tensor([node_position(graph, int(n)) for n in nodes], dtype=torch.long)
    ordered = qk_pairs(hl.heads, pos[links[:, 0]], pos[links[:, 1]])
    t1 = time.perf_counter()
    qk = [r.to_json(qk_top) for r in qk_terms(rm, setup, ordered)]
    timing = {"head_loadings_seconds": round(t1 - t0, 3), "qk_seconds": round(time.perf_counter() - t1, 3)}
    return per_link, qk, timing


def heads_metadata(rm: ReplacementModel) -> dict:
    """What graph.json's metadata says about the head loadings it carries."""
    return {
        "n_layers": rm.lm.n_layers,
        "n_heads": rm.lm.n_heads,
        "method": "last attention hop into the target's position, frozen patterns and norms "
        "(sum(heads) + no_hop == weight)",
        "qk": "score = scale * q . k before soft-capping, split into query x key component terms",
    }


def link_sum_error(per_link: dict[tuple[int, int], dict], A: Tensor) -> float:
    """The largest |sum(heads) + no_hop - weight| over the links (a self-check written to scores)."""
    worst = 0.0
    for (t, s), v in per_link.items():
        total = sum(h["weight"] for h in v["heads"]) + v["no_hop"]
        worst = max(worst, abs(total - float(A[t, s])))
    return worst
