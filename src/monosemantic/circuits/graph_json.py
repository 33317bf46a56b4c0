"""Graphs as the JSON that Neuronpedia's and circuit-tracer's viewers read.

Top level: `metadata`, `qParams`, `nodes`, `links`. Node ids follow circuit-tracer: features
`{layer}_{feature}_{pos}`, error nodes `{layer}_-1_{pos}`, embeddings `E_{token_id}_{pos}`, logits
`{n_layers + 1}_{token_id}_{pos}`. When one layer holds several dictionaries (an SAE and a
transcoder, say) their feature indices are offset by the earlier dictionaries' widths and their
error nodes use -2, -3, ..., so ids stay unique and parse as three integers.

A feature node's `feature` field is the Cantor pairing of (layer, index), as circuit-tracer
writes it, so it is unique across layers (viewers key features on it); the raw latent index is
`feature_index`, its dictionary `dictionary`. Two deliberate differences from circuit-tracer:
embedding nodes carry the whole residual entering block 0 (token plus position embedding, for
models that have one), and features at the BOS position are kept as nodes unless
`circuit.zero_bos` is set.

With `circuit.expert_nodes`, each kept error node of a transcoder over a mixture-of-experts block is
listed as its selected experts' nodes instead (`feature_type` "mlp expert error", fields `expert`,
`expert_weight` and `error_node`, the id of the error node they split; node id `{layer}_{f}_{pos}`
with f = -(1000 (expert + 1) + slot + 1), still three integers), and each of its links as the
experts' parts, which sum to the link's weight (see expert_nodes.py).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from monosemantic.lm.sites import HOOK_NAMES

from .attribution import Graph
from .pruning import PruneResult
from .targets import Target


def feature_node_id(layer: int, feature: int, pos: int) -> str:
    return f"{layer}_{feature}_{pos}"


def feature_key(layer: int, index: int) -> int:
    """circuit-tracer's `feature` value: the Cantor pairing, one integer per (layer, index)."""
    return (layer + index) * (layer + index + 1) // 2 + index


def _clean(tok: str) -> str:
    return tok.replace("\n", "⏎")


def expert_node_feature(slot: int, expert: int) -> int:
    """The `feature` (and node id) field of an expert's error node: distinct from the error nodes'
    -1 - slot for fewer than 1000 dictionaries per layer."""
    return -(1000 * (expert + 1) + slot + 1)


def _expert_nodes(graph: Graph, nodes: dict) -> dict[int, list[tuple[int, dict]]]:
    """For each error node kept in `nodes` that is split by expert: (expert column, node) per part."""
    if graph.experts is None:
        return {}
    start, T = graph.slices()["errors"].start, graph.n_pos
    split: dict[int, list[tuple[int, dict]]] = {}
    for x, (d, layer, pos, expert) in enumerate(graph.experts.tolist()):
        j = start + d * T + pos  # errors are ordered by dictionary, then position
        if j not in nodes:
            continue
        err = nodes[j]
        info = graph.dictionaries[d]
        f, w = expert_node_feature(info["slot"], expert), float(graph.expert_weights[x])
        node = {
            **err,
            "node_id": f"{layer}_{f}_{pos}",
            "feature": f,
            "feature_type": "mlp expert error",
            "expert": expert,
            "expert_weight": w,
            "error_node": err["node_id"],
            "clerp": f"expert {expert} (weight {w:.3f}) part of the error of {info['name']} at {pos}",
        }
        node["jsNodeId"] = node["node_id"]
        split.setdefault(j, []).append((x, node))
    return split


def _feature_node(graph: Graph, j: int, describe: Callable[[int, int], dict] | None) -> dict:
    """Latent node j: id and `feature` from its layer and its index among the layer's latents."""
    d, layer, pos, idx = graph.features[j].tolist()
    info = graph.dictionaries[d]
    feat = info["offset"] + idx
    node = {
        "node_id": feature_node_id(layer, feat, pos),
        "feature": feature_key(layer, feat),
        "layer": str(layer),
        "ctx_idx": pos,
        "feature_type": _feature_type(info),
        "activation": float(graph.activations[j]),
        "dictionary": info["name"],
        "site": info["hook_name_out"],
        "feature_index": idx,
    }
    if any(t.kind == "feature" and t.feature == j for t in graph.targets):
        node["is_target_logit"] = True
    if describe is not None:
        node.update(describe(d, idx))
    return node


def _error_node(graph: Graph, e: int) -> dict:
    """Error node e: a dictionary's reconstruction error at a position (feature -1 - its slot)."""
    d, layer, pos = graph.errors[e].tolist()
    info = graph.dictionaries[d]
    return {
        "node_id": f"{layer}_{-1 - info['slot']}_{pos}",
        "feature": -1 - info["slot"],
        "layer": str(layer),
        "ctx_idx": pos,
        "feature_type": _error_type(info),
        "dictionary": info["name"],
        "site": info["hook_name_out"],
        "clerp": f"error of {info['name']} at {pos}",
    }


def _embedding_node(graph: Graph, pos: int) -> dict:
    tid = int(graph.input_ids[pos])
    return {
        "node_id": f"E_{tid}_{pos}",
        "feature": pos,
        "layer": "E",
        "ctx_idx": pos,
        "feature_type": "embedding",
        "clerp": f'Embedding "{_clean(graph.tokens[pos])}"',
    }


