"""storyworld: a deterministic generator of short children's stories that knows its own concepts.

Each story has 3-8 sentences about one or two characters ("Lily the cat", "Tom the boy"), a
place, an object, a colour, the weather, feelings, dialogue and cause and effect; characters
are introduced by name and then referred to by pronouns wherever that is unambiguous (the
pronoun always agrees with the character's gender). Every concept-bearing word is recorded as
a `ConceptSpan` of character offsets, so token labels are exact for any tokenizer.

Story i depends only on (seed, i): its random generator is seeded from a hash of both, so a
resumed run or a worker can generate any story without generating the ones before it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count

from . import lexicon
from . import templates as T

_SLOT = re.compile(r"\{([^}]+)\}")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class ConceptSpan:
    start: int
    end: int
    concept: str


@dataclass(slots=True)
class Story:
    text: str
    spans: list[ConceptSpan] = field(default_factory=list)


@dataclass(slots=True)
class _Character:
    name: str
    gender: str
    species: str  # the word ("cat", "girl")
    species_concept: str
    introduced: bool = False

    @property
    def concept(self) -> str:
        return f"character:{self.name}"


def _parse(template: str) -> tuple[tuple[bool, str], ...]:
    """Split a template once, at import, into (is_slot, text) pieces."""
    pieces, pos = [], 0
    for m in _SLOT.finditer(template):
        if m.start() > pos:
            pieces.append((False, template[pos : m.start()]))
        pieces.append((True, m.group(1)))
        pos = m.end()
    if pos < len(template):
        pieces.append((False, template[pos:]))
    return tuple(pieces)


def _parse_all(ts: list[str]) -> list[tuple[tuple[bool, str], ...]]:
    return [_parse(t) for t in ts]


_OPENINGS = _parse_all(T.OPENINGS)
_PLACE = _parse_all(T.PLACE)
_A_EVENTS = _parse_all(T.A_EVENTS)
_WEATHER = {w: _parse_all(ts) for w, ts in T.WEATHER_EVENTS.items()}
_B_INTRO = _parse_all(T.B_INTRO)
_B_EVENTS = _parse_all(T.B_EVENTS)
_ENDINGS = _parse_all(T.ENDINGS)
_AB_ENDINGS = _parse_all(T.AB_ENDINGS)

_RICH_SLOTS = {"obj", "objs", "colour", "num", "feel"}


def _rich(pieces: list[tuple[tuple[bool, str], ...]]) -> list[tuple[tuple[bool, str], ...]]:
    """Templates with enough free slots that short stories made of them rarely repeat."""
    return [p for p in pieces if any(is_slot and text in _RICH_SLOTS for is_slot, text in p)]


_RICH_A_EVENTS = _rich(_A_EVENTS)
_RICH_ENDINGS = _rich(_ENDINGS)
_NAMES = list(lexicon.CHARACTERS)
_OBJECTS = list(lexicon.OBJECTS)
_FEELINGS = list(lexicon.FEELINGS)
_WEATHERS = list(lexicon.WEATHER)
_PRONOUN_P = 0.7  # chance of a pronoun (where unambiguous) rather than the name
# sentences per story, and their weights (3-sentence stories are the likeliest to repeat)
_LENGTHS, _LENGTH_WEIGHTS = [3, 4, 5, 6, 7, 8], [1, 2, 2, 2, 2, 1]


class _Builder:
    """Writes one story, recording concept spans as it goes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.parts: list[str] = []
        self.spans: list[ConceptSpan] = []
        self.n = 0
        self.sentence_start = 0
        self.chars: dict[str, _Character] = {}
        self.place = rng.choice(lexicon.PLACES)
        self.obj, self.obj2 = rng.sample(_OBJECTS, 2)
        self.colour, self.colour2 = rng.sample(lexicon.COLOURS, 2)
        self.weather = rng.choice(_WEATHERS)
        self.place_said = False
        self.quote_open = False
        self.n_sentences = 0
        self.in_sentence: set[str] = set()
        self.sentence_part0 = 0

    # -- low-level writing ----------------------------------------------------------------
    def lit(self, s: str) -> None:
        self.parts.append(s)
        self.n += len(s)
        if s.count('"') % 2:
            self.quote_open = not self.quote_open

    def word(self, s: str, *concepts: str) -> None:
        """A concept-bearing word (never contains a quote mark)."""
        n = self.n
        for c in concepts:
            self.spans.append(ConceptSpan(n, n + len(s), c))
        self.parts.append(s)
        self.n = n + len(s)

    def _at_clause_start(self) -> bool:
        """True where the next word starts a sentence or an opened quotation (so is capitalised)."""
        return self.n == self.sentence_start or (self.quote_open and self.parts[-1].endswith('"'))

    # -- references to characters -----------------------------------------------------------
    def _pronoun_ok(self, ch: _Character) -> bool:
        """A pronoun is used only if no other introduced character shares it (no ambiguity)."""
        if not ch.introduced:
            return False
        return all(o is ch or not o.introduced or o.gender != ch.gender for o in self.chars.values())

    def _name(self, ch: _Character) -> None:
        ch.introduced = True
        self.in_sentence.add(ch.name)
        self.word(ch.name, ch.concept)

    def _ref(self, ch: _Character, case: int) -> None:
        """case 0 subject, 1 object, 2 possessive."""
        if self._pronoun_ok(ch) and (ch.name in self.in_sentence or self.rng.random() < _PRONOUN_P):
            p = lexicon.PRONOUNS[ch.gender][case]
            if self._at_clause_start():
                p = p.capitalize()
            extra = ("syntax:subject_pronoun",) if case == 0 else ("syntax:possessive",) if case == 2 else ()
            self.word(p, ch.concept, *extra)
            self.in_sentence.add(ch.name)
        else:
            self._name(ch)
            if case == 2:
                self.lit("'s")

    def _pair(self) -> None:
        a, b = self.chars["A"], self.chars["B"]
        if a.introduced and b.introduced and self.rng.random() < 0.6:
            self.word(
                "They" if self._at_clause_start() else "they", a.concept, b.concept, "syntax:subject_pronoun"
            )
        else:
            self._name(a)
            self.lit(" and ")
            self._name(b)

    # -- slots --------------------------------------------------------------------------------
    def slot(self, name: str) -> None:
        rng = self.rng
        if name in ("A", "B"):
            self._ref(self.chars[name], 0)
        elif name == "AB":
            self._pair()
        elif name[0] in "AB" and name[1] == ".":
            ch, attr = self.chars[name[0]], name[2:]
            if attr == "o":
                self._ref(ch, 1)
            elif attr == "p":
                self._ref(ch, 2)
            elif attr == "name":
                self._name(ch)
            else:  # species
                self.word(ch.species, ch.species_concept)
        elif name == "place":
            self.place_said = True
            self.word(self.place, f"place:{self.place}")
        elif name in ("obj", "obj2"):
            o = self.obj if name == "obj" else self.obj2
            self.word(o, f"object:{o}")
        elif name in ("objs", "obj2s"):
            o = self.obj if name == "objs" else self.obj2
            self.word(lexicon.OBJECTS[o], f"object:{o}")
        elif name in ("colour", "colour2"):
            c = self.colour if name == "colour" else self.colour2
            self.word(c, f"colour:{c}")
        elif name == "num":
            k = rng.randrange(len(lexicon.NUMBER_WORDS))
            self.word(lexicon.NUMBER_WORDS[k] if rng.random() < 0.75 else str(k + 2), "number")
        elif name == "weather":
            self.word(lexicon.WEATHER[self.weather][0], f"weather:{self.weather}")
        elif name == "wnoun":
            self.word(lexicon.WEATHER[self.weather][1], f"weather:{self.weather}")
        elif name.startswith("feel"):
            f = name[5:] or rng.choice(_FEELINGS)
            self.word(rng.choice(lexicon.FEELINGS[f]), f"feeling:{f}")
        elif name in ("because", "so"):
            self.word(name, "syntax:cause")
        else:
            raise KeyError(f"storyworld template uses unknown slot {{{name}}}")

    def sentence(self, pieces: tuple[tuple[bool, str], ...]) -> None:
        if self.n:
            self.lit(" ")
        self.sentence_start = self.n
        self.sentence_part0 = len(self.parts)
        self.n_sentences += 1
        self.in_sentence = set()
        for is_slot, text in pieces:
            if is_slot:
                self.slot(text)
            else:
                self.lit(text)
        self._mark_sentence()

    def _mark_sentence(self) -> None:
        """Record the sentence's first word and the inside of each quotation."""
        s0 = self.sentence_start
        text = "".join(self.parts[self.sentence_part0 :])
        m = _WORD.search(text)
        if m:
            self.spans.append(ConceptSpan(s0 + m.start(), s0 + m.end(), "syntax:sentence_start"))
        open_ = text.find('"')
        while open_ >= 0:
            close = text.find('"', open_ + 1)
            if close < 0:
                break
            self.spans.append(ConceptSpan(s0 + open_ + 1, s0 + close, "quote"))
            open_ = text.find('"', close + 1)

    def story(self) -> Story:
        return Story("".join(self.parts), sorted(self.spans, key=lambda s: (s.start, s.end)))


