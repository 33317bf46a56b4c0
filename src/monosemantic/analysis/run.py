"""`monosemantic analyze`: one pass over the activation cache fills the feature store.

Every dictionary of a checkpoint or sweep folder is encoded on the same batches of sequences
(one read of the cache); sites missing from the cache (say, a transcoder's `mlp.hook_in` when
only `hook_mlp_out` was harvested) are computed live with the subject model from the cached
tokens. Each dictionary's `FeatureCollector` gathers all per-feature statistics at once; the
weight-based views (logit lens, input tokens, neighbours) come from the weights afterwards.

Under torchrun each rank analyses a contiguous run of the sequences; the collectors are merged
onto rank 0 (`distributed.py`), which computes the weight-based views and writes the store, the
same `features.db` as one process writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from monosemantic.activations import split
from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.paired import model_a_cache, with_model_b
from monosemantic.analysis.attended import with_attended
from monosemantic.analysis.batch_acts import batch_acts, split_sites
from monosemantic.analysis.collect import FeatureCollector
from monosemantic.analysis.distributed import merge_collector, sequence_range
from monosemantic.analysis.layers import layer_summary, layer_weights
from monosemantic.analysis.logit_lens import input_tokens, logit_lens, nearest_features, norm_scale
from monosemantic.analysis.records import TokenText, all_examples, feature_rows, vocab_of
from monosemantic.config import Config
from monosemantic.config.analyze import AnalyzeConfig
from monosemantic.config.site import Site
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.io import dictionary_names, find_dictionaries, load_dictionary
from monosemantic.dictionaries.releases import check_family, manifest_family
from monosemantic.lm.model import SubjectModel
from monosemantic.store.feature_store import FeatureStore, feature_store_path
from monosemantic.utils import distributed as D
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.files import check_output
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device


def _load_model(cache: ActivationCache, fallback: str, device: torch.device) -> SubjectModel | None:
    """The subject model of the cache (its revision and dtype, as evaluate loads it), or None
    (with a warning) when it cannot be loaded."""
    try:
        return cache.load_model(device, fallback=fallback)
    except MonosemanticError as e:
        console.print(f"[yellow]warning:[/] {e}; logit lens and live sites are skipped", highlight=False)
        return None


def _site_of(dic: Dictionary, cache: ActivationCache, path: Path) -> str:
    site = dic.cfg.hook_name
    if site is None:
        if len(cache.sites) == 1:
            return next(iter(cache.sites))
        raise DataError(f"dictionary {path} names no hook_name; add metadata.hook_name to its cfg.json")
    return site


def sparse_codes(dic: Dictionary, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The architecture's sparse inference codes (`Dictionary.encode_sparse`), or None."""
    return dic.encode_sparse(x)


def encode_pass(
    cache: ActivationCache,
    dicts: list[Dictionary],
    sites: list[str],
    model: SubjectModel | None,
    n_sequences: int,
    batch_sequences: int,
    device: torch.device,
    on_batch: Any | None = None,
    sparse: bool = False,
    start: int = 0,
) -> float:
    """Stream `n_sequences` of the cache from sequence `start` (a rank's run under torchrun),
    encode every dictionary, hand each batch to `on_batch` (`on_batch(i, codes, batch)`, with
    global `seq_ids`); returns the seconds spent encoding. `codes` is `[B, T, F]`,
    or with `sparse` and a TopK dictionary the `sparse_codes` triple (rows index `B * T` flat
    tokens). The benchmark calls it without `on_batch` to time plain `encode` alone."""
    cached, live = split_sites(cache, sites, model)
    encode_s, done = 0.0, 0
    with progress_bar() as bar:
        task = bar.add_task("analyze", total=n_sequences * cache.context_size, info="", unit="tok")
        indices = torch.arange(start, start + n_sequences) if start else None
        for batch in cache.iter_sample(indices, cached, batch_sequences=batch_sequences):
            tokens = batch["tokens"][: n_sequences - done]
            B, T = tokens.shape
            acts = batch_acts(batch, tokens, sites, cached, live, model)
            batch = {**batch, "tokens": tokens, "seq_ids": batch["seq_ids"][:B]}
            if "concepts" in batch:
                batch["concepts"] = batch["concepts"][:B]
            for i, (dic, site) in enumerate(zip(dicts, sites, strict=True)):
                t0 = time.perf_counter()
                with torch.inference_mode():
                    x = acts[site].to(device=device, dtype=torch.float32)
                    if not dic.sequence_level:  # a sequence-level kind (Lorsa) encodes whole windows
                        x = x.reshape(B * T, -1)
                    codes = sparse_codes(dic, x) if sparse and not dic.sequence_level else None
                    if codes is None:
                        codes = dic.encode(x).reshape(B, T, -1)
                encode_s += time.perf_counter() - t0
                if on_batch is not None:
                    on_batch(i, codes, batch)
            done += B
            bar.update(task, advance=B * T)
            if done >= n_sequences:
                break
    return encode_s


