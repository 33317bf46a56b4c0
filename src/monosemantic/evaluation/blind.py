"""Blind comparison of two dictionaries (after transcoder_circuits' "are transcoder features as
interpretable as SAE features?"): features of both are shuffled under hidden labels, rated, then
unblinded.

`monosemantic blind CONFIG A B` (`blind(cfg)`, settings in `[compare]`) calls
`blind_prepare(cfg, A, B)`, which samples `n` live features of each (seeded), takes each feature's top
activating windows of the evaluated sequences (the peak token marked `<<like this>>`), shuffles
the 2n items and writes to `compare/blind/`:
- `items.md`: item ids and their contexts, with no dictionary named;
- `ratings.csv`: `id,rating`, the rating 1 (no pattern) .. 5 (one clear pattern) left blank for a
  human, or filled by the judge: the LLM at `[explain].endpoint` (env MONOSEMANTIC_ENDPOINT), or
  `judge="offline"` (explain's offline explainer and keyword judge: 1 + 4 x the feature's mean
  detection/fuzzing score, as in `benchmarks/autointerp.py`);
- `key.json`: which dictionary and feature each id is (do not open it before rating).
`monosemantic unblind CONFIG` (`unblind(cfg)`) calls `score_ratings(folder)`, which joins ratings
with the key: per dictionary the mean rating, its 95% interval and n; the difference A - B; written
to `result.json`.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.config import Config
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import write_json_atomic, write_text_atomic
from monosemantic.utils.torch_utils import resolve_device

from .benchmarks.autointerp import feature_examples, mean_ci95, score_feature
from .compare import compare_folder

SHOWN = 8


def _contexts(cfg: Config, names: list[str]) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Each named dictionary's latent activations [S, T, d_sae] on the evaluated sequences, and their tokens."""
    from monosemantic.activations.cache import ActivationCache

    from .inputs import LazyModel as _Model
    from .inputs import dictionary_sites as _sites
    from .inputs import load_dictionaries as _load_dictionaries
    from .inputs import site_activations as _site_acts

    ecfg = cfg.evaluate
    device = resolve_device(ecfg.device)
    root = Path(ecfg.dictionary if ecfg.dictionary is not None else cfg.train.out)
    cache = ActivationCache(ecfg.cache if ecfg.cache is not None else cfg.harvest.out)
    found = {n: (p, d) for n, p, d in _load_dictionaries(root, device)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"no dictionary named {missing[0]!r} under {root}; choose from {', '.join(found)}")
    model = _Model(cache, device)
    sites = {n: _sites(n, found[n][1], cache)[0] for n in names}
    live = [s for s in set(sites.values()) if s not in cache.sites]
    stored = [s for s in set(sites.values()) if s not in live]
    n_seq = min(ecfg.max_sequences or cache.n_sequences, cache.n_sequences)
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    tokens: list[torch.Tensor] = []
    done = 0
    for batch in cache.iter_sequences(stored, batch_sequences=ecfg.batch_size):
        if done >= n_seq:
            break
        batch = {k: v[: n_seq - done] for k, v in batch.items()}
        done += len(batch["tokens"])
        keep = cache.keep_mask(batch["tokens"], batch.get("roles"))
        acts = _site_acts(batch, list(set(sites.values())), live, model)
        for n in names:
            dic = found[n][1]
            with torch.no_grad():
                f = dic.encode(acts[sites[n]].to(device, dic.dtype)).float().cpu()
            f[~keep] = 0
            feats[n].append(f)
        tokens.append(batch["tokens"])
    tok = model.get().tokenizer
    table = {i: tok.decode([i]) for i in range(len(tok))}
    strings = [[table[int(t)] for t in row] for row in torch.cat(tokens).tolist()]
    return {n: torch.cat(v).numpy() for n, v in feats.items()}, strings


def _render(example: dict[str, Any]) -> str:
    p = example["peak"]
    return (
        "".join(f"<<{t}>>" if i == p else t for i, t in enumerate(example["tokens"]))
        .replace("\n", " ")
        .strip()
    )


_RATE_PROMPT = (
    "Below are text excerpts where one feature of a language model is most active; the most active "
    "token of each is marked <<like this>>. Rate how clearly one single, nameable pattern explains "
    "them all, from 1 (no recognisable pattern) to 5 (one clear pattern). Answer with the number only."
)


def blind(cfg: Config) -> Path:
    """`monosemantic blind`: prepare the blind rating of the two dictionaries `[compare].blind` names,
    in `blind/` under the comparison folder; returns that folder."""
    c = cfg.compare
    if c.blind is None:
        raise ConfigError(
            "blind needs two dictionaries: `monosemantic blind CONFIG A B`, or compare.blind = [A, B]"
        )
    return blind_prepare(cfg, c.blind[0], c.blind[1], compare_folder(cfg) / "blind", c.features, c.judge)


def unblind(cfg: Config) -> dict[str, Any]:
    """`monosemantic unblind`: score the ratings of the blind folder against its key."""
    return score_ratings(compare_folder(cfg) / "blind")


