from __future__ import annotations

import time

from monosemantic.corpus import lexicon
from monosemantic.corpus.concepts import CONCEPTS, KINDS, concept_index
from monosemantic.corpus.storyworld import generate_stories, make_story

_PRONOUN_GENDER = {"she": "f", "her": "f", "he": "m", "him": "m", "his": "m"}


def test_deterministic_by_seed_and_index():
    a = [s.text for s in generate_stories(7, 50)]
    assert a == [s.text for s in generate_stories(7, 50)]
    b = [s.text for s in generate_stories(8, 50)]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 45
    # story i does not depend on generating the ones before it
    assert make_story(7, 37).text == a[37]
    assert [s.text for s in generate_stories(7, 5, start=30)] == a[30:35]
    assert [s.spans for s in generate_stories(7, 3, start=10)] == [
        make_story(7, i).spans for i in (10, 11, 12)
    ]


def test_fifty_thousand_distinct_stories():
    t0 = time.perf_counter()
    texts = [s.text for s in generate_stories(0, 50_000)]
    elapsed = time.perf_counter() - t0
    assert len(set(texts)) == 50_000
    assert elapsed < 60, f"generating 50k stories took {elapsed:.1f}s"


def test_story_shape_and_vocabulary():
    import re

    words: set[str] = set()
    for s in generate_stories(3, 2000):
        n_sentences = sum(sp.concept == "syntax:sentence_start" for sp in s.spans)
        assert 3 <= n_sentences <= 8, s.text
        assert s.text.count('"') % 2 == 0
        words.update(re.findall(r"[A-Za-z]+", s.text))
    assert 150 <= len(words) <= 400


def test_at_least_30_concepts_of_6_kinds_all_planted():
    assert len(CONCEPTS) >= 30 and len(KINDS) >= 6
    assert len({c.name for c in CONCEPTS}) == len(CONCEPTS)
    assert concept_index(CONCEPTS[5].name) == 5
    seen = {sp.concept for s in generate_stories(5, 3000) for sp in s.spans}
    assert seen == {c.name for c in CONCEPTS}


def test_spans_cover_the_right_words():
    colours, places = set(lexicon.COLOURS), set(lexicon.PLACES)
    numbers = set(lexicon.NUMBER_WORDS) | {str(i) for i in range(2, 11)}
    for s in generate_stories(11, 1000):
        for sp in s.spans:
            word = s.text[sp.start : sp.end]
            assert word == word.strip() and word
            kind, _, value = sp.concept.partition(":")
            if kind == "colour":
                assert word == value and word in colours
            elif kind == "place":
                assert word == value and word in places
            elif kind == "number":
                assert word in numbers
            elif kind == "weather":
                assert word in lexicon.WEATHER[value]
            elif kind == "feeling":
                assert word in lexicon.FEELINGS[value]
            elif kind == "object":
                assert word in (value, lexicon.OBJECTS[value])
            elif kind == "quote":
                assert s.text[sp.start - 1] == '"' and s.text[sp.end] == '"'


def test_pronouns_agree_with_their_character():
    n_pronouns = 0
    for s in generate_stories(21, 2000):
        by_pos: dict[tuple[int, int], list[str]] = {}
        for sp in s.spans:
            if sp.concept.startswith("character:"):
                by_pos.setdefault((sp.start, sp.end), []).append(sp.concept.split(":")[1])
        for (a, b), names in by_pos.items():
            word = s.text[a:b]
            if word in lexicon.CHARACTERS:
                assert names == [word]
            elif word.lower() == "they":
                assert len(names) == 2
            else:
                n_pronouns += 1
                assert len(names) == 1
                assert lexicon.CHARACTERS[names[0]] == _PRONOUN_GENDER[word.lower()], s.text
                # the pronoun comes after its character was named
                assert names[0] in s.text[:a]
    assert n_pronouns > 3000


def test_circuit_prompt_pattern_occurs():
    """'Lily the cat went to the beach. She ...' is the pattern the circuits stage studies."""
    hits = 0
    for s in generate_stories(0, 500):
        first, _, rest = s.text.partition(". ")
        name = first.split(" ")[0]
        if first.endswith(tuple(lexicon.PLACES)) and " went to the " in first and name in lexicon.CHARACTERS:
            if rest.split(" ")[0] == {"f": "She", "m": "He"}[lexicon.CHARACTERS[name]]:
                hits += 1
    assert hits > 50