def _weights_views(dic: Dictionary, model: SubjectModel | None, k: int) -> dict[str, Any]:
    """Logit lens (when the decoder writes into the residual width), input tokens (transcoders),
    and decoder-cosine neighbours. A CLT or crosscoder is read through `layer_weights`: its latents'
    decoders concatenated over output layers (neighbours), summed over them (what a latent adds to
    the residual stream: the lens), and its encoders as [d_in, d_sae]."""
    if dic.multi_site:
        return _multi_site_views(dic, model, k)
    out: dict[str, Any] = {"neighbours": nearest_features(dic.W_dec.detach().cpu())}
    if model is None or not getattr(model, "has_head", True):
        return out
    W_U = model.W_U.detach().float().cpu()
    if dic.d_out == W_U.shape[0]:
        scale, centre = norm_scale(model.final_norm, W_U.shape[0])
        out["lens"] = logit_lens(dic.W_dec.detach().cpu(), W_U, k, scale=scale, centre=centre)
    W_E = model.hf.get_input_embeddings().weight.detach().float().cpu()
    if dic.is_transcoder and dic.d_in == W_E.shape[1]:
        out["inputs"] = input_tokens(dic.site_encoders().detach().cpu(), W_E, k)  # Lorsa: value dirs
    return out


def _multi_site_views(dic: Dictionary, model: Any | None, k: int) -> dict[str, Any]:
    w = layer_weights(dic)
    out: dict[str, Any] = {"neighbours": nearest_features(w["decoders"])}
    if model is None or not getattr(model, "has_head", True):
        return out
    W_U = model.W_U.detach().float().cpu()
    if w["residual_write"].shape[1] == W_U.shape[0]:
        scale, centre = norm_scale(model.final_norm, W_U.shape[0])
        out["lens"] = logit_lens(w["residual_write"], W_U, k, scale=scale, centre=centre)
    W_E = model.hf.get_input_embeddings().weight.detach().float().cpu()
    if w["encoders"] is not None and w["encoders"].shape[0] == W_E.shape[1]:  # each latent reads one site
        out["inputs"] = input_tokens(w["encoders"], W_E, k)
    return out


def analyze(cfg: Config) -> Path:
    """Analyse every dictionary under `[analyze].dictionary` on `[analyze].cache`; returns the path
    of the new `features.db` (written atomically: an interrupted run leaves the old one). Under
    torchrun the ranks split the sequences and rank 0 writes the merged store."""
    with D.session(cfg.analyze.device):
        return _analyze(cfg)


def _analyze(cfg: Config) -> Path:
    a = cfg.analyze
    check_output(a.out, "analyze.out")
    cache, root, paths, dicts, sites, model = _inputs(cfg)
    n_seq = min(cache.n_sequences, a.max_sequences or cache.n_sequences)
    if n_seq == 0:
        raise DataError(
            f"activation cache {cache.path} holds no sequences; run `monosemantic harvest CONFIG`"
        )
    concept_names = list(cache.concepts) if cache.concepts else None
    t0 = time.perf_counter()
    collectors, encode_s = _collect(a, cache, dicts, sites, model, n_seq, concept_names)
    pass_s = time.perf_counter() - t0
    db = feature_store_path(a.out)
    if not D.is_main():
        return db
    with FeatureStore.fresh(db) as store:
        store.set_meta(
            cache=str(cache.path), model=cache.manifest.get("model"), n_sequences=n_seq,
            n_tokens=n_seq * cache.context_size, context_size=cache.context_size,
            window=a.window, top_k=a.top_k, quantiles=a.quantiles, per_quantile=a.per_quantile,
            concepts=concept_names, pass_seconds=round(pass_s, 3), encode_seconds=round(encode_s, 3),
            held_out=_held_out_meta(cache, n_seq),
        )  # fmt: skip
        _write_features(store, a, cache, model, root, paths, dicts, sites, collectors)
    console.print(
        f"analysed {len(dicts)} dictionar{'y' if len(dicts) == 1 else 'ies'} on {n_seq * cache.context_size:,} "
        f"tokens in {pass_s:.1f}s (encoding {encode_s:.1f}s)",
        highlight=False,
        soft_wrap=True,
    )
    return db


def _held_out_meta(cache: ActivationCache, n_seq: int) -> dict[str, Any] | None:
    """The store's record of the held-out split its `held_out` examples come from (None: the cache
    records none, so there are no held-out examples and explain scores on all of them)."""
    held = split.held_out(cache.manifest)
    if held is None:
        console.print(f"[yellow]warning:[/] {split.NO_SPLIT_SCORING}", highlight=False, soft_wrap=True)
        return None
    rec = cache.manifest[split.KEY]
    analysed = int((held < n_seq).sum())
    return {"seed": rec["seed"], "fraction": rec["fraction"], "sequences": analysed}


