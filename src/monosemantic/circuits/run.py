"""`monosemantic circuit CONFIG`: a graph by attribution, contrastive patching or ablation; pruning,
faithfulness, graph.json + viewer."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.dictionaries.provenance import check_provenance
from monosemantic.lm.tokenizer import tokenizer_fingerprint
from monosemantic.utils.disk import disk_full_guard
from monosemantic.utils.errors import ConfigError, MonosemanticError
from monosemantic.utils.files import write_json_atomic
from monosemantic.utils.lock import output_lock
from monosemantic.utils.progress import console

from .ablation_graph import ablation_graph
from .attribution import Graph, attribute
from .clt_layers import feature_offset
from .contrastive_graph import contrastive_graph
from .faithfulness import ABLATION_FAITHFULNESS, ablation_faithfulness, feature_means, graph_scores
from .graph_json import graph_to_json
from .head_annotations import annotate_heads, heads_metadata, link_sum_error
from .preflight import check_memory, check_options
from .pruning import PruneResult, prune, prune_by_effect
from .replacement import ReplacementModel
from .targets import Direction
from .viewer import write_viewer


def resolve_dictionaries(cfg: Config) -> list[Path]:
    """`circuit.dictionaries`, else every transcoder checkpoint under `train.out`."""
    from monosemantic.dictionaries.io import find_dictionaries, load_dictionary

    if cfg.circuit.dictionaries:
        paths = []
        for p in cfg.circuit.dictionaries:
            found = find_dictionaries(p)
            if not found:
                raise ConfigError(
                    f"circuit.dictionaries: no dictionary checkpoint at {p}; train one or fix the path"
                )
            paths += found
        return paths
    root = Path(cfg.train.out)
    try:
        found = find_dictionaries(root)
    except MonosemanticError:
        found = []
    # trained transcoders only: a fitted baseline (the MLP's own neurons) also maps mlp_in -> mlp_out
    paths = [p for p in found if (d := load_dictionary(p)).cfg.is_transcoder and not d.fitted]
    if not paths:
        raise ConfigError(
            f"no transcoders under train.out={root}; train per-layer transcoders (dictionary.site_out) "
            "or set circuit.dictionaries"
        )
    return paths


def store_ids(db: Path, paths: list[Path], names: list[str], dics: list) -> list[int | None]:
    """The feature-store dictionary describing each of `dics`, matched by weight fingerprint
    (`store.matching`); call it before a ReplacementModel casts them to the model's dtype."""
    from monosemantic.store.feature_store import FeatureStore
    from monosemantic.store.matching import match_rows

    if not db.is_file():
        return [None] * len(dics)
    with FeatureStore(db) as store:
        return match_rows(store.dictionaries(), dics, paths, names, db)


def store_describer(
    db: Path, ids: list[int | None], n_examples: int = 3
) -> tuple[object | None, Callable | None]:
    """A FeatureStore on `db` (`analyze.out/features.db`) and a (dictionary, latent) -> node fields
    lookup, for the store dictionaries `ids` (one per graph dictionary; None: unlabelled)."""
    from monosemantic.store.feature_store import FeatureStore

    if not db.is_file() or all(i is None for i in ids):
        return None, None
    store = FeatureStore(db)

    def describe(d: int, idx: int) -> dict:
        did = ids[d]
        if did is None:
            return {}
        try:
            feat = store.feature(did, idx)
        except MonosemanticError:
            return {}
        exs = store.examples(did, idx, kind="top", limit=n_examples)
        return {
            "clerp": feat.get("explanation") or "",
            "density": feat.get("density"),
            "examples": [
                {"tokens": e["tokens"], "activations": e["activations"]} for e in exs if e.get("tokens")
            ],
        }

    return store, describe


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48] or "circuit"


def _means(cfg: Config, rm: ReplacementModel):
    """Mean latents/errors for mean ablation (None: zero ablation, asked for or no cache found)."""
    c = cfg.circuit
    if c.ablation != "mean":
        return None
    cache = cfg.analyze.cache or cfg.harvest.out
    means = feature_means(rm, cache, c.mean_sequences)
    if means is None:
        console.print(
            f"[yellow]no activation cache with the dictionaries' sites at {cache}: zero ablation[/]"
        )
    return means


