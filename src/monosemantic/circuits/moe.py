"""Mixtures of experts in the functional forward pass: the router's choices held like attention patterns.

A MoE block sends each token to its router's top-k experts and sums their outputs weighted by the
router's weights. `record` stores the choices (top-k indices and weights) and each selected expert's
activation gates; `frozen` reuses them, so the block is linear in its input: the selection and the
weights are constants, and each selected expert is a linear map (gate held). The plain and record
passes call HF's own router and experts modules, so their output is the model's exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .forward import Freeze, FunctionalLM


def route(lm: FunctionalLM, mlp: nn.Module, flat: Tensor) -> tuple[Tensor, Tensor]:
    """(weights [N, k], indices [N, k]) from the family's router module, exactly as the model routes."""
    router = mlp.get_submodule(lm.family.moe.router)
    _, weights, indices = router(flat)
    return weights, indices


def _expert(
    lm: FunctionalLM, experts: nn.Module, e: int, x: Tensor, gate: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Expert e on rows x [n, d]: (output [n, d], its activation gates); `gate` given: held (linear)."""
    if lm.family.moe.expert == "gpt_oss":  # x W + b, gate/up interleaved, clamped SwiGLU with (up + 1)
        gu = x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
        g, up = gu[..., ::2], gu[..., 1::2]
        if gate is None:
            g = g.clamp(max=experts.limit)
            gate = g * torch.sigmoid(g * experts.alpha)
            up = up.clamp(min=-experts.limit, max=experts.limit)
        else:  # held: the clamp of up keeps its clean mask (clamped entries are constants)
            gate, lim = gate[..., 0], gate[..., 1]
            up = torch.where(lim.isnan(), up, lim)
        h = (up + 1) * gate
        return h @ experts.down_proj[e] + experts.down_proj_bias[e], gate
    g, up = F.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
    gate = experts.act_fn(g) if gate is None else gate
    return F.linear(gate * up, experts.down_proj[e]), gate


def _held_gpt_oss(gate: Tensor, x: Tensor, experts: nn.Module, e: int) -> Tensor:
    """GPT-OSS's record: the gate and, per up entry, its clamped value (NaN where not clamped)."""
    up = (x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e])[..., 1::2]
    lim = up.clamp(min=-experts.limit, max=experts.limit)
    lim = torch.where(lim == up, torch.full_like(up, float("nan")), lim)
    return torch.stack([gate, lim], dim=-1)


def moe_forward(
    lm: FunctionalLM, layer: int, mlp: nn.Module, x: Tensor, mode: str, freeze: Freeze | None
) -> Tensor:
    """The MoE block's output [B, T, d]: HF's own modules in `plain` and `record` (which also stores
    the routes and gates), the held routes and gates in `frozen` (linear in x)."""
    B, T, d = x.shape
    experts = mlp.get_submodule(lm.family.moe.experts)
    flat = x.reshape(-1, d)  # (B*T, d); a frozen route of one prompt serves every batch row
    frozen = mode == "frozen" and freeze is not None and layer in freeze.routes
    if not frozen:
        weights, indices = route(lm, mlp, flat)
        if mode == "record" and freeze is not None:
            freeze.routes[layer] = (weights.detach(), indices.detach())
            freeze.gates[layer] = _gates(lm, experts, flat, indices)
        return experts(flat, indices, weights).view(B, T, d)  # HF's experts: the model's output exactly
    weights, indices = freeze.routes[layer]
    rows = flat.view(-1, indices.shape[0], d)  # (batch copies, N, d)
    held = None if freeze.patterns_only else freeze.gates[layer]  # interventions recompute the gates
    return selected_outputs(lm, experts, rows, weights, indices, held).sum(2).view(B, T, d)


def selected_outputs(
    lm: FunctionalLM,
    experts: nn.Module,
    rows: Tensor,
    weights: Tensor,
    indices: Tensor,
    held: dict[int, Tensor] | None = None,
) -> Tensor:
    """Each selected expert's gated output, weight x expert(x): [..., N, k, d] for rows [..., N, d] and
    routes (weights, indices) [N, k]; their sum over k is the block's output. `held`: gates held."""
    n, k = indices.shape
    out = rows.new_zeros(*rows.shape[:-2], n, k, rows.shape[-1])
    for e in indices.unique().tolist():
        tok, slot = (indices == e).nonzero(as_tuple=True)
        y, _ = _expert(lm, experts, e, rows[..., tok, :], None if held is None else held[e])
        out[..., tok, slot, :] = y * weights[tok, slot, None].to(y.dtype)
    return out


def expert_outputs(lm: FunctionalLM, layer: int, x: Tensor, freeze: Freeze) -> Tensor:
    """Layer `layer`'s selected experts' gated outputs [T, k, d] on its clean MoE input x [T, d], with
    the routes a `record` pass stored in `freeze` (summed over k: the block's output)."""
    experts = lm.blocks[layer].mlp.get_submodule(lm.family.moe.experts)
    weights, indices = freeze.routes[layer]
    return selected_outputs(lm, experts, x, weights, indices)


def _gates(lm: FunctionalLM, experts: nn.Module, flat: Tensor, indices: Tensor) -> dict[int, Tensor]:
    """Each selected expert's activation gates on its tokens (GPT-OSS: with its clamped up values)."""
    gates = {}
    for e in indices.unique().tolist():
        tok, _ = (indices == e).nonzero(as_tuple=True)
        _, gate = _expert(lm, experts, e, flat[tok], None)
        gates[e] = _held_gpt_oss(gate, flat[tok], experts, e) if lm.family.moe.expert == "gpt_oss" else gate
        gates[e] = gates[e].detach()
    return gates


def routes_meta(freeze: Freeze) -> dict:
    """The router choices a graph holds fixed, for graph.json: per MoE layer (not replaced by a
    transcoder) and position, the top-k experts and their weights."""
    if not freeze.routes:
        return {}
    return {
        "moe_routes": {
            str(layer): {
                "experts": idx.tolist(),
                "weights": [[round(float(w), 6) for w in row] for row in wts],
            }
            for layer, (wts, idx) in sorted(freeze.routes.items())
        }
    }