def _target_node(graph: Graph, t: Target, k: int) -> dict:
    """A logit, logit-difference or direction target, drawn in the logit row (`feature_type` "logit"
    so circuit-tracer's viewer draws it). A direction's id uses feature -1: no token has that id."""
    layer = str(graph.n_layers + 1)
    if t.kind == "direction":
        pos, feature, what = t.pos, -1, "Direction"
    else:
        pos, feature = graph.n_pos - 1, t.token_id
        what = "Output" if t.kind == "logit" else "Logit difference"
    prob = f" (p={t.prob:.3f})" if t.kind != "direction" else ""
    return {
        "node_id": f"{layer}_{feature}_{pos}",
        "feature": feature,
        "layer": layer,
        "ctx_idx": pos,
        "feature_type": "logit",
        "token_prob": t.prob,
        "is_target_logit": k == 0,
        "clerp": f'{what} "{_clean(t.label)}"{prob}',
        "influence": None,
    }


def _node(graph: Graph, j: int, describe: Callable[[int, int], dict] | None) -> dict:
    """Node j of the graph's order [features, errors, embeddings, logit targets]."""
    sl = graph.slices()
    if j < sl["features"].stop:
        return _feature_node(graph, j, describe)
    if j < sl["errors"].stop:
        return _error_node(graph, j - sl["errors"].start)
    if j < sl["embeddings"].stop:
        return _embedding_node(graph, j - sl["embeddings"].start)
    k = j - sl["logits"].start
    return _target_node(graph, [t for t in graph.targets if t.kind != "feature"][k], k)


def _metadata(graph: Graph, slug: str, scan: str, node_threshold: float | None) -> dict:
    return {
        "slug": slug,
        "scan": scan,
        "transcoder_list": [d["name"] for d in graph.dictionaries],
        "prompt_tokens": [_clean(t) for t in graph.tokens],
        "prompt": graph.prompt,
        "node_threshold": node_threshold,
        "schema_version": 1,
        "n_layers": graph.n_layers,
        "targets": [
            {
                "kind": t.kind,
                "label": t.label,
                "token_id": t.token_id,
                "contrast_id": t.contrast_id,
                "prob": t.prob,
                "weight": t.weight,
                **({"site": t.site, "pos": t.pos} if t.kind == "direction" else {}),
            }
            for t in graph.targets
        ],
        # each with the sites it reads and writes (hook_name, hook_name_out)
        "dictionaries": graph.dictionaries,
        "hook_names": HOOK_NAMES,  # those site names mean exactly what TransformerLens means
        "total_active_features": graph.total_active_features,
        "expert_nodes": graph.experts is not None,
        "attributed_features": graph.n_features,
        **graph.meta,
    }


def graph_to_json(
    graph: Graph,
    pruned: PruneResult,
    slug: str = "circuit",
    scan: str = "monosemantic",
    node_threshold: float | None = None,
    describe: Callable[[int, int], dict] | None = None,
    node_values: dict[str, Tensor] | None = None,
    link_values: dict[tuple[int, int], dict] | None = None,
) -> dict:
    """The pruned graph as a JSON-able dict. `describe(dictionary, latent)` supplies clerp/examples;
    `node_values` adds per-node fields (name -> [N] tensor, e.g. contrastive node effects);
    `link_values` per-link fields keyed by (target, source) node (e.g. head loadings)."""
    nodes: dict[int, dict] = {}
    for j in pruned.node_mask.nonzero().flatten().tolist():
        base = {
            "influence": float(pruned.cumulative[j]),
            "run_idx": 0,
            "reverse_ctx_idx": 0,
            "clerp": "",
            "token_prob": 0.0,
            "is_target_logit": False,
            "activation": None,
        }
        node = {**base, **_node(graph, j, describe)}
        for key, vals in (node_values or {}).items():
            node[key] = float(vals[j])
        node["jsNodeId"] = node["node_id"]
        nodes[j] = node
    A = graph.adjacency
    split = _expert_nodes(graph, nodes)  # error node j -> [(expert column, its node)]
    links = []
    for tgt, src in pruned.edge_mask.nonzero().tolist():
        if src in nodes and tgt in nodes:
            parts = split.get(src, [(None, nodes[src])])
            for x, node in parts:
                w = A[tgt, src] if x is None else graph.expert_adjacency[tgt, x]
                extra = (link_values or {}).get((tgt, src), {}) if x is None else {}
                links.append(
                    {"source": node["node_id"], "target": nodes[tgt]["node_id"], "weight": float(w), **extra}
                )
    for j, parts in split.items():  # the experts' nodes stand in for the error node they split
        del nodes[j]
        nodes.update({("x", x): node for x, node in parts})
    used = {x for link in links for x in (link["source"], link["target"])}
    keep = [
        n
        for n in nodes.values()
        if n["node_id"] in used or n["feature_type"] in ("embedding", "logit") or n["is_target_logit"]
    ]
    metadata = _metadata(graph, slug, scan, node_threshold)
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": keep, "links": links}


def _feature_type(info: dict) -> str:
    """circuit-tracer's feature_type strings; a Lorsa head (attention replaced) is "lorsa"."""
    if info.get("attention"):
        return "lorsa"
    return "cross layer transcoder" if info["transcoder"] else "sparse autoencoder"


def _error_type(info: dict) -> str:
    if info.get("attention"):
        return "attention reconstruction error"
    return "mlp reconstruction error" if info["transcoder"] else "sae reconstruction error"
