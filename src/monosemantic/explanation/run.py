"""`monosemantic explain`: an explanation and detection/fuzzing scores for every live feature.

With an endpoint (`[explain].endpoint` or env `MONOSEMANTIC_ENDPOINT`) the explainer and the
judge are an LLM behind an OpenAI-compatible chat API (`llm_client.py`); the estimated prompt
tokens are printed before any request, and answers are cached on disk. Without one, the
deterministic offline explainer and keyword judge (`offline.py`) fill the same columns. The store
records which produced each value: `explanation_source` (`llm:<model>` or `offline`) and
`scorer` (`llm:<model>` or `offline-keyword`). Scores are computed on analyze's held-out
contexts by default (`explain.score_on`, `score_sets.py`); each feature's scores JSON names the
set (`scored_on`).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.explanation import score_sets, scoring
from monosemantic.explanation.llm_client import ChatClient, estimate_tokens
from monosemantic.explanation.offline import KeywordJudge, base_counts, offline_explanation
from monosemantic.store.feature_store import FeatureStore, feature_store_path
from monosemantic.utils.disk import disk_full_guard
from monosemantic.utils.files import check_output
from monosemantic.utils.lock import output_lock
from monosemantic.utils.progress import console, progress_bar


def _explain_prompt(examples: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A delphi-style explainer prompt: contexts with firing tokens marked and their activations."""
    lines = []
    for i, e in enumerate(examples):
        fire = scoring.firing(e)
        text = scoring.Item(e["tokens"], 1, fire).text()
        acts = ", ".join(f"({e['tokens'][j]!r}, {e['activations'][j]:.2g})" for j in fire[:6])
        lines.append(f"Example {i + 1}: {text}\nActivations: {acts}")
    return [
        {"role": "system", "content": scoring._SYSTEM},
        {
            "role": "user",
            "content": "Below are text examples where one feature of a language model activates; the tokens where "
            "it fires are marked <<like this>>, followed by (token, activation) pairs. Find what the marked tokens "
            "have in common, using the surrounding context where it matters. Keep the explanation to one concise "
            "phrase; do not list examples.\n\n"
            + "\n\n".join(lines)
            + "\n\nEnd your answer with a final line of the form: [EXPLANATION]: <your explanation>",
        },
    ]


def parse_explanation(answer: str) -> str:
    """The text after the last `[EXPLANATION]:`, or the last non-empty line."""
    found = re.findall(r"\[EXPLANATION\]:\s*(.+)", answer)
    if found:
        return found[-1].strip()
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _items(
    cfg: Config, fid: int, examples: list[dict[str, Any]], on: str
) -> tuple[dict[str, list[scoring.Item]], dict[str, Any]]:
    """The detection and fuzzing contexts of a feature from the `on` set (`score_sets.py`), drawn
    with a per-feature seed, and the record the scores JSON carries beside them."""
    e = cfg.explain
    rng = random.Random(f"{e.seed}:{fid}")
    return score_sets.score_items(examples, on, list(e.scoring), e.score_examples, e.min_examples, rng)


TOO_FEW = score_sets.TOO_FEW  # explanation_source and scorer of a feature with too few contexts


def contexts(examples: list[dict[str, Any]]) -> int:
    """Distinct activating contexts (sequences) among a feature's top and quantile examples."""
    seqs = [e.get("sequence") for e in examples if e["kind"] in ("top", "quantile")]
    return len({s for s in seqs if s is not None}) + sum(s is None for s in seqs)


def _work(
    store: FeatureStore, max_features: int | None
) -> list[tuple[int, dict[str, Any], list[dict[str, Any]]]]:
    """(dictionary id, feature, examples) for every feature that fired, by dictionary then index."""
    work = []
    for d in store.dictionaries():
        fired = ((f, ex) for f, ex in store.features_with_examples(d["id"]) if (f["n_active"] or 0) > 0)
        for n, (f, ex) in enumerate(fired):
            if max_features is not None and n >= max_features:
                break
            work.append((d["id"], f, ex))
    return work


def _too_few(store: FeatureStore, cfg: Config, work: list) -> list:
    """Mark the features with fewer than `explain.min_examples` activating contexts (no explanation,
    no scores, the reason recorded) and return the rest, which are explained and scored."""
    need = cfg.explain.min_examples
    few: dict[int, list[tuple[int, int]]] = {}
    keep = []
    for did, f, ex in work:
        n = contexts(ex)
        if n < need:
            few.setdefault(did, []).append((f["idx"], n))
        else:
            keep.append((did, f, ex))
    for did, items in few.items():
        store.set_explanations(did, [(idx, None, TOO_FEW) for idx, _ in items])
        note = "{n} activating context(s); explain.min_examples = " + str(need)
        store.set_scores_many(
            did, [(idx, {"note": f"{TOO_FEW}: " + note.format(n=n)}, TOO_FEW) for idx, n in items]
        )
    if few:
        console.print(
            f"explain: {sum(map(len, few.values()))} of {len(work)} features have fewer than {need} activating "
            f"contexts: marked '{TOO_FEW}', not explained or scored (explain.min_examples)",
            highlight=False,
            soft_wrap=True,
        )
    return keep


