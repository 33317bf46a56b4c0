"""The concepts planted in storyworld, and their projection from characters onto tokens.

`CONCEPTS` is an ordered list and the order is a contract: a concept's id is its index, and
per-token label tensors (`[n_tokens, n_concepts]`) use those ids as columns. Stories mark
concepts on character spans so the labels survive any tokenizer; `label_tokens` maps them to
tokens by overlap.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import lexicon

if TYPE_CHECKING:
    from .storyworld import Story


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str
    description: str


def _build() -> list[Concept]:
    c: list[Concept] = []
    for a in lexicon.ANIMALS:
        c.append(Concept(f"entity_type:{a}", "entity_type", f"the species word '{a}'"))
    c.append(Concept("entity_type:person", "entity_type", "a person word ('girl', 'boy')"))
    for name, g in lexicon.CHARACTERS.items():
        subj, obj, poss = lexicon.PRONOUNS[g]
        c.append(
            Concept(
                f"character:{name}",
                "character",
                f"the character {name}: the name and every pronoun ({subj}/{obj}/{poss}/they) referring to {name}",
            )
        )
    for p in lexicon.PLACES:
        c.append(Concept(f"place:{p}", "place", f"the place '{p}'"))
    for o, pl in lexicon.OBJECTS.items():
        c.append(Concept(f"object:{o}", "object", f"the object '{o}' (or '{pl}')"))
    for col in lexicon.COLOURS:
        c.append(Concept(f"colour:{col}", "colour", f"the colour '{col}'"))
    c.append(Concept("number", "number", "a number of things, as a word (two..ten) or digits"))
    for f, words in lexicon.FEELINGS.items():
        c.append(Concept(f"feeling:{f}", "feeling", f"the feeling {f} ({'/'.join(words)})"))
    for w, (adj, noun) in lexicon.WEATHER.items():
        c.append(Concept(f"weather:{w}", "weather", f"{w} weather ('{adj}', '{noun}')"))
    c.append(Concept("quote", "quote", "every token inside dialogue quotes"))
    c.append(Concept("syntax:subject_pronoun", "syntax", "a pronoun in subject position (she/he/they)"))
    c.append(Concept("syntax:possessive", "syntax", "a possessive pronoun (her/his) before a noun"))
    c.append(Concept("syntax:sentence_start", "syntax", "the first word of a sentence"))
    c.append(Concept("syntax:cause", "syntax", "a cause/effect connective ('because', 'so')"))
    return c


CONCEPTS: list[Concept] = _build()
N_CONCEPTS: int = len(CONCEPTS)
_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CONCEPTS)}
KINDS: list[str] = list(dict.fromkeys(c.kind for c in CONCEPTS))


def concept_index(name: str) -> int:
    """The id (column) of a concept; raises KeyError naming the valid kinds for an unknown one."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(
            f"unknown concept {name!r}; concepts look like 'colour:red' (kinds: {', '.join(KINDS)})"
        ) from None


def concepts_of_kind(kind: str) -> list[int]:
    """Ids of all concepts of one kind, e.g. every 'colour'."""
    return [i for i, c in enumerate(CONCEPTS) if c.kind == kind]


def label_array(text: str, spans: Sequence, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """`label_tokens` on raw parts, as numpy (the window packer uses it without building tensors)."""
    n = len(offsets)
    out = np.zeros((n, N_CONCEPTS), dtype=np.bool_)
    if n == 0 or not spans:
        return out
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    # Fast tokenizers emit offsets in order (special tokens aside, which are (0, 0)); the running
    # max of ends is then sorted, bisect finds the first token that may overlap a span, and we walk
    # forward while tokens start before the span ends.
    reach = np.maximum.accumulate(np.asarray(ends, dtype=np.int64)).tolist()
    for sp in spans:
        s, e, col = sp.start, sp.end, _INDEX[sp.concept]
        t = bisect.bisect_right(reach, s)
        while t < n and starts[t] < e:
            ts, te = starts[t], ends[t]
            if te > ts:
                lo, hi = max(s, ts), min(e, te)
                if hi > lo and not text[lo:hi].isspace():
                    out[t, col] = True
            t += 1
    return out


def label_tokens(story: Story, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """BoolTensor[n_tokens, n_concepts]: token t has concept c if its character span overlaps a
    span of c by at least one non-whitespace character. `offsets` are (start, end) per token as a
    fast tokenizer's `return_offsets_mapping` gives them; special tokens ((0, 0)) get nothing."""
    return torch.from_numpy(label_array(story.text, story.spans, offsets))