def prompt_input(cfg: Config, rm: ReplacementModel) -> str | torch.Tensor:
    """What the graph explains: circuit.prompt's text, or circuit.chat rendered to token ids
    (`corpus.chat_prompt.chat_prompt`, the one rendering steer and the live viewer share)."""
    c = cfg.circuit
    if not c.chat:
        return str(c.prompt)
    return torch.tensor(chat_prompt_for(rm.tokenizer, c.chat, cfg)[0], dtype=torch.long)


def chat_prompt_for(tokenizer: Any, chat: str, cfg: Config) -> tuple[list[int], Any]:
    from monosemantic.corpus.chat_prompt import chat_prompt, parse_chat

    return chat_prompt(tokenizer, parse_chat(chat), cfg.data.chat_template, cfg.data.prepend_bos)


def _attributed(
    cfg: Config, rm: ReplacementModel, direction: Direction | None
) -> tuple[Graph, PruneResult, dict, float]:
    """The pruned attribution graph of circuit.prompt on `rm`, its graph scores and its seconds."""
    c = cfg.circuit
    t0 = time.perf_counter()
    graph: Graph = attribute(
        rm,
        prompt=prompt_input(cfg, rm),
        target=c.target,
        target_token=c.target_token,
        contrast_token=c.contrast_token,
        target_feature=c.target_feature,
        target_direction=direction,
        max_logit_prob=c.max_logit_prob,
        max_n_logits=c.max_n_logits,
        max_feature_nodes=c.max_feature_nodes,
        batch_size=c.batch_size,
        expert_nodes=c.expert_nodes,
    )
    seconds = time.perf_counter() - t0
    pruned = prune(graph, c.node_threshold, c.edge_threshold)
    replacement, completeness = graph_scores(graph)
    p_repl, p_compl = graph_scores(graph, pruned.node_mask)
    scores = {
        "replacement_score": replacement,
        "completeness_score": completeness,
        "pruned_replacement_score": p_repl,
        "pruned_completeness_score": p_compl,
        "active_features": graph.total_active_features,
    }
    return graph, pruned, scores, seconds


def _attribution(
    cfg: Config, rm: ReplacementModel, direction: Direction | None = None
) -> tuple[Graph, PruneResult, dict, dict]:
    graph, pruned, graph_sc, seconds = _attributed(cfg, rm, direction)
    abl = ablation_faithfulness(rm, graph, pruned.node_mask, _means(cfg, rm))
    scores = {
        "method": "attribution",
        **graph_sc,
        **abl,
        "ablation_requested": cfg.circuit.ablation,
        "attribution_seconds": round(seconds, 3),
    }
    mlp_only = rm.mlp_only()
    if mlp_only is not None:  # a complete replacement model: the MLP-only graph's scores beside it
        scores["attention_replaced"] = sorted(s.layer for s in rm.spliced if s.attention)
        scores["mlp_only"] = _attributed(cfg, mlp_only, direction)[2]
    return graph, pruned, scores, {}


def _heads(
    cfg: Config, rm: ReplacementModel, graph: Graph, pruned: PruneResult, scores: dict
) -> tuple[dict, list]:
    """Head loadings of the kept links and QK attributions of the heads carrying them."""
    per_link, qk, timing = annotate_heads(rm, graph, pruned, cfg.circuit.qk_top, cfg.circuit.batch_size)
    scores.update(timing, head_loadings_max_error=link_sum_error(per_link, graph.adjacency), qk_pairs=len(qk))
    return per_link, qk


def _contrastive(cfg: Config, rm: ReplacementModel) -> tuple[Graph, PruneResult, dict, dict]:
    c = cfg.circuit
    if not c.corrupted_prompt:
        raise ConfigError(
            "circuit.method = 'contrastive' needs a corrupted prompt: --set circuit.corrupted_prompt='\"...\"'"
        )
    t0 = time.perf_counter()
    graph, effect, res = contrastive_graph(
        rm,
        c.prompt,
        c.corrupted_prompt,
        c.target_token,
        c.contrast_token,
        steps=c.ig_steps,
        max_feature_nodes=c.max_feature_nodes,
        batch_size=c.batch_size,
    )
    seconds = time.perf_counter() - t0
    sl = graph.slices()
    pruned = prune_by_effect(graph, effect, c.node_threshold, c.edge_threshold)
    abl = ablation_faithfulness(rm, graph, pruned.node_mask, _means(cfg, rm))
    scores = {
        "method": "contrastive",
        "node_method": graph.meta["method"],
        "ig_steps": c.ig_steps,
        "clean_prompt": c.prompt,
        "corrupted_prompt": c.corrupted_prompt,
        "metric_clean": res.metric_clean,
        "metric_corrupted": res.metric_corrupt,
        "metric_difference": res.metric_corrupt - res.metric_clean,
        "embedding_effect_sum": float(effect[sl["embeddings"]].sum()),
        **abl,
        "ablation_requested": c.ablation,
        "changed_features": graph.total_active_features,
        "attribution_seconds": round(seconds, 3),
    }
    return graph, pruned, scores, {"attribution": effect}