def _inputs(cfg: Config) -> tuple[ActivationCache, str | Path, list[Path], list[Dictionary], list[str], Any]:
    """The cache (with model B's for a diffing pair), the dictionaries under the root with their
    sites, and the model (None where the cache's model is unavailable)."""
    a = cfg.analyze
    cache = ActivationCache(model_a_cache(cfg, a.cache))
    root = a.dictionary or cfg.train.out
    if (note := cache.incomplete_note()) is not None:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    paths = find_dictionaries(root)
    device = resolve_device(a.device)
    dicts = [load_dictionary(p, device=device).eval() for p in paths]
    for p, d in zip(
        paths, dicts, strict=True
    ):  # a release of another model family: its sites are other tensors
        check_family(d.cfg.metadata, manifest_family(cache.manifest), cache.manifest.get("model"), str(p))
    sites = [_site_of(d, cache, p) for d, p in zip(dicts, paths, strict=True)]
    if (
        pair := next((i for i, s in enumerate(sites) if Site.parse(s).is_pair), None)
    ) is not None:  # model diffing
        cache = with_model_b(cfg, cache, str(paths[pair]), sites[pair])
    return cache, root, paths, dicts, sites, _load_model(cache, cfg.model.name, device)


def _collect(
    a: AnalyzeConfig,
    cache: ActivationCache,
    dicts: list[Dictionary],
    sites: list[str],
    model: Any,
    n_seq: int,
    concept_names: list[str] | None,
) -> tuple[list[FeatureCollector], float]:
    """One encoding pass over this rank's sequences feeding a collector per dictionary (merged onto
    rank 0 under torchrun); returns them and the encoding seconds."""
    restrict = cache.excludes_special or cache.train_on != "all"  # else every position counts
    held = split.held_out(cache.manifest)  # explain's scoring samples come only from these
    collectors = [
        FeatureCollector(d.d_sae, a.top_k, a.quantiles, a.per_quantile, a.negatives, a.window,
                         seed=int(a.seed or 0) + i, concept_names=concept_names, block_tokens=a.block_tokens,
                         held_out=held, n_held_out=a.held_out_examples)
        for i, d in enumerate(dicts)
    ]  # fmt: skip

    def on_batch(i: int, codes: Any, batch: dict[str, torch.Tensor]) -> None:
        mask = cache.keep_mask(batch["tokens"], batch.get("roles")) if restrict else None
        args = (batch["tokens"], batch["seq_ids"], mask, batch.get("concepts"))
        if isinstance(codes, tuple):
            collectors[i].update_sparse(*codes, *args)
        else:
            collectors[i].update(codes, *args)

    lo, hi = sequence_range(n_seq)  # this rank's sequences (all of them in one process)
    device = resolve_device(a.device)
    encode_s = encode_pass(
        cache, dicts, sites, model, hi - lo, a.batch_sequences, device, on_batch, sparse=True, start=lo
    )
    for c in collectors:
        merge_collector(c)  # flushes the last, partial block; under torchrun, merges onto rank 0
    return collectors, encode_s


def _write_features(
    store: FeatureStore,
    a: AnalyzeConfig,
    cache: ActivationCache,
    model: Any,
    root: str | Path,
    paths: list[Path],
    dicts: list[Dictionary],
    sites: list[str],
    collectors: list[FeatureCollector],
) -> None:
    """Each dictionary's row, features, vocabulary and examples into the store."""
    text = TokenText(model.tokenizer if model is not None else None)
    with progress_bar() as bar:
        task = bar.add_task("write store", total=sum(d.d_sae for d in dicts), info="", unit="feat")
        for dic, path, name, site, c in zip(
            dicts, paths, dictionary_names(paths, root), sites, collectors, strict=True
        ):
            meta = dic.cfg.metadata or {}
            did = store.add_dictionary(
                name, path=path.resolve(), architecture=dic.cfg.architecture, hook_name=site,
                hook_name_out=dic.cfg.hook_name_out if dic.is_transcoder else None, d_in=dic.d_in,
                d_sae=dic.d_sae, model=meta.get("model_name", cache.manifest.get("model")),
                cfg=dic.cfg.to_dict() | layer_summary(dic),
            )  # fmt: skip
            views = _weights_views(dic, model, a.logit_lens_k)
            concept = c.concepts.best(c.hist, c.n_tokens)[:3] if c.concepts is not None else None
            edges = c.quantile_edges()
            rows = feature_rows(c, text, views.get("lens"), views.get("inputs"), views["neighbours"],
                                concept, edges, progress=lambda n: bar.update(task, advance=n))  # fmt: skip
            store.upsert_features(did, rows)
            store.add_vocab(vocab_of(c, text).items())
            examples = with_attended(all_examples(c, edges), dic, site, cache, model, resolve_device(a.device),
                                     a.batch_sequences)  # fmt: skip
            store.add_example_records(did, examples)
