"""[evaluate]: metrics for one checkpoint or a sweep folder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import Section


class ProbeDataset(BaseModel):
    """A labelled text dataset for sparse probing: a local file (csv, json, jsonl, parquet) or an HF id."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Local file, or a Hugging Face dataset id ('hf:' prefix optional).")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field(
        "label", description="Column holding the label (a multi-class label gives one-vs-rest tasks)."
    )
    split: str = Field("train", description="Dataset split (Hugging Face datasets).")
    max_rows: int = Field(1000, gt=0, description="Rows used (the first ones).")
    name: str | None = Field(None, description="Task name in metrics.json; default the path's stem.")


class EvaluateConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(None, description="A checkpoint or sweep folder; default [train].out.")
    cache: Path | None = Field(
        None,
        description="Activation cache to evaluate on; default [harvest].out (data.activations, model A's, when data.activations_b is set).",
    )
    out: Path = Field(Path("runs/evaluate"), description="Folder of metrics.json, metrics.csv and the plots.")
    max_sequences: int | None = Field(
        256, gt=0, description="Sequences of the cache used: a random sample seeded by `seed` (None: all)."
    )
    held_out: bool = Field(
        True,
        description="Evaluate on the cache's held-out sequences only (those harvest reserved and training "
        "never read); false: on every sequence. A cache without a split is evaluated whole, with a warning.",
    )
    ce_convention: Literal["monosemantic", "saelens"] = Field(
        "monosemantic",
        description="Spliced CE/KL token conventions: monosemantic averages over every next-token "
        "prediction and replaces/ablates non-special positions only; saelens (SAELens run_evals) averages "
        "over predictions at non-special positions and ablates every position.",
    )
    ce_recovered_min_increase: float = Field(
        0.1,
        gt=0,
        allow_inf_nan=False,
        description="CE loss recovered is flagged unreliable (tables show 'low gap') when zero-ablating "
        "the site raises CE by fewer nats than this; read the CE increase and KL instead.",
    )
    batch_size: int = Field(16, gt=0, description="Sequences per model forward in spliced metrics.")
    spliced: bool = Field(True, description="Also compute CE/KL with the reconstruction spliced in.")
    error_check_batches: int | None = Field(
        None, gt=0, description="Batches on which spliced+error is checked to equal clean (None: all)."
    )
    concepts: bool = Field(
        True, description="Score planted-concept detection when the cache has concept labels."
    )
    purity_top_n: int = Field(20, gt=0, description="Top activations per feature used for concept purity.")
    compare_transcoders: list[Path] | None = Field(
        None,
        description="Folders of per-layer MLP transcoders; each cross-layer transcoder's entry also "
        "reports their CE/KL with every MLP of its layers replaced at once, for comparison.",
    )
    plots: bool = Field(True, description="Write PNG plots (density histograms, sweep frontiers).")
    benchmarks: list[str] = Field(
        default_factory=list,
        description="Extra metric families: sparse_probing, absorption, scr, tpp, autointerp.",
    )
    probe_datasets: list[ProbeDataset] = Field(
        default_factory=list, description="Text+label datasets added to sparse_probing's tasks."
    )
    autointerp_features: int = Field(
        64, gt=0, description="Live features sampled per dictionary by autointerp."
    )
    autointerp_judge: Literal["offline", "endpoint"] = Field(
        "offline", description="autointerp's explainer and judge: offline, or the LLM at [explain].endpoint."
    )
    saebench: bool = Field(True, description="Also write each benchmark in SAEBench's per-eval JSON layout.")
    device: str | None = None
    seed: int | None = None
