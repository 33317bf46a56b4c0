"""[lm]: training a small causal LM and its BPE tokenizer (`monosemantic lm train`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import Dtype, Section
from .ranges import (
    INT64,
    Count,
    Fraction,
    LearningRate,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    Seed,
)


class LMConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "dtype", "seed")

    init_from: str | None = Field(
        None,
        description="Fine-tune this causal LM (local save_pretrained folder, hub id or 'storyworld') instead of "
        "training from scratch; its tokenizer and shape are kept, so vocab_size/tokenizer_texts/architecture/"
        "n_layers/d_model/n_heads/d_mlp must be left unset (or equal its own).",
    )
    architecture: Literal["gpt2", "llama"] = Field("gpt2", description="transformers architecture to train.")
    vocab_size: int = Field(2048, ge=17, le=INT64, description="BPE vocabulary size (incl. special tokens).")
    tokenizer_texts: Count = Field(20_000, description="Documents used to train the tokenizer.")
    n_layers: Count = Field(4, description="Transformer blocks.")
    d_model: Count = Field(128, description="Residual stream width.")
    n_heads: Count = Field(4, description="Attention heads per block; must divide d_model.")
    d_mlp: Count | None = Field(None, description="MLP width; default 4 x d_model.")
    context_size: int = Field(
        128, ge=2, le=INT64, description="Tokens per training window (and the model's positions)."
    )
    steps: Count = Field(3000, description="Optimiser steps.")
    batch_size: Count = Field(32, description="Windows per optimiser step.")
    lr: LearningRate = Field(
        3e-3, description="Peak AdamW learning rate (after warm-up, before cosine decay)."
    )
    weight_decay: NonNegativeFloat = Field(0.1, description="AdamW weight decay.")
    warmup_steps: NonNegativeInt = Field(100, description="Steps of linear learning-rate warm-up.")
    eval_every: Count = Field(250, description="Steps between validation loss and sample generations.")
    checkpoint_every: Count = Field(500, description="Steps between resume checkpoints in state_dir.")
    val_batches: Count = Field(
        8, description="Validation batches of held-out windows (storyworld: of another data seed)."
    )
    holdout_fraction: OpenFraction = Field(
        0.02,
        description="Fraction of a file's or dataset's documents held out for validation: a random choice "
        "seeded by data.seed, recorded in lm.out/heldout.json. Training samples windows at random positions "
        "of the other documents (seeded by data.seed and the step). Storyworld validates on another seed.",
    )
    grad_clip: PositiveFloat = Field(1.0, description="Max global gradient norm.")
    min_lr_ratio: Fraction = Field(0.1, description="Cosine decay ends at lr x this.")
    sample_prompts: list[str] = Field(
        default_factory=lambda: ["Once upon a time", "Lily the cat went to the beach. She"],
        description="Prompts continued at every validation (printed and logged to metrics.jsonl).",
    )
    sample_tokens: NonNegativeInt = Field(40, description="Tokens generated per sample prompt.")
    save_dtype: Dtype = Field("float32", description="dtype of the saved weights (training runs in float32).")
    out: Path = Field(Path("runs/lm"), description="Output folder (save_pretrained layout + tokenizer).")
    state_dir: Path | None = Field(
        None,
        description="Checkpoints for resume (model, optimizer, step, RNG, data position); default out/trainer_state.",
    )
    device: str | None = None
    dtype: Dtype | None = None
    seed: Seed | None = None

    @model_validator(mode="after")
    def _heads_divide_width(self) -> LMConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"lm.d_model={self.d_model} is not divisible by lm.n_heads={self.n_heads}; "
                "choose n_heads that divides d_model (e.g. d_model=128, n_heads=4)"
            )
        return self
