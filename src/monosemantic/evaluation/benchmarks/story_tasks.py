"""Story-level labelled data from storyworld, for SCR and TPP.

A text is a story's opening: its shortest prefix of whole sentences (at most two) that names both
a species (or person word) and a place, so the concepts weigh in a mean over a dozen tokens
rather than being diluted over a whole story (the storyworld LM carries little of a story's
animal into later tokens). It is labelled with the planted concepts inside it. Two binary concepts
are made from two pairs of values of two kinds: A = "the story's animal is `cat` (1) or `dog`
(0)", B = "the story's place is `beach` (1) or `park` (0)"; stories with both or neither value of
a pair are left out. `correlated_split` then draws a training set in which A and B agree on a
chosen fraction of stories (1.0: B predicts A perfectly, the spurious-correlation set) and a
balanced test set in which they are independent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from monosemantic.corpus.storyworld import Story, make_story

STORY_SEED = 7_919  # a storyworld seed of its own, so the stories differ from the training corpus
PAIRS = {"A": ("entity_type:cat", "entity_type:dog"), "B": ("place:beach", "place:park")}
ONE_VS_REST = [
    "entity_type:cat",
    "entity_type:dog",
    "entity_type:fox",
    "place:beach",
    "place:park",
    "place:farm",
]


@dataclass
class StoryData:
    texts: list[str]
    a: np.ndarray  # 0/1 per story
    b: np.ndarray  # 0/1 per story
    concepts: dict[str, np.ndarray]  # ONE_VS_REST concept -> 0/1 per story


_SENTENCE_END = re.compile(r'[.!?]"?(?=\s|$)')


def opening(story: Story, max_sentences: int = 2) -> tuple[str, set[str]] | None:
    """(text, concepts) of the story's shortest opening with a species and a place, or None."""
    for n, m in enumerate(_SENTENCE_END.finditer(story.text), 1):
        if n > max_sentences:
            return None
        kinds = {sp.concept for sp in story.spans if sp.end <= m.end()}
        if any(k.startswith("entity_type:") for k in kinds) and any(k.startswith("place:") for k in kinds):
            return story.text[: m.end()], kinds
    return None


def _value(kinds: set[str], pair: tuple[str, str]) -> int | None:
    yes, no = pair[0] in kinds, pair[1] in kinds
    return 1 if yes and not no else 0 if no and not yes else None


def labelled_stories(n_each: int, seed: int = STORY_SEED, max_stories: int = 200_000) -> StoryData:
    """Stories with defined A and B, at least `n_each` of each of the four (A, B) combinations."""
    texts, a, b = [], [], []
    counts = np.zeros((2, 2), dtype=int)
    concepts: dict[str, list[int]] = {c: [] for c in ONE_VS_REST}
    i = 0
    while counts.min() < n_each and i < max_stories:
        found = opening(make_story(seed, i))
        i += 1
        if found is None:
            continue
        text, kinds = found
        va, vb = _value(kinds, PAIRS["A"]), _value(kinds, PAIRS["B"])
        if va is None or vb is None or counts[va, vb] >= n_each:
            continue
        counts[va, vb] += 1
        texts.append(text)
        a.append(va)
        b.append(vb)
        for c in ONE_VS_REST:
            concepts[c].append(int(c in kinds))
    return StoryData(texts, np.array(a), np.array(b), {c: np.array(v) for c, v in concepts.items()})


def correlated_split(
    a: np.ndarray, b: np.ndarray, correlation: float, n_train: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, test ids): in train, A == B on a `correlation` share of rows (classes of A balanced);
    test is balanced over the four (A, B) cells and disjoint from train."""
    rng = np.random.default_rng(seed)
    cells = {(i, j): rng.permutation(np.flatnonzero((a == i) & (b == j))) for i in (0, 1) for j in (0, 1)}
    per_cell_test = n_test // 4
    test = np.concatenate([cells[c][:per_cell_test] for c in cells])
    agree = int(round(n_train * correlation / 2))
    disagree = n_train // 2 - agree
    train = np.concatenate(
        [
            cells[(1, 1)][per_cell_test : per_cell_test + agree],
            cells[(0, 0)][per_cell_test : per_cell_test + agree],
            cells[(1, 0)][per_cell_test : per_cell_test + disagree],
            cells[(0, 1)][per_cell_test : per_cell_test + disagree],
        ]
    )
    return train, test
