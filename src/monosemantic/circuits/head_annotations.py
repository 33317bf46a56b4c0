"""Head loadings and QK attributions for a pruned graph's links, in graph.json's shape (DESIGN §6).

Every kept link gets `"heads": [{"layer", "head", "weight"}, ...]` (the heads with a non-zero term)
and `"no_hop": w`, with sum(heads) + no_hop == weight. The heads that carry each cross-position link
(those within `QK_SHARE` of its largest head term, at most `QK_HEADS_PER_LINK`) get a QK attribution
of their (query = target position, key = source position) pair, stored once per pair under the
graph's top-level `"qk"` list rather than in every link.
"""

from __future__ import annotations

import time

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


def _carriers(heads: Tensor) -> list[tuple[int, int]]:
    """The (layer, head) pairs that carry one link's head terms [L, H]."""
    mag = heads.abs().flatten()
    if float(mag.max()) == 0.0:
        return []
    order = mag.argsort(descending=True)[:QK_HEADS_PER_LINK]
    H = heads.shape[1]
    return [(int(i) // H, int(i) % H) for i in order if mag[i] >= QK_SHARE * mag.max()]


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
    per_link: dict[tuple[int, int], dict] = {}
    pairs: dict[tuple[int, int, int, int], float] = {}  # (L, h, q, k) -> the largest |term| it carries
    for n, (t, s) in enumerate(links.tolist()):
        nz = hl.heads[n].nonzero().tolist()
        per_link[(t, s)] = {
            "heads": [{"layer": L, "head": h, "weight": float(hl.heads[n, L, h])} for L, h in nz],
            "no_hop": float(hl.no_hop[n]),
        }
        q, k = node_position(graph, t), node_position(graph, s)
        if q == k:
            continue
        for L, h in _carriers(hl.heads[n]):
            key = (L, h, q, k)
            pairs[key] = max(pairs.get(key, 0.0), abs(float(hl.heads[n, L, h])))
    t1 = time.perf_counter()
    ordered = sorted(pairs, key=lambda p: -pairs[p])
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
