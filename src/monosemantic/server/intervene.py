"""Interventions from a stored attribution graph: ablate, clamp (set), scale or add to feature nodes
and compare the top next-token logits before and after, as circuit-tracer's and Neuronpedia's
viewers let a reader do.

The graph names its dictionaries (`metadata.dictionaries`, a CLT as one view per layer, `name/L3`)
and each feature node its dictionary, latent index and position; the server splices the same
checkpoints (by name, from the feature store) into a `ReplacementModel` and runs
`circuits.interventions.intervene` on the graph's prompt, in one of two models:

- "free": the replacement model run freely; attention, norms and every feature downstream respond
  (with no edit it is exactly the subject model).
- "frozen": attention patterns held at the clean prompt's (circuit-tracer's constrained
  intervention), so only the non-attention paths carry the edit's effect; norms, MLPs and
  downstream features are still recomputed.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from monosemantic.circuits.interventions import Intervention, intervene
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.utils.errors import MonosemanticError

MODELS = {
    "free": "free replacement model: attention, norms and downstream features all respond to the edit",
    "frozen": "frozen attention: the clean prompt's attention patterns held (circuit-tracer's constrained "
    "intervention); norms, MLPs and downstream features recomputed",
}
_VIEW = re.compile(r"^(.*)/L\d+$")  # a CLT's per-layer view in the graph: checkpoint name / L<layer>


def checkpoint_names(graph: dict[str, Any], known: set[str]) -> list[str]:
    """The checkpoints a graph's dictionaries come from, by store name, in order of appearance."""
    names: list[str] = []
    for d in graph.get("metadata", {}).get("dictionaries") or []:
        name = str(d.get("name"))
        if name not in known and (m := _VIEW.match(name)) is not None and m.group(1) in known:
            name = m.group(1)
        if name not in known:
            raise MonosemanticError(
                f"the graph's dictionary {name!r} is not in the feature store; interventions splice the "
                "graph's own checkpoints, so analyze them into this store (or trace the prompt again here)"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise MonosemanticError("this graph names no dictionaries (metadata.dictionaries); trace it again")
    return names


def _interventions(graph: dict[str, Any], items: list[Any]) -> list[Intervention]:
    nodes = {n["node_id"]: n for n in graph.get("nodes", [])}
    out = []
    for it in items:
        n = nodes.get(it.node_id)
        if n is None:
            raise MonosemanticError(f"no node {it.node_id!r} in this graph")
        if (
            n.get("dictionary") is None
            or n.get("feature_index") is None
            or "error" in str(n.get("feature_type"))
        ):
            raise MonosemanticError(
                f"node {it.node_id} is a {n.get('feature_type')} node; only feature nodes can be ablated, "
                "clamped or scaled"
            )
        out.append(
            Intervention(
                n["dictionary"], int(n["feature_index"]), it.mode, float(it.value), [int(n["ctx_idx"])]
            )
        )
    return out


def _top(probs: torch.Tensor, logits: torch.Tensor, k: int, show: Any) -> list[dict[str, Any]]:
    p, i = probs.topk(k)
    return [
        {"id": int(t), "token": show(int(t)), "prob": round(float(v), 6), "logit": round(float(logits[t]), 4)}
        for v, t in zip(p, i, strict=True)
    ]


def run_graph_intervention(
    rm: ReplacementModel, graph: dict[str, Any], items: list[Any], model: str, top: int
) -> dict[str, Any]:
    """Top next-token logits at the graph's last position, original and under the interventions."""
    if model not in MODELS:
        raise MonosemanticError(f"model {model!r}; use one of {', '.join(MODELS)}")
    meta = graph.get("metadata", {})
    ivs = _interventions(graph, items)
    ids = rm.tokenize(meta.get("prompt") or "")
    want = len(meta.get("prompt_tokens") or [])
    if want and ids.numel() != want:
        raise MonosemanticError(
            f"the graph's prompt tokenizes to {ids.numel()} tokens here but the graph has {want}; "
            "it was traced with another tokenizer: trace it again"
        )
    clean, edited = intervene(rm, ids, ivs, freeze_attention=model == "frozen")
    a, b = clean[-1].double().cpu(), edited[-1].double().cpu()
    pa, pb = torch.softmax(a, -1), torch.softmax(b, -1)
    kl = float((pa * (torch.log_softmax(a, -1) - torch.log_softmax(b, -1))).sum())
    targets = [
        {"label": t.get("label"), "token_id": int(t["token_id"]), "clean_prob": round(float(pa[int(t["token_id"])]), 6),
         "prob": round(float(pb[int(t["token_id"])]), 6), "clean_logit": round(float(a[int(t["token_id"])]), 4),
         "logit": round(float(b[int(t["token_id"])]), 4)}
        for t in meta.get("targets") or [] if t.get("token_id") is not None and 0 <= int(t["token_id"]) < a.numel()
    ]  # fmt: skip
    return {
        "model": model,
        "label": MODELS[model],
        "position": int(ids.numel() - 1),
        "token": rm.token_str(int(ids[-1])),
        "interventions": [{"node_id": it.node_id, "mode": it.mode, "value": it.value} for it in items],
        "original": _top(pa, a, top, rm.token_str),
        "intervened": _top(pb, b, top, rm.token_str),
        "targets": targets,
        "kl": float(f"{kl:.4g}") if math.isfinite(kl) else None,
    }
