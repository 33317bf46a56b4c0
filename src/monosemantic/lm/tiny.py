"""Tiny random models of every supported family, saved like real checkpoints.

Tests in every stage use these to exercise the real loading path (`save_pretrained` ->
`load_model`) on real `transformers` classes without a hub: 2 layers, d_model 32, a small
byte-level BPE tokenizer. Extra keyword arguments override the transformers config
(e.g. `use_parallel_residual=False` for GPT-NeoX).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertForMaskedLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MambaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
)
from transformers import (
    logging as hf_logging,
)
from transformers.models.gemma2 import Gemma2Config

from monosemantic.utils.errors import MonosemanticError

from .tokenizer import train_tokenizer

TINY_FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "gemma2", "bert", "mamba")

_TEXT = (
    "Lily the cat went to the beach. She found a red shell and gave it to her friend Tom. "
    'Tom the dog was happy. He said, "Thank you, Lily!" The sun was warm and the sea was blue. '
    "One day, Max the bird flew over the big green tree. It was a sunny day in the park. "
)


def _rope_kwargs(d: int, vocab: int, ctx: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=ctx,
    )


def tiny_config(
    family: str, vocab_size: int, d_model: int = 32, ctx: int = 128, **overrides: Any
) -> PretrainedConfig:
    """A 2-layer transformers config of `family` (one of TINY_FAMILIES)."""
    rope = _rope_kwargs(d_model, vocab_size, ctx)
    head_dim = d_model // 4
    if family == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab_size,
            n_positions=ctx,
            n_embd=d_model,
            n_layer=2,
            n_head=4,
            bos_token_id=overrides.pop("bos_token_id", None),
            eos_token_id=overrides.pop("eos_token_id", None),
        )
    elif family == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=4 * d_model,
            max_position_embeddings=ctx,
            rotary_pct=0.25,
            use_parallel_residual=True,
        )
    elif family == "llama":
        cfg = LlamaConfig(**rope)
    elif family == "mistral":
        cfg = MistralConfig(**rope, sliding_window=ctx)
    elif family == "qwen2":
        cfg = Qwen2Config(**rope)
    elif family == "gemma":
        cfg = GemmaConfig(**rope, head_dim=head_dim)
    elif family == "gemma2":
        cfg = Gemma2Config(
            **rope,
            head_dim=head_dim,
            sliding_window=16,
            query_pre_attn_scalar=head_dim,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    elif family == "mamba":
        cfg = MambaConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            num_hidden_layers=2,
            state_size=8,
            expand=2,
            conv_kernel=4,
        )
    elif family == "bert":
        cfg = BertConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=4 * d_model,
            max_position_embeddings=ctx,
        )
    else:
        raise MonosemanticError(f"unknown tiny family {family!r}; use one of {', '.join(TINY_FAMILIES)}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def save_tiny_model(
    family: str, path: str | Path, vocab_size: int = 300, seed: int = 0, **overrides: Any
) -> Path:
    """Build a random 2-layer model of `family` and save it (+ tokenizer) with save_pretrained."""
    path = Path(path)
    tokenizer = train_tokenizer([_TEXT] * 4, vocab_size=vocab_size, model_max_length=128)
    special = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    ids = {"bos_token_id": special, "eos_token_id": special, "pad_token_id": special}
    cfg = tiny_config(family, vocab_size=len(tokenizer), **ids, **overrides)
    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    if family == "bert":
        cfg.architectures = ["BertForMaskedLM"]
        model = BertForMaskedLM(cfg)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
