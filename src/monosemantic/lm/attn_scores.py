"""TransformerLens' `attn.hook_attn_scores` on a `transformers` model: the pre-softmax scores.

HF's eager attention forms the scores inside a module-level function, out of reach of module hooks,
so capturing them runs the model with one more attention implementation, registered the way
transformers extends attention: it computes the scores exactly as the family's eager function does
(q k^T x scaling, soft-capped where configured, plus the additive causal / sliding-window mask),
keeps them on the attention module for the site's hook, and returns the family's own eager function
of the same arguments, so outputs, patterns and logits are the eager ones bit for bit. As in
TransformerLens, the scores exclude GPT-OSS's sink logit; masked entries hold HF's additive mask
(score + the dtype's most negative value; TransformerLens' HookedTransformer writes -inf there, its
TransformerBridge the same as ours): both give zero attention.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor, nn

IMPLEMENTATION = "monosemantic_eager_scores"
ATTRIBUTE = "_monosemantic_attn_scores"  # where the attention module holds its last scores


def _attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    k = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # grouped heads, as repeat_kv
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, k.transpose(2, 3)) * scale
    if softcap is not None:  # Gemma 2: before the mask, as its eager function
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask
    setattr(module, ATTRIBUTE, scores)
    eager = importlib.import_module(type(module).__module__).eager_attention_forward
    if softcap is not None:
        kwargs["softcap"] = softcap
    return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def register() -> str:
    """Register the implementation (and eager's mask for it) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, _attention)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    return IMPLEMENTATION


def take_scores(module: nn.Module) -> Tensor | None:
    """The scores the attention module formed in this pass (cleared, so a stale pass never reads)."""
    scores = getattr(module, ATTRIBUTE, None)
    if scores is not None:
        delattr(module, ATTRIBUTE)
    return scores
