"""[circuit]: attribution graphs over features."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from .base import Section


class CircuitConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionaries: list[Path] | None = Field(
        None,
        description="Transcoders/SAEs to splice in (folders); default: every transcoder under [train].out.",
    )
    prompt: str | None = Field(
        None, description="Text whose next-token prediction the graph explains; --prompt sets it."
    )
    chat: str | None = Field(
        None,
        description="A chat prompt instead (--chat): a JSON list of {role, content}, lines 'role: text', or "
        "a .json/.jsonl/.txt file of either; rendered with the chat template and the generation prompt "
        "(docs/chat.md). The graph marks its turns.",
    )
    prompts: Path | None = Field(
        None,
        description="A prompts file (one per line, `#` comments, `[task]` headers): trace every prompt with "
        "every dictionary set and report each score's mean and 95% interval (also --prompts FILE).",
    )
    sets: dict[str, list[Path]] | None = Field(
        None,
        description="Dictionary sets compared by --prompts: name -> checkpoint folders (e.g. per-layer "
        "transcoders, a CLT). Sets whose folders do not exist yet are skipped with a note. Default: the "
        "one set `dictionaries` resolves to.",
    )
    method: Literal["attribution", "contrastive", "ablation"] = Field(
        "attribution",
        description="attribution: exact attribution graph; contrastive: clean vs corrupted_prompt "
        "(attribution patching / integrated gradients) on logit[target_token] - logit[contrast_token] "
        "(default: the clean top token vs the corrupted run's most-raised top-10 token); "
        "ablation: measured ablation effects between active latents, capped at max_feature_nodes.",
    )
    corrupted_prompt: str | None = Field(
        None, description="Contrastive mode: the corrupted prompt (same number of tokens as the prompt)."
    )
    ig_steps: int = Field(
        0,
        ge=0,
        description="Contrastive mode: 0 = attribution patching, N > 0 = integrated gradients with N steps.",
    )
    out: Path = Field(Path("runs/circuit"), description="Folder of graph.json, scores.json and index.html.")
    target: Literal["top_logits", "token", "logit_diff", "feature", "direction"] = Field(
        "top_logits",
        description="What the graph explains: the top logits (up to max_logit_prob / max_n_logits), one "
        "token's logit, logit[target_token] - logit[contrast_token], a feature (target_feature) or a "
        "residual direction (target_direction).",
    )
    target_token: str | None = Field(
        None,
        description="The token of target = 'token' or 'logit_diff' (a string the tokenizer reads as one token).",
    )
    contrast_token: str | None = Field(None, description="The subtracted token of target = 'logit_diff'.")
    target_feature: str | None = Field(
        None, description="Feature target as its graph node id LAYER_FEATURE_POS (target = 'feature')."
    )
    target_direction: Path | None = Field(
        None,
        description="target = 'direction': a safetensors file with a tensor 'direction' [d_model], read as "
        "direction . blocks.{layer}.hook_resid_post[position]; its metadata may give 'layer' and 'position'.",
    )
    target_layer: int | None = Field(
        None, ge=0, description="The direction's layer (overrides the file's metadata 'layer')."
    )
    target_position: int | None = Field(
        None,
        description="The direction's token position, negative from the end (overrides the file's "
        "metadata 'position'; default the last token).",
    )
    heads: bool = Field(
        False,
        description="Split every kept edge by the attention head making its last hop into the target's "
        "position (links get 'heads' and 'no_hop'), and store QK attributions for the heads carrying "
        "cross-position edges (graph.json 'qk').",
    )
    qk_top: int = Field(
        20, gt=0, le=10_000, description="QK attribution: the largest query x key terms kept per head pair."
    )
    max_logit_prob: float = Field(0.95, gt=0, le=1, description="Cumulative probability of logits kept.")
    max_n_logits: int = Field(10, gt=0, description="Most logits kept as targets.")
    node_threshold: float = Field(0.8, gt=0, le=1, description="Keep nodes up to this cumulative influence.")
    edge_threshold: float = Field(0.98, gt=0, le=1, description="Keep edges up to this cumulative influence.")
    max_feature_nodes: int = Field(
        4096, gt=0, description="Most feature rows attributed (the most influential first); bounds memory."
    )
    batch_size: int = Field(64, gt=0, description="Backward passes batched together.")
    ablation: Literal["zero", "mean"] = Field(
        "mean", description="How ablation faithfulness removes the nodes outside the circuit."
    )
    mean_sequences: int = Field(
        64,
        gt=0,
        description="Cached sequences averaged for mean ablation ([analyze].cache or [harvest].out).",
    )
    zero_bos: bool = Field(
        False,
        description="Drop every latent at position 0 (BOS) into the error terms, as circuit-tracer does; "
        "default false keeps BOS-position features as graph nodes.",
    )
    expert_nodes: bool = Field(
        False,
        description="Mixtures of experts (method = 'attribution'): split each error node of a transcoder "
        "over an MoE block into one node per selected expert (its gated output minus its routing share of "
        "the reconstruction; the parts sum to the error node), so the graph says which expert carried an "
        "edge. Pruning and scores are those of the merged graph.",
    )
    device: str | None = None
    seed: int | None = None
