"""Which model a dictionary belongs to: names compared loosely, tokenizers and widths exactly."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.provenance import check_provenance, foreign, model_key, weights_fingerprint
from monosemantic.lm.shipped import SHIPPED_DIR
from monosemantic.utils.errors import ConfigError

SITE = "blocks.0.hook_resid_post"


def test_the_same_model_spelled_several_ways_is_one_key():
    assert model_key("openai-community/gpt2") == model_key("gpt2") == model_key("gpt2-small") == "gpt2"
    assert model_key("/home/a/models/pythia-70m") == model_key("EleutherAI/pythia-70m") == "pythia-70m"
    # the shipped LM wherever it is installed (a harvest manifest records its resolved folder)
    assert model_key("/site-packages/monosemantic/lm/shipped/storyworld-lm") == model_key("storyworld")
    assert model_key(str(SHIPPED_DIR)) == "storyworld"
    assert model_key("EleutherAI/pythia-70m-deduped") != model_key("EleutherAI/pythia-70m")
    assert model_key(None) is None and model_key("") is None


def test_foreign_names_and_tokenizers():
    assert foreign({"model_name": "gpt2"}, "storyworld", None) == "it was trained on 'gpt2', not 'storyworld'"
    assert foreign({"model_name": "gpt2", "tokenizer_fingerprint": "a"}, "openai-community/gpt2", "a") is None
    assert "another tokenizer" in foreign({"model_name": "x", "tokenizer_fingerprint": "a"}, "x", "b")
    assert foreign({}, "storyworld", "b") is None  # nothing recorded: nothing to refuse


def _dic(seed: int = 0, **meta):
    torch.manual_seed(seed)
    dic = build_dictionary(DictionaryConfig(architecture="topk", d_sae=16, k=2, site=SITE), 8, 8)
    dic.cfg.metadata = meta
    return dic


def test_check_provenance_refuses_allows_with_a_note_and_never_lets_a_width_through(capsys):
    dic = _dic(model_name="gpt2")
    with pytest.raises(ConfigError, match="model.allow_foreign_model=true"):
        check_provenance(dic, "d", "storyworld", None, {SITE: 8}, allow=False)
    check_provenance(dic, "d", "storyworld", None, {SITE: 8}, allow=True)
    assert "note:" in capsys.readouterr().err
    with pytest.raises(
        ConfigError, match="has width 8 at blocks.0.hook_resid_post, but storyworld has width 32"
    ):
        check_provenance(dic, "d", "storyworld", None, {SITE: 32}, allow=True)


def test_weights_fingerprint_follows_the_weights_not_the_name():
    a, b = _dic(0), _dic(1)
    assert weights_fingerprint(a) == weights_fingerprint(_dic(0)) != weights_fingerprint(b)
    with torch.no_grad():
        a.W_dec[3, 2] += 1e-3  # one value changed
    assert weights_fingerprint(a) != weights_fingerprint(_dic(0))
