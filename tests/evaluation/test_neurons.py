"""The neuron baseline is the MLP itself: dense, it reproduces hook_mlp_out from mlp.hook_in exactly."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import load_dictionary, save_dictionary
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import ConfigError

SITE, SITE_OUT = "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"


def test_neurons_reproduce_the_mlp_and_keep_top_k(tiny_gpt2, tmp_path):
    model = load_model(str(tiny_gpt2), dtype="float32", device="cpu")
    tokens = torch.randint(0, 100, (2, 12))
    with torch.inference_mode():
        run = model.run(tokens, capture=[SITE, SITE_OUT])
    x, y = run.activations[SITE].reshape(-1, 32).clone(), run.activations[SITE_OUT].reshape(-1, 32).clone()
    d_mlp = model.hf.config.n_inner or 4 * 32
    cfg = DictionaryConfig(architecture="neurons", d_sae=d_mlp, site=SITE, site_out=SITE_OUT)
    dic = build_dictionary(cfg, 32, 32)
    dic.fit(x * 2.0, y * 3.0, scale_in=2.0, scale_out=3.0, model_name=str(tiny_gpt2))
    dic.fold_activation_scale(2.0, 3.0)  # what the trainer's export does
    with torch.no_grad():
        assert torch.allclose(dic(x), y, atol=1e-5)
        sparse = build_dictionary(cfg.model_copy(update={"k": 4}), 32, 32)
        sparse.fit(x, y, model_name=str(tiny_gpt2))
        f = sparse.encode(x)
        assert int((f > 0).sum(-1).max()) <= 4
        dense = dic.encode(x)
        assert torch.allclose(f.max(-1).values, dense.max(-1).values, atol=1e-6)
    # trainer state (resume) and a saved checkpoint both bring back the activation function
    fresh = build_dictionary(cfg, 32, 32)
    fresh.load_state_dict(dic.state_dict())
    with torch.no_grad():
        assert torch.allclose(fresh(x), y, atol=1e-5)
    loaded = load_dictionary(save_dictionary(dic, tmp_path / "neurons"))
    with torch.no_grad():
        assert torch.allclose(loaded(x), y, atol=1e-5)
    with pytest.raises(ConfigError, match="d_sae"):
        build_dictionary(cfg.model_copy(update={"d_sae": 8}), 32, 32).fit(x, y, model_name=str(tiny_gpt2))


def test_a_neurons_dictionary_has_a_weights_fingerprint(tiny_gpt2):
    """Its state_dict carries the activation function as extra state (not a tensor): the feature
    store's fingerprint hashes it too, so analyze can record a neurons baseline (the demo's)."""
    from monosemantic.dictionaries.provenance import weights_fingerprint

    model = load_model(str(tiny_gpt2), dtype="float32", device="cpu")
    with torch.inference_mode():
        run = model.run(torch.randint(0, 100, (2, 12)), capture=[SITE, SITE_OUT])
    x, y = run.activations[SITE].reshape(-1, 32).clone(), run.activations[SITE_OUT].reshape(-1, 32).clone()
    cfg = DictionaryConfig(
        architecture="neurons", d_sae=model.hf.config.n_inner or 128, site=SITE, site_out=SITE_OUT
    )
    dic = build_dictionary(cfg, 32, 32)
    dic.fit(x, y, model_name=str(tiny_gpt2))
    assert any(not isinstance(v, torch.Tensor) for v in dic.state_dict().values())
    first = weights_fingerprint(dic)
    assert len(first) == 16 and first == weights_fingerprint(dic)
    with torch.no_grad():
        dic.W_dec[0, 0] += 1.0
    assert weights_fingerprint(dic) != first
