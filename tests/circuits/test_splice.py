"""SpliceModel: the spliced logits are evaluate's, tokens are harvest's, codes are the dictionaries'."""

from __future__ import annotations

import warnings

import pytest
import torch

import monosemantic
from monosemantic.config import DictionaryConfig
from monosemantic.config.data import DataConfig
from monosemantic.corpus.windows import TokenWindows, special_token_mask
from monosemantic.dictionaries import build_dictionary
from monosemantic.evaluation.spliced import SplicedEvaluator, next_token_ce
from monosemantic.lm.model import load_model
from monosemantic.store.feature_store import FeatureStore

TEXT = "Tom the dog found a red ball in the park. He"


@pytest.fixture(scope="module")
def sm(tmp_path_factory):
    model = load_model("storyworld", device="cpu")
    d = model.d_model
    torch.manual_seed(0)
    sae = build_dictionary(
        DictionaryConfig(architecture="topk", d_sae=64, k=8, site="blocks.0.hook_resid_post"), d, d
    )
    tc = build_dictionary(
        DictionaryConfig(
            architecture="topk", d_sae=64, k=8, site="blocks.1.mlp.hook_in", site_out="blocks.1.hook_mlp_out"
        ),
        d,
        d,
    )
    for dic in (sae, tc):
        dic.cfg.metadata["prepend_bos"] = True
        dic.train()  # SpliceModel must put them in eval mode
    db = tmp_path_factory.mktemp("store") / "features.db"
    store = FeatureStore(db, create=True)
    did = store.add_dictionary("sae", hook_name="blocks.0.hook_resid_post", d_in=d, d_sae=64)
    store.upsert_features(did, [{"idx": i, "explanation": f"feature {i} text"} for i in range(64)])
    return monosemantic.SpliceModel(model, {"sae": sae, "tc": tc}, store)


def test_dictionaries_frozen_in_eval_mode(sm):
    for dic in sm.dictionaries.values():
        assert not dic.training
        assert not any(p.requires_grad for p in dic.parameters())


def test_to_tokens_is_harvest_tokenization(sm, tmp_path):
    text_file = tmp_path / "one.txt"
    text_file.write_text(TEXT)
    tokens = sm.to_tokens(TEXT)
    data = DataConfig(text=str(text_file), context_size=tokens.shape[1], prepend_bos=True)
    first = next(iter(TokenWindows(data, sm.model.tokenizer))).tokens
    assert torch.equal(tokens[0], first)
    assert sm.to_str_tokens(TEXT)[:3] == ["<|endoftext|>", "Tom", " the"]
    assert sm.to_tokens(TEXT, prepend_bos=False).shape[1] == tokens.shape[1] - 1


def test_spliced_logits_match_evaluate(sm):
    tokens = sm.to_tokens(TEXT)
    keep = ~special_token_mask(tokens, sm.model.tokenizer)
    for name in ("sae", "tc"):
        dic = sm.dictionaries[name]
        mean = torch.zeros(sm.model.d_model)
        ev = SplicedEvaluator(sm.model, [tokens], [keep]).evaluate(dic, mean)
        logits = sm.run_with_dictionaries(tokens, name)
        ce = next_token_ce(logits, tokens).item() / (tokens.shape[1] - 1)
        assert ce == pytest.approx(ev["ce_loss_spliced"], abs=1e-6)
        assert abs(ce - ev["ce_loss_clean"]) > 1e-3  # a random dictionary really changes the output


def test_run_with_cache_codes_and_plain_logits(sm):
    tokens = sm.to_tokens(TEXT)
    with torch.inference_mode():
        plain = sm.model.run(tokens, capture=["blocks.1.mlp.hook_in"])
    logits, cache = sm.run_with_cache(TEXT, splice=False)
    assert torch.equal(logits, plain.logits)  # encoding alone changes nothing
    per_token = {
        s for s in sm.model.site_names() if not s.endswith(("attn.hook_pattern", "attn.hook_attn_scores"))
    }
    assert set(cache.activations) == per_token
    codes = sm.dictionaries["tc"].encode(plain.activations["blocks.1.mlp.hook_in"])
    assert torch.allclose(cache.codes["tc"], codes, atol=1e-6)
    assert cache.codes["sae"].shape == (1, tokens.shape[1], 64)
    assert int((cache.codes["sae"][0, 1] > 0).sum()) == 8  # TopK k=8
    spliced_logits, spliced = sm.run_with_cache(TEXT)
    assert not torch.allclose(spliced_logits, logits)
    # the SAE's site now carries its reconstruction (BOS keeps its clean value)
    assert torch.allclose(
        spliced.activations["blocks.0.hook_resid_post"][0, 1:], spliced.outputs["sae"][0, 1:]
    )


def test_bos_warning(sm):
    with pytest.warns(UserWarning, match="start with BOS") as record:
        sm.run_with_dictionaries(sm.to_tokens(TEXT, prepend_bos=False))
    assert record[0].filename == __file__  # points at the caller's line
    with pytest.warns(UserWarning, match="start with BOS"):
        sm.run_with_cache(sm.to_tokens(TEXT, prepend_bos=False), splice=False, sites=())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm.run_with_dictionaries(TEXT)


def test_top_features_and_store_by_name(sm):
    rows = sm.top_features(TEXT, "sae", k=5)
    assert len(rows) == 5
    acts = [r["activation"] for r in rows]
    assert acts == sorted(acts, reverse=True) and acts[-1] > 0
    _, cache = sm.run_with_cache(TEXT, "sae", splice=False, sites=())
    best = cache.codes["sae"][0, 1:].max(0).values
    assert acts[0] == pytest.approx(float(best.max()), rel=1e-6)
    r = rows[0]
    assert r["explanation"] == f"feature {r['feature']} text"
    assert r["token"] == sm.to_str_tokens(TEXT)[r["position"]]
    assert sm.feature("sae", 3)["explanation"] == "feature 3 text"
    with pytest.raises(monosemantic.utils.errors.MonosemanticError, match="no dictionary named"):
        sm.run_with_dictionaries(TEXT, "nope")
