"""`monosemantic plan CONFIG`: memory per rank, cache disk and FLOPs per token, before starting.

Numbers come from the model's `config.json` (no weights are read) and the config's sections;
they are estimates of the dominant terms, stated with their formulas in docs/scaling.md:

- model: parameters x bytes per parameter (dtype or quantization), counted exactly by building the
  model's classes on the meta device (`lm/params.py`: every expert, tied embeddings once); a harvest
  of layer L runs blocks 0..L only, but the whole model is loaded (accelerate offloads what does not fit).
- harvest activations: one forward batch, about 12 x d_model values per token per block plus
  the heads x ctx attention scores, in the model dtype.
- dictionaries: fp32 weights + gradients + two Adam moments = 16 bytes per parameter,
  divided by the feature shards (parallel='features') or spread by dictionary ('dictionaries').
- training activations: the shuffle buffer (every rank holds it, in the model dtype on the model
  device for a live source) and the [B, d_sae] pre-activation workspace of the local batch rows;
  a live source adds the model and its forward pass to the total.
- FLOPs per token: 2 per model parameter a token uses (forward; its top-k experts only); TopK training 2 d_in d_sae (encoder)
  + 6 k (d_in + d_out) (sparse backward and decoder); dense training 6 d_sae (d_in + d_out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.config.ranges import Count, check_argument
from monosemantic.dictionaries.base import dictionary_class
from monosemantic.lm.families import family_of
from monosemantic.lm.family_sites import site_width
from monosemantic.lm.known_models import KNOWN, known_config
from monosemantic.lm.params import ParamCount, count_parameters
from monosemantic.lm.sites import parse_site, site_suffix
from monosemantic.utils.errors import ConfigError

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "8bit": 1, "4bit": 0.5}
GiB = 2**30


@dataclass
class Dims:
    """The model's shape (from its config) and its exact parameter counts (`lm.params`)."""

    d: int
    layers: int
    heads: int
    vocab: int
    count: ParamCount
    config: Any

    @property
    def params(self) -> int:
        return self.count.total

    def site_width(self, site: str) -> int:
        width = site_width(family_of(self.config.model_type), self.config, site_suffix(site))
        return self.d if width is None else width


def model_config(name: str, revision: str | None = None) -> Any:
    """The model's `transformers` config: a local folder or the hub cache first, else the public
    config of a known model (`lm/known_models.py`), else one line saying how to get it."""
    from transformers import AutoConfig

    from monosemantic.lm.model import resolve_model_path

    try:
        return AutoConfig.from_pretrained(resolve_model_path(name), revision=revision, local_files_only=True)
    except (OSError, ValueError):
        known = known_config(name)
        if known is not None:
            return known
        raise ConfigError(
            f"cannot read the config of model {name!r} offline; download it once (huggingface-cli "
            f"download {name} config.json) or plan with one of {', '.join(KNOWN)}"
        ) from None


def model_dims(name: str, revision: str | None = None) -> Dims:
    """Dimensions and parameter counts of the model `name` (see `model_config`)."""
    c = model_config(name, revision)
    c = getattr(c, "text_config", None) or c
    d = int(c.hidden_size)
    heads = int(getattr(c, "num_attention_heads", 1) or 1)
    return Dims(d=d, layers=int(c.num_hidden_layers), heads=heads, vocab=int(c.vocab_size),
                count=count_parameters(c), config=c)  # fmt: skip


def _gib(n: float) -> str:
    return f"{n / GiB:,.2f} GiB" if n >= GiB else f"{n / 2**20:,.2f} MiB"


def _flops(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:,.2f} {suffix}FLOP"
    return f"{n:,.0f} FLOP"


