"""[lm]: training a small causal LM and its BPE tokenizer (`monosemantic lm train`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from .base import Dtype, Section


class LMConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "dtype", "seed")

    architecture: Literal["gpt2", "llama"] = Field("gpt2", description="transformers architecture to train.")
    vocab_size: int = Field(2048, gt=16, description="BPE vocabulary size (incl. special tokens).")
    tokenizer_texts: int = Field(20_000, gt=0, description="Documents used to train the tokenizer.")
    n_layers: int = Field(4, gt=0)
    d_model: int = Field(128, gt=0)
    n_heads: int = Field(4, gt=0)
    d_mlp: int | None = Field(None, description="MLP width; default 4 x d_model.")
    context_size: int = Field(128, gt=1)
    steps: int = Field(3000, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(100, ge=0)
    eval_every: int = Field(250, gt=0, description="Steps between validation loss and sample generations.")
    checkpoint_every: int = Field(500, gt=0)
    out: Path = Field(Path("runs/lm"), description="Output folder (save_pretrained layout + tokenizer).")
    device: str | None = None
    dtype: Dtype | None = None
    seed: int | None = None
