"""The offline explainer and judge: deterministic stand-ins for an LLM, so that explanations and
scores exist (and every downstream view works) without network access.

**Explainer.** The most characteristic tokens of a feature are those at firing positions of its
examples, weighted by activation, with the highest lift over their base rate (their frequency in
all the dictionary's stored contexts): `lift = (weighted share at firing positions + a) /
(base share + a)`, smoothed by `a`, times the weighted share so one rare token cannot win on a
single hit. On storyworld the analysis also found the planted concept the feature detects best;
when that match is good (AUROC >= 0.8 and F1 >= 0.3) it leads: `concept: colour:pink (AUROC
0.99, F1 0.97); fires on ' pink'`. Source: `offline`.

**Judge.** Keyword matching against the quoted tokens of the explanation (or its content words
when nothing is quoted): a detection context "activates" if it contains a keyword token; a fuzzing
marking is "correct" if every marked token is a keyword. It runs the same detection and fuzzing
procedures as the LLM judge (`scoring.py`). Scorer: `offline-keyword`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from monosemantic.explanation.scoring import Item

GOOD_AUROC, GOOD_F1 = 0.8, 0.3
_STOP = set("the a an and or of to in on at for with is are was were it its this that by as be from".split())


def _norm(tok: str) -> str:
    return tok.strip().lower()


def base_counts(examples: Iterable[dict[str, Any]]) -> Counter[str]:
    """Token frequencies over contexts (the base rate the lift is measured against)."""
    counts: Counter[str] = Counter()
    for e in examples:
        counts.update(_norm(t) for t in e["tokens"])
    return counts


def characteristic_tokens(
    examples: list[dict[str, Any]], base: Counter[str], k: int = 3, smooth: float = 1e-3
) -> list[tuple[str, float]]:
    """The `k` tokens with the highest activation-weighted lift at firing positions."""
    weights: Counter[str] = Counter()
    for e in examples:
        for t, a in zip(e["tokens"], e["activations"], strict=True):
            if a and a > 0 and _norm(t):
                weights[_norm(t)] += float(a)
    total_w, total_b = sum(weights.values()), sum(base.values())
    if total_w <= 0:
        return []
    scored = []
    for tok, w in weights.items():
        share = w / total_w
        lift = (share + smooth) / (base.get(tok, 0) / max(total_b, 1) + smooth)
        scored.append((tok, share * lift))
    scored.sort(key=lambda x: (-x[1], x[0]))
    return scored[:k]


def _snippet(example: dict[str, Any], width: int = 4) -> str:
    p, toks = example["peak"], example["tokens"]
    lo, hi = max(0, p - width), min(len(toks), p + width + 1)
    return "".join(f"<<{t}>>" if i == p else t for i, t in enumerate(toks[lo:hi], lo)).strip()


def offline_explanation(feature: dict[str, Any], top: list[dict[str, Any]], base: Counter[str]) -> str:
    """A one-line explanation from the concept match, characteristic tokens and one context."""
    if not top:
        return "never fires on the analysed tokens"
    toks = characteristic_tokens(top, base)
    fires = "fires on " + ", ".join(repr(t) for t, _ in toks) if toks else "fires on varied tokens"
    auroc, f1 = feature.get("concept_auroc"), feature.get("concept_f1")
    if feature.get("concept") and auroc is not None and auroc >= GOOD_AUROC and (f1 or 0) >= GOOD_F1:
        return f"concept: {feature['concept']} (AUROC {auroc:.2f}, F1 {f1:.2f}); {fires}"
    return f"{fires}; e.g. \u201c{_snippet(top[0])}\u201d"


def keywords(explanation: str) -> set[str]:
    """Quoted tokens of an explanation (the offline explainer quotes them), else content words."""
    head = explanation.split("; e.g.")[0]
    quoted = re.findall(r"'([^']*)'|\"([^\"]*)\"", head)
    words = {_norm(a or b) for a, b in quoted if _norm(a or b)}
    if words:
        return words
    return {w for w in re.findall(r"[a-z]+", explanation.lower()) if len(w) > 2 and w not in _STOP}


class KeywordJudge:
    """Answers detection and fuzzing questions by keyword matching (deterministic)."""

    name = "offline-keyword"

    def __init__(self, explanation: str) -> None:
        self.words = keywords(explanation)

    def detect(self, items: list[Item]) -> list[int]:
        return [int(any(_norm(t) in self.words for t in it.tokens)) for it in items]

    def fuzz(self, items: list[Item]) -> list[int]:
        return [
            int(bool(it.marked) and all(_norm(it.tokens[i]) in self.words for i in it.marked)) for it in items
        ]
