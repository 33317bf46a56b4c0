"""Cross-layer transcoder: layout, causality, the sparse training path, save/load, config errors."""

import json

import pytest
import torch
from pydantic import ValidationError

from monosemantic.config import DictionaryConfig, validate_config
from monosemantic.config import dictionary as dictionary_config
from monosemantic.config.site import Site
from monosemantic.dictionaries.io import load_dictionary, save_dictionary
from monosemantic.utils.errors import ConfigError

from .conftest import CLT_D as D
from .conftest import CLT_L as L
from .conftest import CLT_N as N
from .conftest import make_clt as make


def test_layer_globs_expand_over_layers():
    def names(site: Site) -> list[str]:
        return [str(s) for s in site.sites()]

    glob = Site.parse("blocks.*.mlp.hook_in")
    available = ["blocks.2.mlp.hook_in", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"]
    assert names(glob.expand(available)) == ["blocks.0.mlp.hook_in", "blocks.2.mlp.hook_in"]
    assert names(Site.parse("blocks.*.hook_mlp_out").with_layers([1, 3])) == [
        "blocks.1.hook_mlp_out",
        "blocks.3.hook_mlp_out",
    ]
    assert str(glob.with_layers([0, 1])) == "blocks.{0,1}.mlp.hook_in"
    assert names(Site.parse("blocks.{0,1}.mlp.hook_in")) == ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]
    assert names(Site.parse("blocks.3.hook_resid_post")) == ["blocks.3.hook_resid_post"]


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "batchtopk"])
def test_decoders_grow_as_triangle_and_outputs_are_causal(activation):
    clt = make(activation).eval()
    assert [tuple(W.shape) for W in clt.W_dec] == [(N, L - s, D) for s in range(L)]
    x = torch.randn(5, L * D)
    y = clt(x)
    x2 = x.clone()
    x2[:, 2 * D :] += 3.0  # change only the last layer's input
    y2 = clt(x2)
    assert torch.allclose(y[:, : 2 * D], y2[:, : 2 * D], atol=1e-6)  # earlier outputs unchanged
    # output layer 2 = b_dec + sum over source layers 0..2 of f_s W_dec_s[:, 2 - s]
    f = clt.encode(x).view(5, L, N)
    want = clt.b_dec[2] + sum(f[:, s] @ clt.W_dec[s][:, 2 - s] for s in range(L))
    assert torch.allclose(y[:, 2 * D :], want, atol=1e-5)
    if activation == "topk":
        assert torch.equal((f > 0).sum(-1), torch.full((5, L), 3))  # k per layer


def test_sparse_topk_training_matches_dense_reference():
    """The fused sparse path gives the same loss and gradients as a dense einsum formulation."""
    clt = make("topk")
    x, y = torch.randn(16, L * D), torch.randn(16, L * D)
    out = clt.training_loss(x, y)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in clt.named_parameters()}
    clt.zero_grad()
    z = torch.einsum("bld,ldn->bln", x.view(16, L, D), clt.W_enc) + clt.b_enc
    top = z.topk(3, dim=-1)
    f = torch.zeros_like(z).scatter(-1, top.indices, torch.relu(top.values))
    y_hat = clt.b_dec.expand(16, L, D) + sum(
        torch.nn.functional.pad(torch.einsum("bn,nld->bld", f[:, s], clt.W_dec[s]), (0, 0, s, 0))
        for s in range(L)
    )
    ref = (y_hat.flatten(1) - y).pow(2).sum(-1).mean()
    ref.backward()
    assert abs(out.loss.item() - ref.item()) < 1e-4 * ref.item()
    for n, p in clt.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-4, rtol=1e-4), n
    assert abs(float(out.l0) - L * 3) < 1e-6


def test_relu_penalty_weights_by_concatenated_decoder_norm():
    clt = make("relu")
    x = torch.randn(8, L * D)
    with torch.no_grad():
        clt.W_dec[0].mul_(2.0)  # double layer 0's decoders (to every output layer)
    out = clt.training_loss(x, x)
    f = clt.encode(x).view(8, L, N)
    norms = torch.stack([W.flatten(1).norm(dim=1) for W in clt.W_dec])
    want = (f * norms).sum((1, 2)).mean().item()
    assert abs(out.terms["l1"].item() - want) < 1e-4 * want


def test_unit_norm_and_gradient_projection_act_on_concatenated_rows():
    clt = make("topk")
    clt.set_decoder_norm_to_unit_norm()
    assert torch.allclose(clt.concat_decoder_norms(), torch.ones(L, N), atol=1e-5)
    out = clt.training_loss(torch.randn(16, L * D), torch.randn(16, L * D))
    out.loss.backward()
    clt.remove_gradient_parallel_to_decoder_directions()
    for W in clt.W_dec:
        radial = (W.grad * W.detach()).flatten(1).sum(1)
        assert float(radial.abs().max()) < 1e-5