def _ablation(cfg: Config, rm: ReplacementModel) -> tuple[Graph, PruneResult, dict, dict]:
    c = cfg.circuit
    means = _means(cfg, rm)
    t0 = time.perf_counter()
    graph, res = ablation_graph(
        rm,
        prompt_input(cfg, rm),
        c.target,
        c.target_token,
        c.contrast_token,
        c.max_feature_nodes,
        None if means is None else means[0],
        batch_size=c.batch_size,
        max_logit_prob=c.max_logit_prob,
        max_n_logits=c.max_n_logits,
    )
    seconds = time.perf_counter() - t0
    free = torch.zeros(len(graph.target_weights), dtype=torch.bool)
    free[graph.slices()["features"]] = True  # no embedding edges: every latent may be a source
    pruned = prune(graph, c.node_threshold, c.edge_threshold, free_sources=free)
    # the graph has no error nodes: the headline score ablates every error term (the features alone);
    # keeping them instead is reported too (ill-conditioned when m barely depends on the features)
    abl = ablation_faithfulness(rm, graph, pruned.node_mask, means)
    kept = ablation_faithfulness(rm, graph, pruned.node_mask, means, keep_errors=True)
    abl["ablation_faithfulness_errors_kept"] = kept["ablation_faithfulness"]
    effect = torch.zeros(len(graph.target_weights), dtype=torch.float64)
    effect[: graph.n_features] = res.metric_effects.double()
    scores = {
        "method": "ablation",
        **abl,
        "ablation_requested": c.ablation,
        "active_features": graph.total_active_features,
        "ablated_features": graph.n_features,
        "metric_effect_sum": float(res.metric_effects.sum()),
        "ablation_seconds": round(seconds, 3),
    }
    return graph, pruned, scores, {"metric_effect": effect}


METHODS = {"attribution": _attribution, "contrastive": _contrastive, "ablation": _ablation}


def _check_method(c) -> None:
    """Options only one method honours, refused before any model is loaded."""
    if c.expert_nodes and c.method != "attribution":
        raise ConfigError(
            f"circuit.expert_nodes splits the error nodes of attribution graphs, not of method {c.method!r}: "
            "set circuit.method = 'attribution' or drop expert_nodes"
        )


def trace(
    cfg: Config,
    rm: ReplacementModel,
    describe: Callable | None = None,
    direction: Direction | None = None,
    store_ids: list[int | None] | None = None,
) -> dict:
    """The graph JSON (its scores under `metadata.scores`) of `circuit.prompt` by `circuit.method`,
    on a replacement model already built (the live server keeps one loaded). `direction` is the
    direction target when it does not come from `circuit.target_direction` (the API sends numbers);
    `store_ids` are the dictionaries' feature-store ids, recorded so the server can recompute QK terms."""
    c = cfg.circuit
    _check_method(c)
    direction = check_options(cfg, direction)
    if c.heads and any(s.attention for s in rm.spliced):
        raise ConfigError(
            "circuit.heads splits edges by the model's own attention heads, which a Lorsa replaces; in a "
            "complete replacement model the attention nodes are the Lorsa heads themselves (drop circuit.heads)"
        )
    graph, pruned, scores, values = (
        _attribution(cfg, rm, direction) if c.method == "attribution" else METHODS[c.method](cfg, rm)
    )
    per_link, qk = _heads(cfg, rm, graph, pruned, scores) if c.heads else ({}, None)
    scores.update(
        n_nodes=int(pruned.node_mask.sum()),
        n_edges=int(pruned.edge_mask.sum()),
        target=graph.targets[0].label,
        zero_bos=rm.zero_bos,
        notes={"ablation_faithfulness": ABLATION_FAITHFULNESS},
    )
    view_describe = None
    if describe is not None:  # graph dictionaries are spliced views: map back to the checkpoint's latent

        def view_describe(d: int, idx: int) -> dict:
            s = rm.spliced[d]
            return describe(s.source, idx + feature_offset(s.dic))

    slug = _slug(c.prompt if c.method == "attribution" else f"{c.method} {c.prompt}")
    gj = graph_to_json(
        graph,
        pruned,
        slug=slug,
        scan=str(cfg.model.name),
        node_threshold=c.node_threshold,
        describe=view_describe,
        node_values=values,
        link_values=per_link,
    )
    gj["metadata"]["scores"] = scores
    if store_ids is not None and all(i is not None for i in store_ids):
        gj["metadata"]["store_dictionaries"] = store_ids
    if qk is not None:
        gj["metadata"]["heads"] = heads_metadata(rm)
        gj["qk"] = qk
    if c.chat:  # the viewers draw turn boundaries on the token axis
        from monosemantic.corpus.chat_prompt import parse_chat, turns

        gj["metadata"]["turns"] = turns(chat_prompt_for(rm.tokenizer, c.chat, cfg)[1])
        gj["metadata"]["chat"] = parse_chat(c.chat)
    return gj


