"""`monosemantic plan CONFIG`: memory per rank, cache disk and FLOPs per token, before starting.

Numbers come from the model's `config.json` (no weights are read) and the config's sections;
they are estimates of the dominant terms, stated with their formulas in the README:

- model: parameters x bytes per parameter (dtype or quantization); a harvest of layer L runs
  blocks 0..L only, but the whole model is loaded (accelerate offloads what does not fit).
- harvest activations: one forward batch, about 12 x d_model values per token per block plus
  the heads x ctx attention scores, in the model dtype.
- dictionaries: fp32 weights + gradients + two Adam moments = 16 bytes per parameter,
  divided by the feature shards (parallel='features') or spread by dictionary ('dictionaries').
- training activations: the shuffle buffer (every rank holds it, in the model dtype on the model
  device for a live source) and the [B, d_sae] pre-activation workspace of the local batch rows;
  a live source adds the model and its forward pass to the total.
- FLOPs per token: 2 per model parameter a token passes through (the blocks up to the last site,
  plus the unembedding when every block runs; tied or untied alike: the embedding lookup is no
  matmul); TopK training 2 d_in d_sae (encoder) + 6 k (d_in + d_out) (sparse backward and
  decoder); dense training 6 d_sae (d_in + d_out). A live source runs the model forward on every
  training token on every rank (each rank draws the same stream), so it adds the forward's FLOPs.

`plan()` returns a `Plan` (numbers, in bytes and FLOPs); `plan_lines()` formats it as the CLI
prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monosemantic.activations.buffer import source_choice
from monosemantic.config import Config
from monosemantic.dictionaries.layer_sites import expand, is_layer_glob
from monosemantic.lm.sites import parse_site
from monosemantic.utils.errors import ConfigError

# Public config.json values of models people plan for, so a plan works without the hub.
KNOWN: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B": dict(
        d=4096, layers=32, heads=32, kv=8, ff=14336, vocab=128256, tied=False, gated=True
    ),
    "meta-llama/Meta-Llama-3-8B": dict(
        d=4096, layers=32, heads=32, kv=8, ff=14336, vocab=128256, tied=False, gated=True
    ),
    "google/gemma-2-2b": dict(
        d=2304, layers=26, heads=8, kv=4, ff=9216, vocab=256000, tied=True, gated=True, head_dim=256
    ),
    "gpt2": dict(d=768, layers=12, heads=12, kv=12, ff=3072, vocab=50257, tied=True, gated=False),
    "EleutherAI/pythia-70m": dict(
        d=512, layers=6, heads=8, kv=8, ff=2048, vocab=50304, tied=False, gated=False
    ),
}
GATED = {"llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text", "qwen3"}
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "8bit": 1, "4bit": 0.5}
GiB = 2**30
TOPK_LIKE = ("topk", "batchtopk", "matryoshka")  # sparse decoder backward: 6 k (d_in + d_out)


@dataclass
class Dims:
    """A model's shape; every per-family count `plan` makes is a method here (norms left out)."""

    d: int
    layers: int
    heads: int
    kv: int
    ff: int
    vocab: int
    tied: bool
    gated: bool
    head_dim: int | None = None

    @property
    def block_params(self) -> int:
        hd = self.head_dim or self.d // self.heads
        attn = 2 * self.d * self.heads * hd + 2 * self.d * self.kv * hd
        return attn + (3 if self.gated else 2) * self.d * self.ff

    @property
    def params(self) -> int:
        """Stored parameters: the blocks, the embedding, and the unembedding when it is not tied."""
        return self.layers * self.block_params + self.vocab * self.d * (1 if self.tied else 2)

    def forward_params(self, blocks: int) -> int:
        """Parameters one token is multiplied by in a forward through blocks 0..blocks-1: the
        unembedding matmul counts when every block runs, tied or not (the embedding is a lookup)."""
        return blocks * self.block_params + self.vocab * self.d * (blocks == self.layers)


