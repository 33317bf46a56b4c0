"""Attribution memory: what `circuit` holds for a prompt of T tokens, estimated before it runs.

`plan` prints it and `circuit` refuses a prompt whose estimate exceeds the memory available. It lives
here, beside `plan`, because the pipeline order lets the circuits stage import this stage but not the
other way round. The dominant terms (bytes), with F = T x (active latents per token, summed over
the dictionaries), R = min(max_feature_nodes, F) + max_n_logits + 1 attribution rows and
N = min(max_feature_nodes, F) + (dictionaries + 1) x T + max_n_logits graph nodes:

- frozen attention patterns: layers x heads x T^2 values;
- the edge matrix while rows are computed: R x (F + (dictionaries + 1) x T) values (float32, or
  float64 for float64 models): the largest term on long prompts;
- one batch of attribution rows: the frozen forward kept for the backward passes, about
  `BATCH_COPIES` x batch x T x d_model values per layer, plus the gradients at every injection point;
- assembling the graph: the edge matrix and the N x N adjacency together;
- pruning: the adjacency plus a few R x N temporaries and an N x N mask;
- head loadings (circuit.heads): the adjacency plus a forward batch and its per-layer head values.

Measured on the storyworld LM with its demo transcoders (benchmarks/bench_attention_circuits.py),
these overestimate the peak resident memory by 10-30% at 512 and 1,024 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

BATCH_COPIES = 5  # [batch, T, d_model] tensors the frozen forward keeps per layer for the backward passes
OVERHEAD = 400 * 2**20  # allocator slack, the setup pass, Python objects


def batch_row_bytes(
    n_tokens: int, d_model: int, n_layers: int, n_dictionaries: int, act_bytes: int = 4
) -> int:
    """Bytes one row of an attribution backward batch holds: the frozen forward kept for the backward
    passes (`BATCH_COPIES` x T x d_model values per layer) and the gradients at every injection point
    (the embedding and each dictionary's output). `circuit` sizes its batches with it."""
    return (BATCH_COPIES * n_layers + 2 * (n_dictionaries + 1)) * n_tokens * d_model * act_bytes


class AttributionMemory(NamedTuple):
    """Bytes each phase of `circuit` holds at its peak (the model's weights not included)."""

    attribution: int
    assembly: int
    pruning: int
    heads: int
    peak: int
    active_features: int
    rows: int
    nodes: int


def attribution_memory(
    n_tokens: int,
    d_model: int,
    n_layers: int,
    n_heads: int,
    active_per_token: Sequence[float],
    max_feature_nodes: int = 4096,
    max_n_logits: int = 10,
    batch_size: int = 64,
    act_bytes: int = 4,
    edge_bytes: int = 4,
    heads: bool = False,
) -> AttributionMemory:
    """The estimate for one prompt; `active_per_token` has one entry per spliced dictionary (a
    TopK dictionary's k; a CLT counts once per layer it reads)."""
    T, d, n_d = n_tokens, d_model, len(active_per_token)
    F = int(T * sum(active_per_token))
    selected = min(max_feature_nodes, F)
    rows = selected + max_n_logits + 1
    cols = F + (n_d + 1) * T
    N = selected + (n_d + 1) * T + max_n_logits
    patterns = n_layers * n_heads * T * T * act_bytes
    edge = rows * cols * edge_bytes
    batch = batch_size * batch_row_bytes(T, d, n_layers, n_d, act_bytes)
    setup = T * d * (3 * n_d + 1) * act_bytes + F * (20 + d * act_bytes)
    adjacency = N * N * edge_bytes
    attribution = patterns + edge + batch + setup + OVERHEAD
    assembly = patterns + edge + adjacency + rows * N * edge_bytes + setup + OVERHEAD
    pruning = adjacency + 3 * rows * N * edge_bytes + N * N + OVERHEAD
    head_pass = adjacency + patterns + 3 * batch + batch_size * n_layers * T * d * act_bytes + OVERHEAD
    head_bytes = head_pass if heads else 0
    peak = max(attribution, assembly, pruning, head_bytes)
    return AttributionMemory(attribution, assembly, pruning, head_bytes, peak, F, rows, N)


def active_per_token(cfg: dict) -> float:
    """Active latents per token of a dictionary from its cfg.json fields: k for TopK-style
    architectures, else the L0 its training logged, else 1% of its latents."""
    mono = (cfg.get("metadata") or {}).get("monosemantic") or {}
    k = cfg.get("k") or mono.get("k")
    if k:
        return float(k)
    training = (cfg.get("metadata") or {}).get("training") or {}
    l0 = (training.get("final_metrics") or {}).get("l0")
    return float(l0) if l0 else 0.01 * float(cfg.get("d_sae") or mono.get("d_sae") or 0)


def available_memory() -> int | None:
    """Bytes the system can give this process now, None where unknown (`utils.memory` reads it)."""
    from monosemantic.utils.memory import available_bytes

    return available_bytes("cpu")
    return None
