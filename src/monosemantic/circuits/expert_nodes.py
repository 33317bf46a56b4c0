"""Expert-level error nodes: a transcoder's error at a mixture-of-experts layer, split by expert.

With the router's choices frozen at the prompt, the MoE block's output at position p is the sum of
its k selected experts' gated outputs, out_p = sum_e w_pe y_pe (none of the families here has a
shared expert). A transcoder replaces the block by its reconstruction r_p plus one error node
err_p = out_p - r_p. We split that node into one node per selected expert:

    err_pe = w_pe y_pe - s_pe r_p,    s_pe = w_pe / sum_e' w_pe'

the expert's gated output minus its routing share of the reconstruction (for Mixtral, GPT-OSS and
Qwen3-MoE with `norm_topk_prob` the weights sum to one and err_pe = w_pe (y_pe - r_p): the expert's
weighted deviation from what the transcoder predicts). The shares sum to one, so sum_e err_pe =
err_p exactly. Each part is a constant vector written where the error node writes, so its edges
are its vector dotted with the same gradients (every edge still equals an intervention: removing
the part from the error term), the parts' edges sum to the plain error node's, and the graph's
totals are unchanged.

Why this split rather than expert-output nodes (w_pe y_pe) beside a residual error (-r_p): the
block's output would then be carried twice, once by the transcoder's features and once by the
experts, with a large negative residual node cancelling them; every downstream edge would mix the
two and the graph's error share (its replacement score) would no longer say how well the
transcoder explains the block. Splitting the error keeps the features' meaning and the scores
exactly as without the option, and says which expert carried what the transcoder missed.

Pruning and the graph's scores use the merged error nodes (so the option changes no kept feature,
edge or score); graph.json then lists, for every kept error node at an MoE layer, its experts'
nodes in its place, each link of the error node split into the experts' parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

from .moe import expert_outputs
from .replacement import ReplacementModel, Setup


@dataclass
class ExpertSplit:
    """The expert-level parts of spliced dictionary `dictionary`'s error terms (a transcoder over the
    MoE block of `layer`): position p's error is parts[p].sum(0)."""

    dictionary: int
    layer: int
    experts: Tensor  # [T, k] long: the router's selected experts per position
    weights: Tensor  # [T, k]: their routing weights
    parts: Tensor  # [T, k, d]: err_pe = w_pe y_pe - s_pe r_p

    @property
    def n_nodes(self) -> int:
        return int(self.experts.numel())


def expert_splits(rm: ReplacementModel, setup: Setup) -> list[ExpertSplit]:
    """One ExpertSplit per transcoder that replaces a mixture-of-experts block, in spliced order."""
    if rm.lm.family.mlp != "moe":
        raise MonosemanticError(
            f"circuit.expert_nodes needs a mixture-of-experts model; {rm.lm.family.name} has dense MLPs"
        )
    if rm.lm.family.mlp_post_norm is not None:  # the split below is of the block's own output
        raise MonosemanticError(
            f"circuit.expert_nodes does not support {rm.lm.family.name}'s post-MLP norm; turn it off"
        )
    splits = []
    for i, s in enumerate(rm.spliced):
        if not s.transcoder:
            continue
        x = setup.moe_inputs[s.layer]
        weights, indices = setup.freeze.routes[s.layer]
        gated = expert_outputs(rm.lm, s.layer, x, setup.freeze).to(setup.recon[i].dtype)  # [T, k, d]
        w = weights.to(gated.dtype)  # routers may return float32 weights: shares in the model's dtype
        parts = gated - (w / w.sum(-1, keepdim=True))[..., None] * setup.recon[i][:, None]
        splits.append(ExpertSplit(i, s.layer, indices.detach().cpu(), weights.detach().cpu().float(), parts))
    if not splits:
        raise MonosemanticError(
            "circuit.expert_nodes splits a transcoder's error at a mixture-of-experts block, and no "
            "transcoder replaces one here; splice transcoders (blocks.L.mlp.hook_in -> hook_mlp_out)"
        )
    return splits


def expert_columns(
    grads: dict[str, Tensor], rm: ReplacementModel, splits: list[ExpertSplit], n: int
) -> Tensor:
    """Direct effects [n, n_expert_nodes] of every expert node: the gradient at its dictionary's output
    site dotted with its part, in (split, position, slot) order."""
    cols = [
        torch.einsum("btd,tkd->btk", grads[rm.spliced[x.dictionary].hook_name_out][:n], x.parts).reshape(
            n, -1
        )
        for x in splits
    ]
    return torch.cat(cols, 1)


def expert_table(splits: list[ExpertSplit], n_pos: int) -> tuple[Tensor, Tensor]:
    """(nodes [n, 4] long: dictionary, layer, pos, expert; their routing weights [n]) in column order."""
    rows, weights = [], []
    for x in splits:
        k = x.experts.shape[1]
        pos = torch.arange(n_pos).repeat_interleave(k)
        fixed = torch.tensor([x.dictionary, x.layer]).expand(len(pos), 2)
        rows.append(torch.cat([fixed, pos[:, None], x.experts.reshape(-1, 1)], 1))
        weights.append(x.weights.reshape(-1))
    return torch.cat(rows), torch.cat(weights)
