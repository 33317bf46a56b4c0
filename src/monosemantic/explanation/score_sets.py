"""Which contexts detection and fuzzing score an explanation on (`explain.score_on`).

An explanation scored on the very contexts it was written from measures recall of those contexts,
not whether it predicts the feature elsewhere. `analyze` therefore keeps, per feature, a uniform
sample of activating contexts and of silent sequences drawn only from the cache's held-out
sequences (example kinds `held_out` and `held_out_negative`; training never read those sequences
and the explainer is never shown them). `held_out` (the default) scores on those; `all` on the
top, quantile and negative examples the explanation came from. A store analysed from a cache
without a held-out split has no held-out examples: it is scored on `all`, with a warning naming
the fix. Every score records the set it used (`scored_on` in the scores JSON).
"""

from __future__ import annotations

import random
from typing import Any

from monosemantic.explanation import scoring
from monosemantic.utils.progress import console

HELD_OUT, ALL = "held_out", "all"
# (activating kinds, non-activating kinds) of each scoring set
KINDS = {HELD_OUT: (("held_out",), ("held_out_negative",)), ALL: (("top", "quantile"), ("negative",))}
EXPLAINER_KINDS = ("top", "quantile", "negative")  # what explanations may be written from
TOO_FEW = "too few examples"  # the scorer of a feature with too few contexts to score on
NO_HELD_OUT = (
    "the feature store holds no held-out examples (its cache records no held-out split, or it was "
    "analysed before analyze kept them), so explanations are scored on the contexts they were written "
    "from (explain.score_on = all); harvest with harvest.eval_fraction > 0 (default 0.05) and run "
    "`monosemantic analyze CONFIG` again to score on held-out sequences"
)


def resolve(requested: str, store_meta: dict[str, Any]) -> str:
    """The set explain scores on: `requested`, or `all` (with the warning) when `held_out` is asked
    of a store that holds no held-out examples."""
    if requested == HELD_OUT and not store_meta.get("held_out"):
        console.print(f"[yellow]warning:[/] {NO_HELD_OUT}", highlight=False, soft_wrap=True)
        return ALL
    return requested


def describe(on: str, store_meta: dict[str, Any]) -> str:
    """One line for explain's output naming the contexts scores are computed on."""
    if on == HELD_OUT:
        held = store_meta["held_out"]
        return (
            f"explain: scoring on contexts from {held['sequences']:,} held-out sequences the explainer never saw "
            f"(harvest.eval_fraction {held['fraction']}, seed {held['seed']}; explain.score_on = held_out)"
        )
    return "explain: scoring on the top, quantile and negative examples the explanations are written from (explain.score_on = all)"


def contexts(examples: list[dict[str, Any]], kinds: tuple[str, ...]) -> int:
    """Distinct activating contexts (sequences) among a feature's examples of `kinds`."""
    seqs = [e.get("sequence") for e in examples if e["kind"] in kinds]
    return len({s for s in seqs if s is not None}) + sum(s is None for s in seqs)


def score_items(
    examples: list[dict[str, Any]],
    on: str,
    methods: list[str],
    n: int,
    min_examples: int,
    rng: random.Random,
) -> tuple[dict[str, list[scoring.Item]], dict[str, Any]]:
    """The detection and fuzzing contexts of one feature from the `on` set, and what the scores
    JSON records beside the scores: `scored_on`, and a `note` when the feature has fewer than
    `min_examples` activating contexts in that set (then nothing is scored)."""
    pos_kinds, neg_kinds = KINDS[on]
    record: dict[str, Any] = {"scored_on": on}
    have = contexts(examples, pos_kinds)
    if have < min_examples:
        where = "held-out " if on == HELD_OUT else ""
        record["note"] = (
            f"{TOO_FEW}: {have} {where}activating context(s); explain.min_examples = {min_examples}"
        )
        return {}, record
    pos = [e for e in examples if e["kind"] in pos_kinds]
    neg = [e for e in examples if e["kind"] in neg_kinds]
    out: dict[str, list[scoring.Item]] = {}
    if "detection" in methods and pos and neg:
        out["detection"] = scoring.detection_items(pos, neg, n, rng)
    if "fuzzing" in methods and pos:
        out["fuzzing"] = scoring.fuzzing_items(pos, n, rng)
    return out, record