def blind_prepare(cfg: Config, a: str, b: str, folder: Path, n: int = 20, judge: str = "human") -> Path:
    """Write items.md, ratings.csv and key.json for a blind rating of dictionaries `a` and `b`."""
    if a == b:
        raise ConfigError(f"blind needs two different dictionaries (got {a!r} twice)")
    if judge not in ("human", "offline", "endpoint"):
        raise ConfigError(f"unknown judge {judge!r}; use human, offline or endpoint")
    seed = cfg.evaluate.seed if cfg.evaluate.seed is not None else cfg.seed
    feats, strings = _contexts(cfg, [a, b])
    rng = random.Random(seed)
    items = []
    for name in (a, b):
        f = feats[name]
        live = np.flatnonzero((f > 0).any((0, 1))).tolist()
        if not live:
            raise DataError(f"dictionary {name} has no live feature on the evaluated tokens")
        for j in sorted(rng.sample(live, min(n, len(live)))):
            top, held, neg = feature_examples(f[:, :, j], strings, random.Random(f"{seed}:{name}:{j}"))
            items.append({"dictionary": name, "feature": j, "top": top, "held": held, "neg": neg})
    rng.shuffle(items)
    ratings: list[float | None] = [None] * len(items)
    if judge == "offline":
        for i, it in enumerate(items):
            s = score_feature(it["top"], it["held"], it["neg"], f"{seed}:{i}")
            ratings[i] = None if s is None else round(1 + 4 * s["score"], 3)
    elif judge == "endpoint":
        ratings = _llm_ratings(cfg, items)
    md = [
        f"# Blind comparison: {len(items)} features\n",
        "Rate each 1 (no pattern) .. 5 (one clear pattern) in ratings.csv.\n",
    ]
    for i, it in enumerate(items, 1):
        md.append(f"\n## Item {i}\n")
        md += [f"{k}. {_render(e)}\n" for k, e in enumerate(it["top"][:SHOWN], 1)]
    write_text_atomic(folder / "items.md", "".join(md))
    lines = ["id,rating"] + [f"{i},{'' if r is None else r}" for i, r in enumerate(ratings, 1)]
    write_text_atomic(folder / "ratings.csv", "\n".join(lines) + "\n")
    key = {"a": a, "b": b, "judge": judge, "items": {str(i): {"dictionary": it["dictionary"], "feature": it["feature"]}
                                                      for i, it in enumerate(items, 1)}}  # fmt: skip
    write_json_atomic(folder / "key.json", key)
    return folder


def _llm_ratings(cfg: Config, items: list[dict[str, Any]]) -> list[float | None]:
    from monosemantic.explanation.llm_client import ChatClient

    e = cfg.explain
    endpoint = e.endpoint or os.environ.get("MONOSEMANTIC_ENDPOINT")
    if not endpoint:
        raise ConfigError("judge 'endpoint' needs [explain].endpoint or MONOSEMANTIC_ENDPOINT")
    client = ChatClient(endpoint, e.model, api_key=os.environ.get(e.api_key_env), concurrency=e.concurrency,
                        max_retries=e.max_retries, timeout=e.timeout)  # fmt: skip
    prompts = [
        [
            {
                "role": "user",
                "content": _RATE_PROMPT + "\n\n" + "\n".join(_render(x) for x in it["top"][:SHOWN]),
            }
        ]
        for it in items
    ]
    out: list[float | None] = []
    for answer in client.complete_all(prompts):
        m = re.search(r"[1-5]", answer)
        out.append(float(m.group()) if m else None)
    return out


def score_ratings(folder: Path) -> dict[str, Any]:
    """Join ratings.csv with key.json; per dictionary mean rating, 95% interval, n; A - B."""
    key_path, ratings_path = folder / "key.json", folder / "ratings.csv"
    if not key_path.exists() or not ratings_path.exists():
        raise DataError(f"{folder} has no key.json/ratings.csv; run `monosemantic blind CONFIG A B` first")
    key = json.loads(key_path.read_text())
    per: dict[str, list[float]] = {key["a"]: [], key["b"]: []}
    with ratings_path.open() as fh:
        for rec in csv.DictReader(fh):
            value = (rec.get("rating") or "").strip()
            if not value:
                continue
            try:
                rating = float(value)
            except ValueError:
                raise DataError(f"ratings.csv item {rec['id']}: rating {value!r} is not a number") from None
            per[key["items"][rec["id"]]["dictionary"]].append(rating)
    if not any(per.values()):
        raise DataError(
            f"{ratings_path} has no ratings yet; fill the rating column, then run `monosemantic unblind CONFIG`"
        )
    result: dict[str, Any] = {"judge": key.get("judge"), "dictionaries": {}}
    for name, vals in per.items():
        mean, ci = mean_ci95(vals)
        ci = [c if np.isfinite(c) else None for c in ci]
        result["dictionaries"][name] = {
            "mean": mean if np.isfinite(mean) else None,
            "ci95": ci,
            "n": len(vals),
        }
    ma, mb = (result["dictionaries"][key[x]]["mean"] for x in ("a", "b"))
    result["difference_a_minus_b"] = ma - mb if ma is not None and mb is not None else None
    write_json_atomic(folder / "result.json", result)
    return result
