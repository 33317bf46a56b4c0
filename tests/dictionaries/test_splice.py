"""The one splicing path (`dictionaries/splice.py`): SAEs, transcoders and CLTs put their reconstruction
where they write, each layer of a CLT reading the input its own forward pass computes."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.splice import compose, splice_edits
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import MonosemanticError


@pytest.fixture(scope="module")
def model(tiny_gpt2):
    return load_model(str(tiny_gpt2), device="cpu")


def _dic(d: int, **spec):
    torch.manual_seed(0)
    dic = build_dictionary(DictionaryConfig(d_sae=24, **spec), *d).eval()
    with torch.no_grad():
        dic.b_dec.normal_(0, 0.1)
    return dic


def _kinds(model):
    d = model.d_model
    return {
        "sae": _dic((d, d), architecture="relu", site="blocks.1.hook_resid_post"),
        "transcoder": _dic((d, d), architecture="topk", k=4, site="blocks.0.mlp.hook_in", site_out="blocks.0.hook_mlp_out"),
        "clt": _dic((2 * d, 2 * d), architecture="clt", activation="jumprelu", site="blocks.{0,1}.mlp.hook_in",
                    site_out="blocks.{0,1}.hook_mlp_out"),
    }  # fmt: skip


def test_splice_with_the_error_added_back_is_the_clean_model(model):
    tokens = torch.randint(0, len(model.tokenizer), (2, 9))
    keep = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        clean = model.run(tokens).logits
        for name, dic in _kinds(model).items():
            spliced = model.run(tokens, edits=splice_edits(dic, keep)).logits
            exact = model.run(tokens, edits=splice_edits(dic, keep, add_error=True)).logits
            assert (spliced - clean).abs().max() > 1e-3, name  # a random dictionary changes the output
            assert torch.allclose(exact, clean, atol=1e-5), name


def test_clt_splice_replaces_each_layer_from_its_own_forward_pass(model):
    """Layer 1's output is decoded from the latents of layer 0 and 1, where layer 1's input already
    carries layer 0's replacement (so it differs from the clean layer-1 input)."""
    clt = _kinds(model)["clt"]
    tokens = torch.randint(0, len(model.tokenizer), (1, 7))
    keep = torch.ones(1, 7, dtype=torch.bool)
    record: dict = {}
    sites = ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in", "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    with torch.no_grad():
        run = model.run(tokens, capture=sites, edits=splice_edits(clt, keep, record=record))
        x = torch.cat([run.activations[s] for s in sites[:2]], -1)
        assert torch.allclose(record["input"], x) and torch.allclose(record["codes"], clt.encode(x))
        out = torch.cat([run.activations[s] for s in sites[2:]], -1)
        assert torch.allclose(out, clt.decode(clt.encode(x)), atol=1e-5)  # both MLP outputs replaced
        clean = model.run(tokens, capture=sites[:2]).activations
        assert not torch.allclose(clean["blocks.1.mlp.hook_in"], run.activations["blocks.1.mlp.hook_in"])


def test_compose_runs_edits_of_one_site_in_order():
    double, plus_one = {"s": lambda a: 2 * a}, {"s": lambda a: a + 1, "t": lambda a: -a}
    edits = compose([double, plus_one])
    assert edits["s"](torch.tensor(3.0)) == 7.0 and edits["t"](torch.tensor(1.0)) == -1.0


def test_an_acausal_crosscoder_is_refused(model):
    d = model.d_model
    cc = _dic(
        (2 * d, 2 * d), architecture="crosscoder", activation="relu", site="blocks.{0,1}.hook_resid_post"
    )
    with pytest.raises(MonosemanticError, match="cannot be spliced into a forward pass"):
        splice_edits(cc, torch.ones(1, 3, dtype=torch.bool))
