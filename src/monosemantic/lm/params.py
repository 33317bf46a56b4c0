"""Parameter counts from a model's config alone (no weights): what `monosemantic plan` reads.

The model is built on the meta device from its `transformers` config (no memory, no weights), so
every family is counted by its own classes: biases, norms, q/k norms, tied embeddings counted once,
every expert of a mixture of experts. The family entry (`lm/families.py`) says where the experts
live and how many a token uses, so `active` counts what one token's forward pass touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .families import family_of


@dataclass(frozen=True)
class ParamCount:
    """Parameters of one model: totals, and what one token uses (top-k experts of each MoE block)."""

    total: int
    embedding: int  # input token embeddings (+ learned positions)
    unembedding: int  # a separate output head (0 when tied to the input embeddings)
    blocks: int  # every block together
    n_layers: int
    experts: int  # every expert of every MoE block (0 for dense models)
    experts_active: int  # the experts one token runs (top-k of each block)

    @property
    def per_block(self) -> int:
        return self.blocks // self.n_layers

    @property
    def active(self) -> int:
        """Parameters one token's forward pass uses."""
        return self.total - self.experts + self.experts_active

    def blocks_up_to(self, n: int, active: bool = False) -> int:
        """Parameters of blocks 0..n-1 (blocks of one model are alike)."""
        per = (self.blocks - (self.experts - self.experts_active if active else 0)) // self.n_layers
        return per * n


def _build_meta(config: Any) -> torch.nn.Module:
    from transformers import AutoModel, AutoModelForCausalLM

    family = family_of(config.model_type)
    auto = AutoModelForCausalLM if family.causal else AutoModel
    with torch.device("meta"):
        return auto.from_config(config)


def count_parameters(config: Any) -> ParamCount:
    """Exact parameter counts of the model `config` describes (a `transformers` config)."""
    config = getattr(config, "text_config", None) or config
    family = family_of(config.model_type)
    model = _build_meta(config)
    base = model.base_model
    total = sum(p.numel() for p in model.parameters())  # unique parameters: tied ones once
    blocks = base.get_submodule(family.blocks)
    block_params = sum(p.numel() for p in blocks.parameters())
    embedding = base.get_submodule(family.embed).weight.numel()
    if family.pos_embed is not None:
        embedding += base.get_submodule(family.pos_embed).weight.numel()
    head = model.get_output_embeddings()
    tied = head is None or head.weight is base.get_submodule(family.embed).weight
    unembedding = 0 if tied else head.weight.numel()
    experts = active = 0
    if family.moe is not None:
        k, n = int(getattr(config, family.moe.top_k)), int(getattr(config, family.moe.n_experts))
        for blk in blocks:
            mods = [m for name, m in blk.named_modules() if name.endswith(f"mlp.{family.moe.experts}")]
            count = sum(p.numel() for m in mods for p in m.parameters())
            experts += count
            active += count * k // n
    return ParamCount(total, embedding, unembedding, block_params, len(blocks), experts, active)
