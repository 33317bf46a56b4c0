"""[train]: the trainer shared by every dictionary of a run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from .base import Dtype, Section
from .ranges import Beta, Count, Fraction, LearningRate, NonNegativeInt, Seed


class TrainConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "dtype", "seed")

    tokens: Count = Field(8_000_000, description="Training tokens seen by every dictionary.")
    batch_size: Count = Field(4096, description="Tokens per optimiser step.")
    lr: LearningRate = Field(4e-4, description="Adam learning rate of every dictionary.")
    adam_betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="Adam's (beta1, beta2).")
    lr_warmup_steps: NonNegativeInt = Field(0, description="Steps of linear learning-rate warm-up.")
    lr_decay: Literal["none", "linear", "cosine"] | None = Field(
        None,
        description="Learning-rate decay to zero after lr_decay_start. Unset: none when every dictionary is "
        "a one-site TopK or BatchTopK (decay cost 1-4 of 256 planted toy directions; docs: Benchmarks, toy "
        "recovery), else linear.",
    )
    lr_decay_start: Fraction = Field(0.8, description="Fraction of training after which LR decays.")
    sparsity_warmup_steps: NonNegativeInt = Field(
        0, description="Steps over which the sparsity penalty ramps up."
    )
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = Field(
        "geometric_median", description="Decoder bias at the start, from the first init_tokens tokens."
    )
    normalize_activations: bool | None = Field(
        None,
        description="true: scale inputs to mean norm sqrt(d_in); false: raw inputs. The scale is folded "
        "into the weights at save. Unset: sqrt(d_in) when some dictionary is not a one-site TopK or "
        "BatchTopK (L1 coefficients and JumpReLU bandwidths assume that scale; multi-layer dictionaries "
        "need per-layer scales); TopK/BatchTopK-only runs scale to mean norm 2, which recovers more toy "
        "features and reconstructs LM activations better than raw or sqrt(d_in) (docs: Benchmarks, "
        "toy recovery).",
    )
    dead_latents: Literal["auxk", "resample", "none"] = Field("auxk", description="Dead-latent handling.")
    dead_after_tokens: Count = Field(1_000_000, description="A latent silent this long counts as dead.")
    init_tokens: Count = Field(
        16_384, description="Tokens used to estimate the activation scale and initialise b_dec."
    )
    buffer_tokens: Count = Field(262_144, description="Shuffle buffer size in tokens.")
    checkpoint_every: Count = Field(1000, description="Steps between atomic checkpoints (resume point).")
    log_every: Count = Field(50, description="Steps between metrics.jsonl rows (and W&B logs).")
    out: Path = Field(
        Path("runs/train"), description="Checkpoint folder; a sweep writes one sub-folder per dictionary."
    )
    wandb: bool = Field(False, description="Log to Weights & Biases (needs `pip install wandb`).")
    wandb_project: str = Field("monosemantic", description="Weights & Biases project name.")
    parallel: Literal["data", "features", "dictionaries"] = Field(
        "data",
        description="Under torchrun: split batch rows (data), each dictionary's latents (features) or "
        "the sweep's dictionaries (dictionaries) over the ranks. One process is world size 1.",
    )
    feature_shards: Count | None = Field(
        None,
        description="Ranks sharing one dictionary's latents with parallel='features' (default: all); "
        "fewer composes data x features on a 2-D DeviceMesh.",
    )
    device: str | None = None
    dtype: Dtype | None = Field(None, description="Compute dtype: float32 or bfloat16.")
    seed: Seed | None = None
    seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        description="Train every dictionary once per seed, all from one pass over the stream (the data "
        "order is train.seed's; the seeds vary initialisation): folders NAME-seedS, aggregated by "
        "evaluate and compare as mean and 95% interval. Unset: one run at train.seed.",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"train.seeds repeats a seed ({v}); list each seed once")
        return v