def circuit_lines(cfg: Config, dims: Dims, n_tokens: int) -> list[str]:
    """Attribution memory of `circuit` for an `n_tokens` prompt, through the config's transcoders
    (trained ones: fitted baselines are not spliced) or `circuit.dictionaries`' cfg.json files."""
    import json
    from pathlib import Path

    from monosemantic.dictionaries.base import dictionary_class

    from .attribution_memory import active_per_token, attribution_memory

    c = cfg.circuit
    if c.dictionaries:
        found = [Path(p) / "cfg.json" for p in c.dictionaries]
        active = [active_per_token(json.loads(f.read_text())) for f in found if f.is_file()]
    else:
        tcs = [
            d for d in cfg.all_dictionaries() if d.site_out and not dictionary_class(d.architecture).fitted
        ]
        active = [float(getattr(d, "k", None) or 32) for d in tcs for _ in range(len(d.layers or [0]))]
    if not active:
        return []
    abytes = BYTES[cfg.model.dtype or "float32"]
    est = attribution_memory(n_tokens, dims.d, dims.layers, dims.heads, active, c.max_feature_nodes,
                             c.max_n_logits, c.batch_size, int(abytes), 8 if abytes == 8 else 4, c.heads)  # fmt: skip
    lines = ["", f"circuit (attribution of a {n_tokens:,}-token prompt, {len(active)} dictionaries)"]
    lines.append(
        f"  active features      {est.active_features:,}  ({est.rows:,} rows, {est.nodes:,} graph nodes)"
    )
    lines.append(f"  computing rows       {_gib(est.attribution)}")
    lines.append(f"  assembling the graph {_gib(est.assembly)}")
    lines.append(f"  pruning              {_gib(est.pruning)}")
    if c.heads:
        lines.append(f"  head loadings        {_gib(est.heads)}")
    lines.append(
        f"  peak with the model  {_gib(est.peak + dims.params * BYTES[cfg.model.dtype or 'float32'])}"
    )
    return lines