def model_dims(name: str, revision: str | None = None) -> Dims:
    """Dimensions from the model's config.json (local first), else the table of known models."""
    from transformers import AutoConfig

    from monosemantic.lm.model import resolve_model_path

    try:
        c = AutoConfig.from_pretrained(resolve_model_path(name), revision=revision, local_files_only=True)
    except (OSError, ValueError):
        if name in KNOWN:
            return Dims(**KNOWN[name])
        raise ConfigError(
            f"cannot read the config of model {name!r} offline; download it once (huggingface-cli "
            f"download {name} config.json) or plan with one of {', '.join(KNOWN)}"
        ) from None
    c = getattr(c, "text_config", c)
    d = c.hidden_size
    heads = c.num_attention_heads
    return Dims(
        d=d,
        layers=c.num_hidden_layers,
        heads=heads,
        kv=getattr(c, "num_key_value_heads", None) or heads,
        ff=getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * d,
        vocab=c.vocab_size,
        tied=bool(getattr(c, "tie_word_embeddings", True)),
        gated=c.model_type in GATED,
        head_dim=getattr(c, "head_dim", None),
    )


@dataclass
class HarvestPlan:
    weight_bytes: float
    weight_format: str  # dtype, or "dtype, quantization"
    activation_bytes: float  # one forward batch
    batch: int
    context: int
    blocks: int  # blocks 0..blocks-1 run
    flops_per_token: float
    cache_bytes: float | None  # None: data.max_tokens unset
    cache_tokens: int | None
    n_sites: int
    cache_dtype: str


@dataclass
class TrainPlan:
    n_dictionaries: int
    per_rank: int
    shards: int
    source: str  # as `activations.buffer.source_choice`: cache, tensor file, harvest cache, live, paired
    source_path: str | None
    source_note: str  # what it means for memory and compute, in words
    dictionary_bytes: float
    optimizer_bytes: float
    buffer_bytes: float
    buffer_tokens: int
    workspace_bytes: float
    workspace_rows: int
    workspace_latents: int
    model_bytes: float  # the model and its forward batch, for a live source (else 0)
    total_bytes: float
    dictionary_flops_per_token: float
    model_flops_per_token: float  # the forward a live source runs per token (else 0)
    tokens: int
    flops_per_rank: float

    @property
    def live(self) -> bool:
        return self.source == "live"


@dataclass
class Plan:
    model: str
    params: int
    d_model: int
    n_layers: int
    world_size: int
    parallel: str
    feature_shards: int | None
    harvest: HarvestPlan
    train: TrainPlan | None  # None: the config has no dictionary


def _check_world_size(world_size: int) -> None:
    if not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(
            f"--world-size {world_size} is not a number of ranks; give 1 or more "
            "(torchrun --nproc-per-node x nodes)"
        )


def _harvest(cfg: Config, dims: Dims) -> HarvestPlan:
    m = cfg.model
    quant = getattr(m, "quantization", None)
    wbytes = BYTES[quant or m.dtype or "float32"]
    abytes = BYTES[m.dtype or "float32"]
    sites = list(dict.fromkeys(cfg.sites.names))
    blocks = dims.layers
    if sites and "ln_final.hook_normalized" not in sites:
        blocks = max((parse_site(s)[1] or 0) + 1 for s in sites)
    ctx, hb = cfg.data.context_size, cfg.harvest.batch_size
    n_tok = None if cfg.data.max_tokens is None else math.ceil(cfg.data.max_tokens / ctx) * ctx
    cache = None
    if n_tok is not None:
        cache = n_tok * (4 + BYTES[cfg.harvest.dtype or "float32"] * dims.d * len(sites))
    return HarvestPlan(
        weight_bytes=dims.params * wbytes,
        weight_format=f"{m.dtype}{', ' + quant if quant else ''}",
        activation_bytes=hb * ctx * (12 * dims.d + dims.heads * ctx) * abytes,
        batch=hb,
        context=ctx,
        blocks=blocks,
        flops_per_token=2 * dims.forward_params(blocks),
        cache_bytes=cache,
        cache_tokens=n_tok,
        n_sites=len(sites),
        cache_dtype=str(cfg.harvest.dtype),
    )


