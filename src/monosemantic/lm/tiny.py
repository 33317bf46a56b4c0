"""Tiny random models of every supported family, saved like real checkpoints.

Tests in every stage use these to exercise the real loading path (`save_pretrained` ->
`load_model`) on real `transformers` classes without a hub: 2 layers, d_model 32, a small
byte-level BPE tokenizer. The configs are the `tiny` entries of `families.py`; extra keyword
arguments override the transformers config (e.g. `sliding_window=4`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers import logging as hf_logging

from monosemantic.utils.errors import MonosemanticError

from .families import FAMILY, TINY
from .tokenizer import train_tokenizer

# Every tiny variant of every family (`families.py` holds their configs): the family name, or a
# variant such as "llama3" (rope_scaling llama3) or "gpt_neox_serial" (no parallel residual).
TINY_FAMILIES = tuple(TINY)

_TEXT = (
    "Lily the cat went to the beach. She found a red shell and gave it to her friend Tom. "
    'Tom the dog was happy. He said, "Thank you, Lily!" The sun was warm and the sea was blue. '
    "One day, Max the bird flew over the big green tree. It was a sunny day in the park. "
)


def tiny_config(
    family: str, vocab_size: int, d_model: int = 32, ctx: int = 128, **overrides: Any
) -> PretrainedConfig:
    """A 2-layer transformers config of a tiny variant (one of TINY_FAMILIES)."""
    if family not in TINY:
        raise MonosemanticError(f"unknown tiny family {family!r}; use one of {', '.join(TINY_FAMILIES)}")
    kwargs = FAMILY[TINY[family]].tiny[family](vocab_size, d_model, ctx) | overrides
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def save_tiny_model(
    family: str,
    path: str | Path,
    vocab_size: int = 300,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **overrides: Any,
) -> Path:
    """Build a random 2-layer model of `family` and save it (+ tokenizer) with save_pretrained.
    `tokenizer` replaces the small BPE trained here (one whose EOS is its only special token)."""
    path = Path(path)
    if tokenizer is None:
        tokenizer = train_tokenizer([_TEXT] * 4, vocab_size=vocab_size, model_max_length=128)
    special = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    ids = {"bos_token_id": special, "eos_token_id": special, "pad_token_id": special}
    cfg = tiny_config(family, vocab_size=len(tokenizer), **ids, **overrides)
    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    if not FAMILY[TINY[family]].causal:
        cfg.architectures = ["BertForMaskedLM"]
        model = AutoModelForMaskedLM.from_config(cfg)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