def circuit(cfg: ConfigLike) -> Path:
    """Build the graph with `circuit.method`, prune, score, and write graph.json, scores.json, index.html."""
    cfg = as_config(cfg)
    c = cfg.circuit
    if c.chat and c.method == "contrastive":
        raise ConfigError(
            "circuit.chat works with method attribution or ablation; contrastive mode takes text prompts"
        )
    if c.chat:  # what the store and slug name it by: the conversation as role lines
        from monosemantic.corpus.chat_prompt import parse_chat

        c.prompt = "\n".join(f"{m['role']}: {m['content']}" for m in parse_chat(c.chat))
    if not c.prompt:
        raise ConfigError("no prompt: pass --prompt TEXT (or --chat) or set circuit.prompt")
    _check_method(c)
    check_options(cfg)  # a bad direction file or option mix fails here, before the model loads
    with output_lock(c.out, "circuit.out"), disk_full_guard(c.out, "circuit.out"):
        return _circuit(cfg)


def _circuit(cfg: Config) -> Path:
    from monosemantic.dictionaries.io import dictionary_names, load_dictionary
    from monosemantic.lm.model import load_model
    from monosemantic.store.feature_store import feature_store_path

    c = cfg.circuit
    paths = resolve_dictionaries(cfg)
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, device=c.device, revision=cfg.model.revision)
    dics = [load_dictionary(p, device=str(model.device), model=model) for p in paths]
    names = dictionary_names(paths, cfg.train.out if not c.dictionaries else None)
    db = feature_store_path(cfg.analyze.out)
    ids = store_ids(db, paths, names, dics)  # by weights, before the replacement model casts them
    rm = ReplacementModel(model, dics, names, zero_bos=c.zero_bos)  # refuses a model it cannot trace
    fingerprint = tokenizer_fingerprint(model.tokenizer)
    for dic, path in zip(dics, paths, strict=True):
        check_provenance(dic, path, cfg.model.name, fingerprint, None, cfg.model.allow_foreign_model)
    check_memory(cfg, rm)
    store, describe = store_describer(db, ids)
    gj = trace(cfg, rm, describe, store_ids=ids if store is not None else None)
    scores = gj["metadata"]["scores"]
    slug = gj["metadata"]["slug"]
    out = Path(c.out)
    write_json_atomic(out / "graph.json", gj, indent=None)
    write_json_atomic(out / "scores.json", scores)
    write_viewer(gj, out / "index.html")
    if store is not None:  # under analyze's lock, into the store as it is now (analyze may have replaced it)
        from monosemantic.store.feature_store import FeatureStore

        store.close()
        with output_lock(db.parent, "analyze.out (the feature store's folder)"), FeatureStore(db) as current:
            current.add_graph(slug, gj, prompt=c.prompt)
    head = (
        f"replacement {scores['replacement_score']:.3f}  completeness {scores['completeness_score']:.3f}  "
        if c.method == "attribution"
        else f"{c.method}: m {scores.get('metric_full', float('nan')):.3f}  "
    )
    if "mlp_only" in scores:
        m = scores["mlp_only"]
        head += f"(MLP-only: replacement {m['replacement_score']:.3f}  completeness {m['completeness_score']:.3f})  "
    faith = scores["ablation_faithfulness"]
    console.print(
        f"{head}ablation faithfulness {'n/a' if faith is None else f'{faith:.3f}'} ({scores['ablation']})  "
        f"{scores['n_nodes']} nodes, {scores['n_edges']} edges",
        highlight=False,
    )
    if faith is None:
        console.print(f"[yellow]warning:[/] ablation faithfulness {scores['ablation_faithfulness_note']}")
    return out