@pytest.mark.parametrize("activation", ["jumprelu", "batchtopk"])
def test_save_load_round_trip_lists_sites(tmp_path, activation):
    clt = make(activation)
    clt.training_loss(torch.randn(32, L * D), torch.randn(32, L * D))  # batchtopk: learn a threshold
    clt.fold_decoder_norm()
    clt.eval()
    save_dictionary(clt, tmp_path / "clt", {"model_name": "m"})
    cfg = json.loads((tmp_path / "clt" / "cfg.json").read_text())
    assert cfg["architecture"] == "cross_layer_transcoder" and cfg["n_layers"] == L
    assert cfg["hook_names"] == [f"blocks.{i}.mlp.hook_in" for i in range(L)]
    assert cfg["hook_names_out"] == [f"blocks.{i}.hook_mlp_out" for i in range(L)]
    assert (cfg["d_in"], cfg["d_out"], cfg["d_transcoder"]) == (D, D, N)
    back = load_dictionary(tmp_path / "clt")
    x = torch.randn(7, L * D)
    assert torch.allclose(back(x), clt(x), atol=1e-5)
    assert back.layers == [0, 1, 2] and back.settings.activation == activation


def test_fold_activation_scale_keeps_outputs():
    clt = make("jumprelu").eval()
    x = torch.randn(6, L * D)
    ref = clt(x)
    s_in, s_out = 2.5, 0.5
    clt.fold_activation_scale(s_in, s_out)  # trained on (s_in x, s_out y): now works on raw x
    assert torch.allclose(clt(x / s_in), ref / s_out, atol=1e-4)


def test_fold_per_layer_scales_keeps_outputs():
    """The trainer normalises each layer of a glob key on its own: [L*d] scale vectors."""
    clt = make("relu").eval()
    x = torch.randn(6, L * D)
    ref = clt(x)
    s_in = torch.tensor([2.0, 0.5, 4.0]).repeat_interleave(D)
    s_out = torch.tensor([0.25, 3.0, 1.5]).repeat_interleave(D)
    clt.fold_activation_scale(s_in, s_out)
    assert torch.allclose(clt(x / s_in), ref / s_out, atol=1e-4)


def test_config_errors_are_one_line():
    with pytest.raises(
        ValidationError, match="not one hook over several layers|names several sites|reads several"
    ):
        DictionaryConfig(
            architecture="clt", activation="topk", k=4, d_sae=8, site="blocks.3.mlp.hook_in",
            site_out="blocks.3.hook_mlp_out",
        )  # fmt: skip
    cc = DictionaryConfig(
        architecture="crosscoder", activation="topk", k=4, d_sae=8, site="blocks.*.hook_resid_post"
    )
    assert type(cc).__name__ == "CrosscoderConfig"
    with pytest.raises(ValidationError, match="layers only applies"):
        DictionaryConfig(architecture="relu", d_sae=8, site="blocks.0.mlp.hook_in", layers=[0])


@pytest.mark.parametrize(
    "section, message",
    [
        ({"activation": "relu", "k": 4}, "k does not apply to a clt with activation 'relu'; remove it"),
        ({"activation": "topk"}, "a topk clt needs k (per layer for a clt); set dictionary.k"),
        ({"activation": "jumprelu", "skip": True}, "skip does not apply to architecture 'clt'; remove it"),
        (
            {"activation": "gated"},
            "dictionary.activation: Input should be 'relu', 'jumprelu', 'topk' or 'batchtopk'",
        ),
        ({}, "architecture 'clt' needs activation = relu | jumprelu | topk | batchtopk"),
        (
            {"activation": "topk", "k": 4, "target_l0": 8},
            "target_l0 does not apply to a clt with activation 'topk'",
        ),
        (
            {"activation": "relu", "matryoshka_widths": [2, 8]},
            "matryoshka_widths does not apply to architecture 'clt'",
        ),
        ({"activation": "relu", "site_out": None}, 'without site_out use architecture = "crosscoder"'),
    ],
)
def test_clt_settings_are_checked_at_config_load(section, message):
    spec = {
        "architecture": "clt",
        "d_sae": 8,
        "site": "blocks.*.mlp.hook_in",
        "site_out": "blocks.*.hook_mlp_out",
    }
    with pytest.raises(ConfigError) as e:
        validate_config({"dictionary": {k: v for k, v in {**spec, **section}.items() if v is not None}})
    assert message in str(e.value), str(e.value)


def test_the_old_spelling_still_loads_with_a_note(capsys, monkeypatch):
    """`architecture = "jumprelu"` with a layer-glob site was a CLT before `architecture = "clt"` existed."""
    monkeypatch.setattr(dictionary_config, "_noted", set())  # the note is said once per process
    old = {"architecture": "jumprelu", "d_sae": 8, "site": "blocks.*.mlp.hook_in", "site_out": "blocks.*.hook_mlp_out",
           "l0_coefficient": 0.5}  # fmt: skip
    d = validate_config({"dictionary": old}).dictionary
    assert (d.architecture, d.activation, d.l0_coefficient) == ("clt", "jumprelu", 0.5)
    cc = validate_config(
        {"dictionary": {"architecture": "relu", "d_sae": 8, "site": "blocks.*.hook_resid_post"}}
    )
    assert (cc.dictionary.architecture, cc.dictionary.activation) == ("crosscoder", "relu")
    out = " ".join(capsys.readouterr().err.split())
    assert 'read as architecture = "clt", activation = "jumprelu"' in out
