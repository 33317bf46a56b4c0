"""Circuits through attention: what head loadings and QK terms cost, and attribution memory at 4,096 tokens.

- overhead: on a 128-token storyworld prompt through the demo's transcoders (trained ones under
  runs/demo/dictionaries, else random TopK transcoders of the same shape), the time of `attribute`
  (default settings: up to 4,096 feature rows) against the time of `annotate_heads` (head loadings
  of every kept link plus QK terms for the heads carrying cross-position links), best of `repeats`.
  Target (issue 19): at most +50%.
- memory: one subprocess runs the whole `circuit` computation (attribute, prune, scores, ablation
  faithfulness, graph.json) on a 4,096-token prompt and reports its peak resident memory (VmHWM)
  beside `attribution_memory`'s estimate. The model is the storyworld LM with its 128 learned
  position embeddings tiled to 4,096 (`bench_circuits.long_context_copy`): the demo's LM reads at
  most 128 tokens, and memory depends on the shapes, not on the position weights. Target: 16 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TITLE = "Circuits through attention: head loadings + QK overhead, attribution memory at 4,096 tokens"
ROOT = Path(__file__).resolve().parents[1]


def overhead(n: int = 128, repeats: int = 3) -> dict:
    from benchmarks.bench_circuits import _setup, story_ids
    from monosemantic.circuits.attribution import attribute
    from monosemantic.circuits.head_annotations import annotate_heads
    from monosemantic.circuits.pruning import prune

    rm, label = _setup(n)
    ids = story_ids(rm.tokenizer, n)
    t_attr, t_heads = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = attribute(rm, prompt=ids, show_progress=False)
        t_attr.append(time.perf_counter() - t0)
        pr = prune(g)
        t0 = time.perf_counter()
        per_link, qk, _ = annotate_heads(rm, g, pr)
        t_heads.append(time.perf_counter() - t0)
    a, h = min(t_attr), min(t_heads)
    return {
        "tokens": n,
        "rows": g.n_features + g.n_logits,
        "kept links": len(per_link),
        "qk pairs": len(qk),
        "attribution s": round(a, 2),
        "heads + qk s": round(h, 2),
        "overhead": f"{100 * h / a:.0f}%",
        "model": label,
    }


def memory_one(n: int) -> dict:
    """The whole circuit computation on an n-token prompt, in this process (run it in a fresh one)."""
    import torch

    from benchmarks.bench_circuits import _reset_peak, _rss_mb, _status_mb, long_context_copy, story_ids
    from monosemantic.circuits.attribution import attribute
    from monosemantic.circuits.faithfulness import ablation_faithfulness, graph_scores
    from monosemantic.circuits.graph_json import graph_to_json
    from monosemantic.circuits.pruning import prune
    from monosemantic.circuits.replacement import ReplacementModel
    from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
    from monosemantic.lm.model import load_model
    from monosemantic.training.attribution_memory import attribution_memory

    torch.set_num_threads(2)
    model = load_model(str(long_context_copy(max(n, 256))))
    trained = ROOT / "runs" / "demo" / "dictionaries"
    dics = [load_dictionary(p) for p in find_dictionaries(trained)] if trained.is_dir() else []
    dics = [d for d in dics if d.cfg.is_transcoder and not d.fitted]
    if len(dics) != model.n_layers:
        from benchmarks.bench_circuits import _setup

        rm, label = _setup(129)  # random transcoders of the demo's shape (on the short model)
        dics = [s.dic for s in rm.spliced]
        label = "random TopK transcoders (x8, k=16)"
    else:
        label = "trained demo transcoders"
    rm = ReplacementModel(model, dics)
    ids = story_ids(rm.tokenizer, n)
    base = _status_mb("VmRSS") or _rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    g = attribute(rm, prompt=ids, show_progress=False)
    pr = prune(g)
    graph_scores(g)
    graph_scores(g, pr.node_mask)
    ablation_faithfulness(rm, g, pr.node_mask)
    json.dumps(graph_to_json(g, pr))
    seconds = time.perf_counter() - t0
    est = attribution_memory(n, model.d_model, model.n_layers, model.hf.config.num_attention_heads, [16] * 4)
    return {
        "tokens": n,
        "active features": g.total_active_features,
        "rows": g.n_features + g.n_logits,
        "graph nodes": g.adjacency.shape[0],
        "seconds": round(seconds, 1),
        "peak GB (process)": round(_rss_mb() / 1024, 2),
        "peak MB (process)": round(_rss_mb(), 1),
        "peak MB over model": round(_rss_mb() - base, 1),
        "estimate MB": round(est.peak / 2**20, 1),
        "dictionaries": label,
    }


def memory(n: int = 4096) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_attention_circuits", "--memory-one", str(n)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(tokens: int = 128, memory_tokens: int = 4096) -> str:
    from benchmarks.run_all import markdown_table

    return markdown_table([overhead(tokens)]) + "\n\n" + markdown_table([memory(memory_tokens)])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--memory-one":
        print(json.dumps(memory_one(int(sys.argv[2]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--overhead":
        print(overhead(*(int(x) for x in sys.argv[2:])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--memory":
        print(memory(*(int(x) for x in sys.argv[2:])))
    else:
        print(run())