def plan(cfg: ConfigLike, world_size: int | None = None, circuit_tokens: int | None = None) -> list[str]:
    """The plan as lines of text (what `monosemantic plan` prints), for `world_size` ranks (default
    `[plan].world_size`); `circuit_tokens` is the prompt length the circuit estimate is for (default
    `[plan].circuit_tokens`, else data.context_size)."""
    cfg = as_config(cfg)
    world_size = check_argument(
        "world_size", cfg.plan.world_size if world_size is None else world_size, Count
    )
    circuit_tokens = cfg.plan.circuit_tokens if circuit_tokens is None else circuit_tokens
    if circuit_tokens is not None:
        circuit_tokens = check_argument("circuit_tokens", circuit_tokens, Count)
    m, t = cfg.model, cfg.train
    dims = model_dims(m.name, m.revision)
    wbytes = BYTES[getattr(m, "quantization", None) or m.dtype or "float32"]
    abytes = BYTES[m.dtype or "float32"]
    sites = list(dict.fromkeys(cfg.sites.names))
    blocks = dims.layers
    if sites and "ln_final.hook_normalized" not in sites:
        blocks = max((parse_site(s)[1] or 0) + 1 for s in sites)
    ctx, hb = cfg.data.context_size, cfg.harvest.batch_size
    width = {s: dims.site_width(s) for s in sites}

    moe = dims.count.experts > 0
    used_note = f", {dims.count.active / 1e9:,.3f} B used per token" if moe else ""
    lines = [
        f"plan for {m.name} ({dims.params / 1e9:,.3f} B parameters{used_note}, d_model {dims.d}, "
        f"{dims.layers} layers)"
    ]
    lines.append(
        f"world size {world_size}, train.parallel={t.parallel!r}"
        + (f", train.feature_shards={t.feature_shards}" if t.feature_shards else "")
    )
    lines.append("")
    lines.append("harvest (per rank; every rank holds the model)")
    lines.append(
        f"  model weights        {_gib(dims.params * wbytes)}  ({m.dtype}{', ' + m.quantization if getattr(m, 'quantization', None) else ''})"
    )
    act = hb * ctx * (12 * dims.d + dims.heads * ctx) * abytes
    lines.append(f"  forward activations  {_gib(act)}  (batch {hb} x ctx {ctx})")
    # a token runs its top-k experts only; the unembedding is a vocab x d product whether tied or not
    used = dims.count.blocks_up_to(blocks, active=True) + dims.vocab * dims.d * (blocks == dims.layers)
    top_k = " (top-k experts only)" if moe else ""
    lines.append(
        f"  FLOPs per token      {_flops(2 * used)}  (blocks 0..{blocks - 1} of {dims.layers}){top_k}"
    )
    if cfg.data.max_tokens is not None:
        n_tok = math.ceil(cfg.data.max_tokens / ctx) * ctx
        sbytes = BYTES[cfg.harvest.dtype or "float32"]
        disk = n_tok * (4 + sbytes * sum(width.values()))
        lines.append(
            f"  cache on disk        {_gib(disk)}  ({n_tok:,} tokens x {len(sites)} sites, {cfg.harvest.dtype})"
        )
    else:
        lines.append("  cache on disk        unknown (set data.max_tokens)")

    dicts = [d for d in cfg.all_dictionaries() for _ in (t.seeds or [None])]  # one per train.seeds entry
    circuit = circuit_lines(cfg, dims, circuit_tokens or ctx)
    lines.append("")
    if not dicts:
        lines.append("train: no [dictionary] in this config")
        return lines + circuit
    shards = t.feature_shards or (world_size if t.parallel == "features" else 1)
    data_ranks = 1 if t.parallel == "dictionaries" else max(world_size // shards, 1)
    per_rank = math.ceil(len(dicts) / world_size) if t.parallel == "dictionaries" else len(dicts)
    default_site = sites[0] if sites else None
    sizes, flops, widest = [], 0.0, 0
    for d in dicts:
        d_in = width.get(d.site or default_site, dims.d)
        d_out = width.get(d.site_out or d.site or default_site, dims.d)
        d_sae = d.d_sae or (d.expansion or 16) * d_in
        sizes.append((d_in + d_out) * d_sae + d_sae + d_out)
        widest = max(widest, d_sae)
        if dictionary_class(d.architecture).sparse_training(d):
            flops += 2 * d_in * d_sae + 6 * (d.k or 32) * (d_in + d_out)
        else:
            flops += 6 * d_sae * (d_in + d_out)
    params = max(sizes) * per_rank / shards if t.parallel == "dictionaries" else sum(sizes) / shards
    lines.append(f"train ({len(dicts)} dictionaries, {per_rank} on each rank, latents split over {shards})")
    lines.append(f"  dictionary weights   {_gib(4 * params)}")
    lines.append(f"  gradients + Adam     {_gib(12 * params)}")
    live = cfg.data.activations is None  # a live stream buffers on the model's device, in its dtype
    bbytes = abytes if live else BYTES[cfg.harvest.dtype or "float32"]
    buffer = t.buffer_tokens * bbytes * (sum(width.values()) if sites else dims.d)
    where = "on the model device: live source" if live else "on the CPU: cache source"
    lines.append(f"  shuffle buffer       {_gib(buffer)}  ({t.buffer_tokens:,} tokens; {where})")
    rows = math.ceil(t.batch_size / data_ranks)
    lines.append(
        f"  step workspace       {_gib(rows * math.ceil(widest / shards) * 4)}  ({rows} rows x {math.ceil(widest / shards)} latents)"
    )
    total = 16 * params + buffer + rows * math.ceil(widest / shards) * 4
    if live:  # the model and its forward pass share the device with the dictionaries
        total += dims.params * wbytes + act
    lines.append(
        f"  total per rank       {_gib(total)}" + ("  (with the model: live source)" if live else "")
    )
    lines.append(f"  FLOPs per token      {_flops(flops)} (all dictionaries; / {world_size} ranks)")
    lines.append(f"  training tokens      {t.tokens:,} -> {_flops(flops * t.tokens / world_size)} per rank")
    return lines + circuit