def _dictionary_costs(cfg: Config, dims: Dims) -> tuple[list[int], float, int, list[str]]:
    """Parameters of each dictionary, their training FLOPs per token, the widest d_sae, the sites read."""
    default_site = cfg.sites.names[0] if cfg.sites.names else None
    sizes, flops, widest, read = [], 0.0, 0, []
    for d in cfg.all_dictionaries():
        site_in, site_out = d.site or default_site, d.site_out or d.site or default_site
        for s in (site_in, site_out):  # a multi-site dictionary reads every layer its glob names
            if s is not None:
                read += expand(s, available=cfg.sites.names) if is_layer_glob(s) else [s]
        d_in = d_out = dims.d  # every TransformerLens site of these models is d_model wide
        d_sae = d.d_sae or (d.expansion or 16) * d_in
        sizes.append((d_in + d_out) * d_sae + d_sae + d_out)
        widest = max(widest, d_sae)
        if d.architecture in TOPK_LIKE:
            flops += 2 * d_in * d_sae + 6 * (d.k or 32) * (d_in + d_out)
        else:
            flops += 6 * d_sae * (d_in + d_out)
    return sizes, flops, widest, list(dict.fromkeys(read))


def _source(cfg: Config, sites: list[str]) -> tuple[str, str | None, str]:
    choice = source_choice(cfg, sites)
    path = None if choice.path is None else str(choice.path)
    if choice.kind == "live":
        note = "live source: the model runs beside the dictionaries, on every rank, for every token"
        note += f" (no cache at harvest.out={cfg.harvest.out} yet; after `harvest`, train reads it)"
        return "live", None, note
    where = {"tensor file": "data.activations", "cache": "data.activations", "harvest cache": "harvest.out"}
    return (
        choice.kind,
        path,
        f"{choice.kind} at {where.get(choice.kind, 'data.activations')}={path}: on the CPU",
    )


def _train(cfg: Config, dims: Dims, world_size: int, harvest: HarvestPlan) -> TrainPlan | None:
    t = cfg.train
    sizes, dflops, widest, sites = _dictionary_costs(cfg, dims)
    if not sizes:
        return None
    shards = t.feature_shards or (world_size if t.parallel == "features" else 1)
    data_ranks = 1 if t.parallel == "dictionaries" else max(world_size // shards, 1)
    per_rank = math.ceil(len(sizes) / world_size) if t.parallel == "dictionaries" else len(sizes)
    params = max(sizes) * per_rank / shards if t.parallel == "dictionaries" else sum(sizes) / shards
    source, path, note = _source(cfg, sites)
    live = source == "live"  # a live stream buffers on the model's device, in its dtype
    bbytes = BYTES[cfg.model.dtype or "float32"] if live else BYTES[cfg.harvest.dtype or "float32"]
    buffer = t.buffer_tokens * bbytes * dims.d * len(sites)
    rows, latents = math.ceil(t.batch_size / data_ranks), math.ceil(widest / shards)
    workspace = rows * latents * 4
    model_bytes = harvest.weight_bytes + harvest.activation_bytes if live else 0.0
    mflops = harvest.flops_per_token if live else 0.0
    return TrainPlan(
        n_dictionaries=len(sizes),
        per_rank=per_rank,
        shards=shards,
        source=source,
        source_path=path,
        source_note=note,
        dictionary_bytes=4 * params,
        optimizer_bytes=12 * params,
        buffer_bytes=buffer,
        buffer_tokens=t.buffer_tokens,
        workspace_bytes=workspace,
        workspace_rows=rows,
        workspace_latents=latents,
        model_bytes=model_bytes,
        total_bytes=16 * params + buffer + workspace + model_bytes,
        dictionary_flops_per_token=dflops,
        model_flops_per_token=mflops,
        tokens=t.tokens,
        # the dictionaries' work is split over the ranks; a live forward is not (same stream everywhere)
        flops_per_rank=t.tokens * (dflops / world_size + mflops),
    )


def plan(cfg: Config, world_size: int = 1) -> Plan:
    """Memory, disk and FLOPs of the config's harvest and train, per rank of `world_size`."""
    _check_world_size(world_size)
    m, t = cfg.model, cfg.train
    dims = model_dims(m.name, m.revision)
    harvest = _harvest(cfg, dims)
    return Plan(
        model=m.name,
        params=dims.params,
        d_model=dims.d,
        n_layers=dims.layers,
        world_size=world_size,
        parallel=t.parallel,
        feature_shards=t.feature_shards,
        harvest=harvest,
        train=_train(cfg, dims, world_size, harvest),
    )


# ---- the CLI's text ------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / GiB:,.2f} GiB" if n >= GiB else f"{n / 2**20:,.2f} MiB"


def _flops(n: float) -> str:
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:,.2f} {suffix}FLOP"
    return f"{n:,.0f} FLOP"


