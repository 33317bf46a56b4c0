"""Scoring explanations by detection and fuzzing, after delphi (Paulo et al. 2024,
"Automatically Interpreting Millions of Features in Large Language Models").

- **Detection**: the judge sees the explanation and a shuffled mix of contexts where the feature
  fires and contexts where it does not, and says which ones fire. Score: balanced accuracy (F1,
  precision and recall are stored too).
- **Fuzzing**: the judge sees activating contexts with tokens marked `<<like this>>`: in half of
  them the marks sit on the tokens that really fire, in the other half on as many random
  non-firing tokens. It says, per context, whether the marking matches the explanation.
  Score: balanced accuracy over correct/incorrect marking.

The sampling, prompts, answer parsing and metrics here are shared by every judge: an LLM at an
OpenAI-compatible endpoint or the offline keyword judge (`offline.py`), so the two differ only
in who answers.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any


@dataclass
class Item:
    """One context shown to a judge: its tokens, which are marked (fuzzing), the true label."""

    tokens: list[str]
    label: int
    marked: list[int]

    def text(self) -> str:
        marked = set(self.marked)
        return "".join(f"<<{t}>>" if i in marked else t for i, t in enumerate(self.tokens)).replace("\n", " ")


def firing(example: dict[str, Any]) -> list[int]:
    """Positions where an example's feature is active."""
    return [i for i, a in enumerate(example["activations"]) if a and a > 0]


def detection_items(pos: list[dict], neg: list[dict], n: int, rng: random.Random) -> list[Item]:
    """Up to `n` activating and `n` non-activating contexts, shuffled (nothing is marked)."""
    items = [Item(e["tokens"], 1, []) for e in rng.sample(pos, min(n, len(pos)))]
    items += [Item(e["tokens"], 0, []) for e in rng.sample(neg, min(n, len(neg)))]
    rng.shuffle(items)
    return items


def fuzzing_items(pos: list[dict], n: int, rng: random.Random) -> list[Item]:
    """Up to `n` activating contexts; half marked on the firing tokens, half on random others."""
    chosen = rng.sample(pos, min(n, len(pos)))
    items = []
    for j, e in enumerate(chosen):
        fire = firing(e)
        others = [i for i in range(len(e["tokens"])) if i not in fire]
        if j % 2 == 0 or not others:
            items.append(Item(e["tokens"], 1, fire))
        else:
            items.append(Item(e["tokens"], 0, sorted(rng.sample(others, min(len(fire) or 1, len(others))))))
    rng.shuffle(items)
    return items


_SYSTEM = (
    "You are a meticulous AI researcher studying features of a language model. Each feature "
    "responds to some particular pattern in text."
)


def detection_prompt(explanation: str, items: list[Item]) -> list[dict[str, str]]:
    listing = "\n".join(f"Example {i + 1}: {it.text()}" for i, it in enumerate(items))
    return [
        {"role": "system", "content": _SYSTEM},
        {
            "role": "user",
            "content": f"Feature explanation: {explanation}\n\nHere are {len(items)} text examples. For each one, "
            "decide whether the feature described above activates anywhere in it.\n\n"
            f"{listing}\n\nAnswer with only a JSON list of {len(items)} numbers, 1 if the feature activates "
            "in that example and 0 if it does not, e.g. [1, 0, ...].",
        },
    ]


def fuzzing_prompt(explanation: str, items: list[Item]) -> list[dict[str, str]]:
    listing = "\n".join(f"Example {i + 1}: {it.text()}" for i, it in enumerate(items))
    return [
        {"role": "system", "content": _SYSTEM},
        {
            "role": "user",
            "content": f"Feature explanation: {explanation}\n\nIn each example below some tokens are marked "
            "<<like this>>. Decide, for each example, whether the marked tokens are exactly the ones the "
            f"explanation describes.\n\n{listing}\n\nAnswer with only a JSON list of {len(items)} numbers, 1 if "
            "the marking is correct and 0 if it is not.",
        },
    ]


def parse_labels(answer: str, n: int) -> list[int] | None:
    """The last JSON-looking list of n 0/1 values in an answer (None if there is none)."""
    for match in reversed(re.findall(r"\[[^\[\]]*\]", answer)):
        try:
            values = json.loads(match)
        except json.JSONDecodeError:
            continue
        if isinstance(values, list) and len(values) == n and all(v in (0, 1, True, False) for v in values):
            return [int(v) for v in values]
    digits = re.findall(r"\b[01]\b", answer)
    return [int(d) for d in digits[-n:]] if len(digits) >= n else None


def metrics(labels: list[int], preds: list[int]) -> dict[str, float | int]:
    """Balanced accuracy (the `score`), accuracy, precision, recall and F1 of binary predictions."""
    tp = sum(1 for y, p in zip(labels, preds, strict=True) if y and p)
    tn = sum(1 for y, p in zip(labels, preds, strict=True) if not y and not p)
    fp = sum(1 for y, p in zip(labels, preds, strict=True) if not y and p)
    fn = sum(1 for y, p in zip(labels, preds, strict=True) if y and not p)
    pos, neg = tp + fn, tn + fp
    rates = [r for r in (tp / pos if pos else None, tn / neg if neg else None) if r is not None]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "score": round(sum(rates) / len(rates), 4) if rates else 0.0,
        "accuracy": round((tp + tn) / max(len(labels), 1), 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "n": len(labels),
    }
