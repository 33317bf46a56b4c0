from __future__ import annotations

import torch

from monosemantic.corpus import lexicon
from monosemantic.corpus.concepts import CONCEPTS, N_CONCEPTS, concept_index, concepts_of_kind, label_tokens
from monosemantic.corpus.storyworld import ConceptSpan, Story, generate_stories

_PRONOUN_GENDER = {"she": "f", "her": "f", "he": "m", "him": "m", "his": "m"}


def _encode(tok, story):
    enc = tok(story.text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def test_colour_and_quote_labels(bpe_tokenizer):
    colour_cols = concepts_of_kind("colour")
    q = concept_index("quote")
    n_colour = n_quote = 0
    for story in generate_stories(77, 300):
        ids, offsets = _encode(bpe_tokenizer, story)
        labels = label_tokens(story, offsets)
        assert labels.shape == (len(ids), N_CONCEPTS) and labels.dtype == torch.bool
        for t, (a, b) in enumerate(offsets):
            piece = story.text[a:b].strip()
            for c in colour_cols:
                if labels[t, c]:
                    n_colour += 1
                    word = CONCEPTS[c].name.split(":")[1]
                    # the token is (part of) exactly that colour word
                    assert piece and story.text[a:b].strip() in word, (piece, word)
            if labels[t, q]:
                n_quote += 1
                assert story.text[:b].count('"') % 2 == 1 or story.text[:a].count('"') % 2 == 1
            elif piece and piece != '"':
                # a token strictly inside a quotation is labelled quote
                assert not (story.text[:a].count('"') % 2 == 1 and '"' not in story.text[a:b])
    assert n_colour > 100 and n_quote > 100


def test_pronoun_tokens_refer_to_their_character(bpe_tokenizer):
    n = 0
    for story in generate_stories(78, 300):
        _, offsets = _encode(bpe_tokenizer, story)
        labels = label_tokens(story, offsets)
        for t, (a, b) in enumerate(offsets):
            word = story.text[a:b].strip().lower()
            whole_word = not story.text[b : b + 1].isalpha() and not story.text[max(a - 1, 0) : a].isalpha()
            if word in _PRONOUN_GENDER and whole_word:
                chars = [
                    CONCEPTS[c].name.split(":")[1]
                    for c in labels[t].nonzero().flatten().tolist()
                    if CONCEPTS[c].kind == "character"
                ]
                assert len(chars) == 1
                assert lexicon.CHARACTERS[chars[0]] == _PRONOUN_GENDER[word]
                n += 1
    assert n > 200


def test_overlap_rules_whitespace_and_special_offsets():
    story = Story(
        'Mia said, "I am happy now."', [ConceptSpan(11, 26, "quote"), ConceptSpan(0, 3, "character:Mia")]
    )
    # (0, 0) is a special token; (10, 11) the opening quote; (13, 14) whitespace only; (25, 27) '."'
    offsets = [(0, 0), (0, 3), (3, 8), (10, 11), (11, 12), (12, 13), (13, 14), (14, 20), (25, 27)]
    lab = label_tokens(story, offsets)
    q, mia = concept_index("quote"), concept_index("character:Mia")
    assert lab[:, q].tolist() == [False, False, False, False, True, False, True, True, True]
    assert lab[:, mia].tolist() == [False, True] + [False] * 7
    assert lab.sum() == 5