def _offline(store: FeatureStore, cfg: Config, work: list, on: str) -> None:
    seen = score_sets.EXPLAINER_KINDS  # the offline explainer's base rate never reads held-out contexts
    bases = {
        did: base_counts(e for d2, _, ex in work if d2 == did for e in ex if e["kind"] in seen)
        for did in {w[0] for w in work}
    }
    with progress_bar() as bar:
        task = bar.add_task("explain (offline)", total=len(work), info="", unit="feat")
        texts: dict[int, list[tuple[int, str, str]]] = {}
        scores: dict[int, list[tuple[int, dict[str, Any], str]]] = {}
        for did, f, ex in work:
            top = [e for e in ex if e["kind"] == "top"][: cfg.explain.examples]
            text = offline_explanation(f, top, bases[did])
            texts.setdefault(did, []).append((f["idx"], text, "offline"))
            judge = KeywordJudge(text)
            sets, result = _items(cfg, f["idx"], ex, on)
            for method, items in sets.items():
                preds = judge.detect(items) if method == "detection" else judge.fuzz(items)
                result[method] = scoring.metrics([it.label for it in items], preds)
            scorer = score_sets.TOO_FEW if "note" in result else KeywordJudge.name
            scores.setdefault(did, []).append((f["idx"], result, scorer))
            bar.update(task, advance=1)
    for did in texts:
        store.set_explanations(did, texts[did])
        store.set_scores_many(did, scores[did])


def _llm(store: FeatureStore, cfg: Config, work: list, endpoint: str, on: str) -> None:
    e = cfg.explain
    client = ChatClient(
        endpoint, e.model, api_key=os.environ.get(e.api_key_env), concurrency=e.concurrency,
        max_retries=e.max_retries, timeout=e.timeout,
        cache_dir=e.cache or store.path.parent / "explain_cache",
    )  # fmt: skip
    prompts = [_explain_prompt([x for x in ex if x["kind"] == "top"][: e.examples]) for _, _, ex in work]
    todo = client.uncached(prompts)
    per_score = sum(len(_items(cfg, f["idx"], ex, on)[0]) for _, f, ex in work)
    est = sum(estimate_tokens(m) for m in todo)
    console.print(
        f"explain: {len(work)} features via {e.model} at {client.url}: {len(todo)} explanation requests "
        f"(~{est:,} prompt tokens; {len(prompts) - len(todo)} cached) + {per_score} scoring requests "
        f"(~{est // max(len(todo), 1) * per_score:,} prompt tokens, estimated before caching)",
        highlight=False,
        soft_wrap=True,
    )
    source = f"llm:{e.model}"
    with progress_bar() as bar:
        task = bar.add_task("explain", total=len(prompts), info="", unit="req")
        answers = client.complete_all(prompts, on_done=lambda: bar.update(task, advance=1))
        explanations = [parse_explanation(a) for a in answers]
        for did in {w[0] for w in work}:
            store.set_explanations(
                did,
                [(f["idx"], t, source) for (d, f, _), t in zip(work, explanations, strict=True) if d == did],
            )
        jobs: list[tuple[int, int, str, list[scoring.Item]]] = []
        score_prompts = []
        results: dict[tuple[int, int], dict[str, Any]] = {}
        for (did, f, ex), text in zip(work, explanations, strict=True):
            sets, results[(did, f["idx"])] = _items(cfg, f["idx"], ex, on)
            for method, items in sets.items():
                jobs.append((did, f["idx"], method, items))
                prompt = scoring.detection_prompt if method == "detection" else scoring.fuzzing_prompt
                score_prompts.append(prompt(text, items))
        task2 = bar.add_task("score", total=len(score_prompts), info="", unit="req")
        replies = client.complete_all(score_prompts, on_done=lambda: bar.update(task2, advance=1))
    for (did, idx, method, items), reply in zip(jobs, replies, strict=True):
        preds = scoring.parse_labels(reply, len(items))
        labels = [it.label for it in items]
        entry = (
            scoring.metrics(labels, preds)
            if preds is not None
            else {"score": None, "error": "unparsable answer"}
        )
        results[(did, idx)][method] = entry
    for did in {d for d, _ in results}:
        store.set_scores_many(
            did,
            [
                (idx, sc, score_sets.TOO_FEW if "note" in sc else source)
                for (d, idx), sc in results.items()
                if d == did
            ],
        )
    u = client.usage
    console.print(
        f"explain: {u['requests']} requests ({u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} completion "
        f"tokens), {u['cache_hits']} cache hits, {u['retries']} retries",
        highlight=False,
        soft_wrap=True,
    )


def explain(cfg: ConfigLike) -> Path:
    """Explain and score every feature that fired on at least `explain.min_examples` contexts (the
    others are marked `too few examples`); returns the store path."""
    cfg = as_config(cfg)
    db = feature_store_path(cfg.analyze.out, cfg.explain.db)
    endpoint = cfg.explain.endpoint or os.environ.get("MONOSEMANTIC_ENDPOINT")
    check_output(db, "explain.db", kind="file")  # explanations are written into the store
    with (
        output_lock(db.parent, "explain.db's folder"),  # the lock analyze takes on the same folder
        output_lock(cfg.explain.cache, "explain.cache"),
        disk_full_guard(db, "explain.db"),
        FeatureStore(db) as store,
    ):
        work = _too_few(store, cfg, _work(store, cfg.explain.max_features))
        meta = store.meta()
        on = score_sets.resolve(cfg.explain.score_on, meta)
        console.print(score_sets.describe(on, meta), highlight=False, soft_wrap=True)
        store.set_meta(explain_scored_on=on)
        if endpoint:
            _llm(store, cfg, work, endpoint, on)
        else:
            console.print(
                "explain: no endpoint configured; using the offline explainer and keyword judge",
                soft_wrap=True,
            )
            _offline(store, cfg, work, on)
    return db
