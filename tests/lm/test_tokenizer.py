"""The byte-level BPE tokenizer is lossless and uses one special token for BOS/EOS/PAD."""

from __future__ import annotations

import pytest

from monosemantic.corpus.storyworld import generate_stories
from monosemantic.lm.tokenizer import SPECIAL, train_tokenizer
from monosemantic.utils.errors import ConfigError


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer((s.text for s in generate_stories(0, 300)), vocab_size=600, model_max_length=64)


def test_round_trip_storyworld_and_unicode(tokenizer):
    texts = [s.text for s in generate_stories(7, 20)]
    texts += [
        "héllo ünïcode 🐱 日本語 — “quotes”\ttabs\n\nnew lines  double  spaces",
        "",
        " leading",
        "\x00\x7f",
    ]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_storyworld_words_become_single_tokens(tokenizer):
    story = next(generate_stories(3, 1)).text
    ids = tokenizer.encode(story)
    assert len(ids) < len(story) / 3  # merges learned: far fewer tokens than characters
    assert len(tokenizer) <= 600


def test_special_token_policy(tokenizer, tmp_path):
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.pad_token == SPECIAL
    assert tokenizer.bos_token_id == 0
    assert tokenizer.encode("Lily")[0] != 0  # the tokenizer never inserts BOS itself
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "Lily the cat went to the beach."
    assert again.encode(text) == tokenizer.encode(text)
    assert again.eos_token_id == 0 and again.pad_token_id == 0


def test_too_small_vocab_is_a_config_error():
    with pytest.raises(ConfigError, match="vocab_size=100"):
        train_tokenizer(["a b c"], vocab_size=100)
