"""`lm.init_from`: fine-tune an existing causal LM with `lm train` instead of training from scratch.

The checkpoint fixes the model's shape and its tokenizer (a fine-tuned copy must tokenize like
its base, or activations of the two models on "the same text" would not line up). [lm] options
that would choose another shape or train another tokenizer are refused in one line when they were
set explicitly and disagree; the rest of [lm] (steps, lr, warmup, batch, ...) drives the fine-tune.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from monosemantic.config.lm import LMConfig
from monosemantic.utils.errors import ConfigError, MonosemanticError

from .model import resolve_model_path


def checkpoint_shape(config: PretrainedConfig) -> dict[str, Any]:
    """The [lm] shape fields as the checkpoint has them (GPT-2 names map through attribute_map)."""
    d_model = config.hidden_size
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
    return {
        "architecture": config.model_type,
        "vocab_size": config.vocab_size,
        "n_layers": config.num_hidden_layers,
        "d_model": d_model,
        "n_heads": config.num_attention_heads,
        "d_mlp": d_mlp,
    }


def check_lm_options(lm: LMConfig, have: dict[str, Any], max_positions: int | None) -> None:
    """Refuse [lm] options set explicitly that contradict the checkpoint (before any loading)."""
    if "tokenizer_texts" in lm.model_fields_set:
        raise ConfigError(
            f"lm.tokenizer_texts is set but lm.init_from={lm.init_from!r} reuses that model's tokenizer; "
            "remove lm.tokenizer_texts"
        )
    for key, value in have.items():
        if key in lm.model_fields_set and getattr(lm, key) != value:
            raise ConfigError(
                f"lm.{key}={getattr(lm, key)!r} contradicts lm.init_from={lm.init_from!r}, which has "
                f"{key}={value!r}; remove lm.{key} (the checkpoint fixes the model's shape and tokenizer)"
            )
    if max_positions is not None and lm.context_size > max_positions:
        raise ConfigError(
            f"lm.context_size={lm.context_size} exceeds the {max_positions} positions of lm.init_from="
            f"{lm.init_from!r}; set lm.context_size <= {max_positions}"
        )


def load_init(lm: LMConfig) -> tuple[PreTrainedModel, Tokenizer, dict[str, Any]]:
    """The checkpoint's model (float32, dropout off) and tokenizer, and its shape for resume checks."""
    assert lm.init_from is not None
    path = resolve_model_path(lm.init_from)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MonosemanticError(
            f"could not read lm.init_from={lm.init_from!r} ({first}); give a save_pretrained folder "
            "of a causal LM, a hub id, or 'storyworld'"
        ) from err
    have = checkpoint_shape(config)
    check_lm_options(lm, have, getattr(config, "max_position_embeddings", None))
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout"):
        if hasattr(config, name):  # as lm train's own models: the data are fresh windows every step
            setattr(config, name, 0.0)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MonosemanticError(
            f"could not load lm.init_from={lm.init_from!r} as a causal LM with a tokenizer ({first})"
        ) from err
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, {**have, "context_size": lm.context_size, "batch_size": lm.batch_size}
