"""What an attribution graph explains: top logits, one token, a logit difference, a feature, or a
residual-stream direction.

Logit targets are demeaned (logit minus the mean logit), as in circuit-tracer, so a direction that
raises every logit equally explains nothing. A direction target is `direction . resid` at
`blocks.{layer}.hook_resid_post` and one position, read from a safetensors file (`load_direction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from monosemantic.utils.errors import ConfigError, MonosemanticError

from .replacement import ReplacementModel, Setup


@dataclass
class Target:
    """What the graph explains: a (demeaned) logit, a logit difference, or a feature pre-activation."""

    kind: str  # "logit" | "logit_diff" | "feature" | "direction"
    label: str
    weight: float
    token_id: int | None = None
    contrast_id: int | None = None
    prob: float = 0.0
    feature: int | None = None  # index into the active-feature table (feature targets)
    vector: Tensor | None = None  # direction targets: the direction [d_model] ...
    site: str | None = None  # ... read at this site (blocks.{layer}.hook_resid_post) ...
    pos: int | None = None  # ... at this position (non-negative)


@dataclass
class Direction:
    """A residual-stream direction to explain: `vector . blocks.{layer}.hook_resid_post[position]`."""

    vector: Tensor  # [d_model]
    layer: int
    position: int  # negative counts from the end of the prompt
    name: str

    @property
    def site(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


def load_direction(path: str | Path, layer: int | None = None, position: int | None = None) -> Direction:
    """Read a direction file: a safetensors file with one tensor `direction` [d_model] whose optional
    metadata `layer` and `position` say where it is read (`circuit.target_layer` /
    `circuit.target_position` override them; the position defaults to the last token). Write one with
    `safetensors.torch.save_file({"direction": v}, path, metadata={"layer": "2", "position": "-1"})`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    fix = "save one with safetensors.torch.save_file({'direction': v}, path, metadata={'layer': '2'})"
    if not path.is_file():
        raise ConfigError(f"circuit.target_direction: no file at {path}; {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys, meta = list(f.keys()), f.metadata() or {}
            vec = f.get_tensor("direction") if "direction" in keys else None
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(
            f"circuit.target_direction: {path} is not a safetensors file ({e}); {fix}"
        ) from None
    if vec is None:
        raise ConfigError(
            f"circuit.target_direction: {path} has no tensor 'direction' (it has {keys}); {fix}"
        )
    if vec.ndim != 1 or not vec.is_floating_point():
        raise ConfigError(
            f"circuit.target_direction: 'direction' in {path} must be a float vector [d_model], "
            f"not {vec.dtype} {list(vec.shape)}"
        )
    if not bool(torch.isfinite(vec).all()) or float(vec.abs().max()) == 0.0:
        raise ConfigError(f"circuit.target_direction: 'direction' in {path} is zero or not finite")

    def meta_int(key: str, given: int | None) -> int | None:
        if given is not None:
            return given
        if key not in meta:
            return None
        try:
            return int(meta[key])
        except ValueError:
            raise ConfigError(
                f"circuit.target_direction: metadata {key}={meta[key]!r} in {path} is no integer"
            ) from None

    layer = meta_int("layer", layer)
    if layer is None:
        raise ConfigError(
            f"circuit.target_direction: no layer for {path}; set circuit.target_layer or the file's metadata 'layer'"
        )
    pos = meta_int("position", position)
    return Direction(vec, layer, -1 if pos is None else pos, path.stem)


def direction_target(rm: ReplacementModel, setup: Setup, d: Direction) -> Target:
    """The direction as a target, checked against the model (width, layer, prompt length)."""
    lm, T = rm.lm, setup.n_pos
    if d.vector.shape[0] != lm.d_model:
        raise ConfigError(
            f"circuit.target_direction {d.name!r} has {d.vector.shape[0]} entries; the model's residual has {lm.d_model}"
        )
    if not 0 <= d.layer < lm.n_layers:
        raise ConfigError(f"circuit.target_layer = {d.layer}; the model has layers 0..{lm.n_layers - 1}")
    if not -T <= d.position < T:
        raise ConfigError(f"circuit.target_position = {d.position}; the prompt has {T} tokens")
    pos = d.position % T
    label = f"{d.name} @ L{d.layer} pos {pos}"
    vec = d.vector.to(device=rm.device, dtype=rm.dtype)
    return Target("direction", label, 1.0, vector=vec, site=d.site, pos=pos)


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
    target_direction: Direction | None = None,
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
    if target == "direction":
        if target_direction is None:
            raise MonosemanticError(
                "circuit.target = 'direction' needs circuit.target_direction (a safetensors file)"
            )
        return [direction_target(rm, setup, target_direction)]
    raise MonosemanticError(
        f"unknown circuit target {target!r}; use top_logits, token, logit_diff, feature or direction"
    )
