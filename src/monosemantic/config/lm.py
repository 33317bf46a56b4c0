"""[lm]: training a small causal LM and its BPE tokenizer (`monosemantic lm train`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import Dtype, Section


class LMConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "dtype", "seed")

    init_from: str | None = Field(
        None,
        description="Fine-tune this causal LM (local save_pretrained folder, hub id or 'storyworld') instead of "
        "training from scratch; its tokenizer and shape are kept, so vocab_size/tokenizer_texts/architecture/"
        "n_layers/d_model/n_heads/d_mlp must be left unset (or equal its own).",
    )
    architecture: Literal["gpt2", "llama"] = Field("gpt2", description="transformers architecture to train.")
    vocab_size: int = Field(2048, gt=16, description="BPE vocabulary size (incl. special tokens).")
    tokenizer_texts: int = Field(20_000, gt=0, description="Documents used to train the tokenizer.")
    n_layers: int = Field(4, gt=0, description="Transformer blocks.")
    d_model: int = Field(128, gt=0, description="Residual stream width.")
    n_heads: int = Field(4, gt=0, description="Attention heads per block; must divide d_model.")
    d_mlp: int | None = Field(None, description="MLP width; default 4 x d_model.")
    context_size: int = Field(
        128, gt=1, description="Tokens per training window (and the model's positions)."
    )
    steps: int = Field(3000, gt=0, description="Optimiser steps.")
    batch_size: int = Field(32, gt=0, description="Windows per optimiser step.")
    lr: float = Field(
        3e-3, gt=0, description="Peak AdamW learning rate (after warm-up, before cosine decay)."
    )
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Steps of linear learning-rate warm-up.")
    eval_every: int = Field(250, gt=0, description="Steps between validation loss and sample generations.")
    checkpoint_every: int = Field(500, gt=0, description="Steps between resume checkpoints in state_dir.")
    val_batches: int = Field(
        8, gt=0, description="Validation batches of held-out windows (storyworld: of another data seed)."
    )
    holdout_fraction: float = Field(
        0.02,
        gt=0,
        lt=1,
        description="Fraction of a file's or dataset's documents held out for validation: a random choice "
        "seeded by data.seed, recorded in lm.out/heldout.json. Training samples windows at random positions "
        "of the other documents (seeded by data.seed and the step). Storyworld validates on another seed.",
    )
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay ends at lr x this.")
    sample_prompts: list[str] = Field(
        default_factory=lambda: ["Once upon a time", "Lily the cat went to the beach. She"],
        description="Prompts continued at every validation (printed and logged to metrics.jsonl).",
    )
    sample_tokens: int = Field(40, ge=0, description="Tokens generated per sample prompt.")
    save_dtype: Dtype = Field("float32", description="dtype of the saved weights (training runs in float32).")
    out: Path = Field(Path("runs/lm"), description="Output folder (save_pretrained layout + tokenizer).")
    state_dir: Path | None = Field(
        None,
        description="Checkpoints for resume (model, optimizer, step, RNG, data position); default out/trainer_state.",
    )
    device: str | None = None
    dtype: Dtype | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _heads_divide_width(self) -> LMConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"lm.d_model={self.d_model} is not divisible by lm.n_heads={self.n_heads}; "
                "choose n_heads that divides d_model (e.g. d_model=128, n_heads=4)"
            )
        return self