def _make_character(rng: random.Random, name: str) -> _Character:
    gender = lexicon.CHARACTERS[name]
    if rng.random() < 0.2:
        return _Character(name, gender, lexicon.PERSON_WORDS[gender], "entity_type:person")
    species = rng.choice(lexicon.ANIMALS)
    return _Character(name, gender, species, f"entity_type:{species}")


def story_rng(seed: int, index: int) -> random.Random:
    """The generator of story `index`: seeded from a hash of (seed, index) only."""
    digest = hashlib.blake2b(f"storyworld:{seed}:{index}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def make_story(seed: int, index: int) -> Story:
    """Story number `index` of the storyworld with this seed."""
    rng = story_rng(seed, index)
    b = _Builder(rng)
    name_a, name_b = rng.sample(_NAMES, 2)
    b.chars["A"] = _make_character(rng, name_a)
    b.chars["B"] = _make_character(rng, name_b)
    n = rng.choices(_LENGTHS, _LENGTH_WEIGHTS)[0]

    b.sentence(rng.choice(_OPENINGS))
    if not b.place_said and rng.random() < 0.7:
        b.sentence(rng.choice(_PLACE))
    n_middle = max(1, n - 1 - b.n_sentences)
    with_b = n >= 4 and rng.random() < 0.55
    intro_at = rng.randrange(n_middle) if with_b else n_middle
    short = n == 3  # few sentences: use only slot-rich templates, so 50k stories stay distinct
    solo = _RICH_A_EVENTS if short else _A_EVENTS + _WEATHER[b.weather]
    duo = solo + _B_EVENTS + _B_EVENTS  # after B arrives, favour sentences about both
    used: set[int] = set()
    for i in range(n_middle):
        if i == intro_at:
            b.sentence(rng.choice(_B_INTRO))
            continue
        pool = duo if i > intro_at else solo
        j = rng.randrange(len(pool))
        while id(pool[j]) in used:
            j = rng.randrange(len(pool))
        used.add(id(pool[j]))
        b.sentence(pool[j])
    endings = _RICH_ENDINGS if short else _AB_ENDINGS if with_b and rng.random() < 0.5 else _ENDINGS
    b.sentence(rng.choice(endings))
    return b.story()


def generate_stories(seed: int, n: int | None = None, start: int = 0) -> Iterator[Story]:
    """Stories start, start+1, ... (n of them; n=None: forever). Story i depends only on (seed, i)."""
    indices = count(start) if n is None else range(start, start + n)
    for i in indices:
        yield make_story(seed, i)
