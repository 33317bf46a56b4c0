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
- FLOPs per token: 2 per model parameter a token passes through (the blocks up to the last site,
  their top-k experts only, plus the unembedding when every block runs; tied or untied alike: the
  embedding lookup is no matmul); TopK training 2 d_in d_sae (encoder) + 6 k (d_in + d_out)
  (sparse backward and decoder); dense training 6 d_sae (d_in + d_out). A live source runs the
  model forward on every training token on every rank (each rank draws the same stream), so it
  adds the forward's FLOPs.

`plan()` returns a `Plan` (numbers, in bytes and FLOPs); `plan_lines()` formats it as the CLI
prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from monosemantic.activations.buffer import source_choice
from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.config.ranges import Count, check_argument
from monosemantic.config.site import Site
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

    def forward_params(self, blocks: int) -> int:
        """Parameters one token is multiplied by in a forward through blocks 0..blocks-1 (its top-k
        experts only): the unembedding matmul counts when every block runs, tied or not (the
        embedding is a lookup)."""
        return self.count.blocks_up_to(blocks, active=True) + self.vocab * self.d * (blocks == self.layers)


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
    return dims_of(model_config(name, revision))


def dims_of(config: Any) -> Dims:
    """Dimensions and parameter counts of a `transformers` config (its text model's, if nested)."""
    c = getattr(config, "text_config", None) or config
    d = int(c.hidden_size)
    heads = int(getattr(c, "num_attention_heads", 1) or 1)
    return Dims(d=d, layers=int(c.num_hidden_layers), heads=heads, vocab=int(c.vocab_size),
                count=count_parameters(c), config=c)  # fmt: skip


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


@dataclass
class Plan:
    model: str
    params: int
    active_params: int  # what one token's forward uses (top-k experts of a mixture; else = params)
    d_model: int
    n_layers: int
    world_size: int
    parallel: str
    feature_shards: int | None
    harvest: HarvestPlan
    train: TrainPlan | None  # None: the config has no dictionary
    circuit: list[str] = field(default_factory=list)  # attribution memory lines (`circuit_lines`)


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
        cache = n_tok * (4 + BYTES[cfg.harvest.dtype or "float32"] * sum(dims.site_width(x) for x in sites))
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
    for d in (d for d in cfg.all_dictionaries() for _ in (cfg.train.seeds or [None])):  # one per seed
        site_in, site_out = d.site or default_site, d.site_out or d.site or default_site
        for s in (site_in, site_out):  # a multi-site dictionary reads every layer its glob names
            if s is not None:
                read += [str(x) for x in Site.parse(s).expand(cfg.sites.names).sites()]
        d_in = dims.site_width(site_in) if site_in else dims.d
        d_out = dims.site_width(site_out) if site_out else dims.d
        d_sae = d.d_sae or (d.expansion or 16) * d_in
        sizes.append((d_in + d_out) * d_sae + d_sae + d_out)
        widest = max(widest, d_sae)
        if dictionary_class(d.architecture).sparse_training(d):
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
    buffer = t.buffer_tokens * bbytes * sum(dims.site_width(s) for s in sites)
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


def plan(cfg: ConfigLike, world_size: int | None = None, circuit_tokens: int | None = None) -> Plan:
    """Memory, disk and FLOPs of the config's harvest and train, per rank of `world_size`
    (default `[plan].world_size`), and the attribution memory of a `circuit_tokens` prompt (default
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
    harvest = _harvest(cfg, dims)
    return Plan(
        model=m.name,
        params=dims.params,
        active_params=dims.count.active,
        d_model=dims.d,
        n_layers=dims.layers,
        world_size=world_size,
        parallel=t.parallel,
        feature_shards=t.feature_shards,
        harvest=harvest,
        train=_train(cfg, dims, world_size, harvest),
        circuit=circuit_lines(cfg, dims, circuit_tokens or cfg.data.context_size),
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
    moe = p.active_params != p.params
    used = f", {p.active_params / 1e9:,.3f} B used per token" if moe else ""
    lines = [
        f"plan for {p.model} ({p.params / 1e9:,.3f} B parameters{used}, d_model {p.d_model}, {p.n_layers} layers)",
        f"world size {p.world_size}, train.parallel={p.parallel!r}"
        + (f", train.feature_shards={p.feature_shards}" if p.feature_shards else ""),
        "",
        "harvest (per rank; every rank holds the model)",
        f"  model weights        {_gib(h.weight_bytes)}  ({h.weight_format})",
        f"  forward activations  {_gib(h.activation_bytes)}  (batch {h.batch} x ctx {h.context})",
        f"  FLOPs per token      {_flops(h.flops_per_token)}  (blocks 0..{h.blocks - 1} of {p.n_layers})"
        + (" (top-k experts only)" if moe else ""),
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
        return [*lines, "train: no [dictionary] in this config", *p.circuit]
    return [*lines, *_train_lines(t, p.world_size), *p.circuit]


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