def plan_lines(p: Plan) -> list[str]:
    """The plan as the lines `monosemantic plan` prints."""
    h = p.harvest
    lines = [
        f"plan for {p.model} ({p.params / 1e9:,.3f} B parameters, d_model {p.d_model}, {p.n_layers} layers)",
        f"world size {p.world_size}, train.parallel={p.parallel!r}"
        + (f", train.feature_shards={p.feature_shards}" if p.feature_shards else ""),
        "",
        "harvest (per rank; every rank holds the model)",
        f"  model weights        {_gib(h.weight_bytes)}  ({h.weight_format})",
        f"  forward activations  {_gib(h.activation_bytes)}  (batch {h.batch} x ctx {h.context})",
        f"  FLOPs per token      {_flops(h.flops_per_token)}  (blocks 0..{h.blocks - 1} of {p.n_layers})",
    ]
    if h.cache_bytes is None:
        lines.append("  cache on disk        unknown (set data.max_tokens)")
    else:
        lines.append(
            f"  cache on disk        {_gib(h.cache_bytes)}  ({h.cache_tokens:,} tokens x {h.n_sites} sites, {h.cache_dtype})"
        )
    lines.append("")
    t = p.train
    if t is None:
        return [*lines, "train: no [dictionary] in this config"]
    return [*lines, *_train_lines(t, p.world_size)]


def _train_lines(t: TrainPlan, world_size: int) -> list[str]:
    where = "on the model device" if t.live else "on the CPU"
    lines = [
        f"train ({t.n_dictionaries} dictionaries, {t.per_rank} on each rank, latents split over {t.shards})",
        f"  source               {t.source_note}",
        f"  dictionary weights   {_gib(t.dictionary_bytes)}",
        f"  gradients + Adam     {_gib(t.optimizer_bytes)}",
        f"  shuffle buffer       {_gib(t.buffer_bytes)}  ({t.buffer_tokens:,} tokens; {where})",
        f"  step workspace       {_gib(t.workspace_bytes)}  ({t.workspace_rows} rows x {t.workspace_latents} latents)",
    ]
    if t.live:
        lines.append(f"  model + forward      {_gib(t.model_bytes)}  (live source)")
    lines.append(f"  total per rank       {_gib(t.total_bytes)}")
    lines.append(
        f"  FLOPs per token      {_flops(t.dictionary_flops_per_token)} dictionaries (all; / {world_size} ranks)"
    )
    if t.live:
        lines.append(
            f"                       + {_flops(t.model_flops_per_token)} model forward (on every rank)"
        )
    lines.append(f"  training tokens      {t.tokens:,} -> {_flops(t.flops_per_rank)} per rank")
    return lines
