"""What an attribution graph explains: top logits, one token, a logit difference, or a feature.

Logit targets are demeaned (logit minus the mean logit), as in circuit-tracer, so a direction that
raises every logit equally explains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monosemantic.utils.errors import MonosemanticError

from .replacement import ReplacementModel, Setup


@dataclass
class Target:
    """What the graph explains: a (demeaned) logit, a logit difference, or a feature pre-activation."""

    kind: str  # "logit" | "logit_diff" | "feature"
    label: str
    weight: float
    token_id: int | None = None
    contrast_id: int | None = None
    prob: float = 0.0
    feature: int | None = None  # index into the active-feature table (feature targets)


def _token_id(rm: ReplacementModel, token: str, what: str) -> int:
    ids = rm.tokenizer(token, add_special_tokens=False).input_ids if rm.tokenizer else []
    if len(ids) != 1:
        ids2 = rm.tokenizer(" " + token.lstrip(), add_special_tokens=False).input_ids if rm.tokenizer else []
        if len(ids2) != 1:
            raise MonosemanticError(
                f"{what} {token!r} is not a single token ({len(ids)} tokens); pick one token"
            )
        ids = ids2
    return int(ids[0])


def parse_feature_id(rm: ReplacementModel, setup: Setup, node_id: str) -> tuple[int, int]:
    """'L_feat_pos' (the node id in graph.json) -> (dictionary index, active-entry index)."""
    try:
        layer, feat, pos = (int(x) for x in node_id.split("_"))
    except ValueError:
        raise MonosemanticError(
            f"target feature {node_id!r} must look like LAYER_FEATURE_POS, e.g. 1_123_4"
        ) from None
    for i, s in enumerate(rm.spliced):
        if s.layer == layer and s.offset <= feat < s.offset + int(s.dic.cfg.d_sae):
            a = setup.active[i]
            hit = ((a.pos == pos) & (a.idx == feat - s.offset)).nonzero().flatten()
            if len(hit):
                return i, int(hit[0])
    raise MonosemanticError(f"feature {node_id} is not active on this prompt; target an active feature")


def select_targets(
    rm: ReplacementModel,
    setup: Setup,
    target: str = "top_logits",
    target_token: str | None = None,
    contrast_token: str | None = None,
    target_feature: str | None = None,
    max_logit_prob: float = 0.95,
    max_n_logits: int = 10,
) -> list[Target]:
    logits = setup.logits[-1].double()
    probs = torch.softmax(logits, -1)
    if target == "top_logits":
        top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
        keep = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(max_logit_prob, dtype=top_p.dtype))) + 1
        return [
            Target("logit", rm.token_str(i), float(p), int(i), prob=float(p))
            for p, i in zip(top_p[:keep].tolist(), top_i[:keep].tolist(), strict=False)
        ]
    if target == "token":
        if not target_token:
            raise MonosemanticError("circuit.target = 'token' needs circuit.target_token")
        t = _token_id(rm, target_token, "target_token")
        return [Target("logit", rm.token_str(t), 1.0, t, prob=float(probs[t]))]
    if target == "logit_diff":
        if not target_token or not contrast_token:
            raise MonosemanticError(
                "circuit.target = 'logit_diff' needs circuit.target_token and circuit.contrast_token"
            )
        t, c = _token_id(rm, target_token, "target_token"), _token_id(rm, contrast_token, "contrast_token")
        label = f"{rm.token_str(t)} - {rm.token_str(c)}"
        return [Target("logit_diff", label, 1.0, t, c, prob=float(probs[t]))]
    if target == "feature":
        if not target_feature:
            raise MonosemanticError(
                "circuit.target = 'feature' needs circuit.target_feature (LAYER_FEATURE_POS)"
            )
        i, j = parse_feature_id(rm, setup, target_feature)
        offset = sum(len(a.pos) for a in setup.active[:i])
        return [Target("feature", target_feature, 1.0, feature=offset + j)]
    raise MonosemanticError(
        f"unknown circuit target {target!r}; use top_logits, token, logit_diff or feature"
    )
