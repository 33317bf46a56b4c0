"""What the viewer opens on: the best live trained dictionary, a representative feature of each, and
prompts drawn from the run's own data. The static export and the server both call these, so the
dashboard and the live viewer open on the same thing.

- A dictionary's *quality* is the share of its features that are live (`store.dead`) times the mean
  explanation score of its scored features (1 when none is scored): a dictionary with most latents
  dead, or with features nobody can explain, ranks low. Trained dictionaries come before fitted
  baselines (PCA, ICA, random, the MLP's neurons); the best one is opened first.
- A *representative* feature is typical rather than cherry-picked: among live features seen in
  enough contexts (`MIN_ACTIVE` tokens, and not marked "too few examples"), those scoring at least
  the median score (when any is scored), the one whose log-density is nearest the median
  log-density.
- *Prompts* for the live views are contexts from the store's top examples of the opened
  dictionary's representative features: text the model really saw, not storyworld's for any model.
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

from monosemantic.explanation.run import TOO_FEW
from monosemantic.store.dead import is_dead
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import MonosemanticError

MIN_ACTIVE = 10  # tokens a representative feature fired on
PROMPTS = 3
_SPECIAL = re.compile(r"^(<\|[^|]*\|>|</?s>|<pad>|<unk>|\[(CLS|SEP|PAD|UNK|MASK)\])$")


def fitted(architecture: str | None) -> bool:
    """A baseline fitted from the activations in one pass (not trained)."""
    from monosemantic.dictionaries.registry import dictionary_class

    try:
        return bool(dictionary_class(str(architecture)).fitted)
    except MonosemanticError:
        return False


def _score(row: dict[str, Any]) -> float | None:
    scores = [row[k] for k in ("score_detection", "score_fuzzing") if row.get(k) is not None]
    return max(scores) if scores else None


def representative(rows: list[dict[str, Any]]) -> int | None:
    """The representative feature of `feature_summaries` rows (see the module docstring)."""
    live = [r for r in rows if not is_dead(r["density"])]
    pool = [r for r in live if (r["n_active"] or 0) >= MIN_ACTIVE and r.get("explanation_source") != TOO_FEW]
    if not pool:
        return live[0]["idx"] if live else (rows[0]["idx"] if rows else None)
    scores = [s for r in pool if (s := _score(r)) is not None]
    if scores:
        floor = statistics.median(scores)
        pool = [r for r in pool if (_score(r) or -1.0) >= floor]
    mid = statistics.median(math.log10(r["density"]) for r in pool)
    return min(pool, key=lambda r: (abs(math.log10(r["density"]) - mid), r["idx"]))["idx"]


def dictionary_choice(store: FeatureStore, d: dict[str, Any]) -> dict[str, Any]:
    """Live and dead counts, mean score, quality and representative feature of one dictionary."""
    rows = store.feature_summaries(d["id"])
    n_live = sum(not is_dead(r["density"]) for r in rows)
    scores = [s for r in rows if not is_dead(r["density"]) and (s := _score(r)) is not None]
    mean = sum(scores) / len(scores) if scores else None
    share = n_live / len(rows) if rows else 0.0
    return {
        "n_live": n_live,
        "n_dead": len(rows) - n_live,
        "mean_score": None if mean is None else round(mean, 4),
        "quality": round(share * (1.0 if mean is None else mean), 4),
        "fitted": fitted(d.get("architecture")),
        "representative": representative(rows),
    }


def best_dictionary(summaries: list[dict[str, Any]]) -> int | None:
    """The id of the dictionary to open first: trained before fitted, then by quality."""
    if not summaries:
        return None
    best = max(
        summaries, key=lambda d: (not d["fitted"], d["n_live"] > 0, d["quality"], d["n_live"], -d["id"])
    )
    return best["id"]


def _text(tokens: list[str]) -> str:
    return "".join(t for t in tokens if not _SPECIAL.match(t)).strip()


def sample_prompts(
    store: FeatureStore, did: int | None, features: list[int], n: int = PROMPTS
) -> list[dict[str, str]]:
    """Up to `n` contexts from the top examples of `features` of dictionary `did`: `text` (the whole
    window) and `prefix` (the text before the peak, to continue or trace)."""
    out: list[dict[str, str]] = []
    for idx in features:
        if did is None or len(out) >= n:
            break
        for e in store.examples(did, idx, kind="top", limit=1):
            toks, peak = e.get("tokens") or [], e.get("peak") or 0
            text, prefix = _text(toks), _text(toks[:peak])
            if text and prefix and {"text": text, "prefix": prefix} not in out:
                out.append({"text": text, "prefix": prefix})
    return out
