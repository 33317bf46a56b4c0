"""circuit-tracer's CLT and per-layer layouts and Gemma Scope's params.npz: write, read back, same outputs."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.circuit_tracer import (
    load_circuit_tracer_set,
    load_gemma_scope_npz,
    write_circuit_tracer,
)
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.utils.errors import MonosemanticError

from .conftest import CLT_D as D
from .conftest import CLT_L as L
from .conftest import CLT_N as N
from .conftest import make_clt as make


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "batchtopk"])
def test_clt_written_for_circuit_tracer_reads_back(tmp_path, activation):
    clt = make(activation)
    clt.training_loss(torch.randn(64, L * D), torch.randn(64, L * D))  # batchtopk: learn thresholds
    clt.fold_decoder_norm()
    clt.eval()
    out = write_circuit_tracer(clt, tmp_path / "ct")
    enc = load_file(str(out / "W_enc_1.safetensors"))
    assert tuple(enc["W_enc_1"].shape) == (N, D)  # circuit-tracer's [d_transcoder, d_model]
    assert tuple(load_file(str(out / "W_dec_1.safetensors"))["W_dec_1"].shape) == (N, L - 1, D)
    assert ("threshold_1" in enc) == (activation != "relu")
    back = load_dictionary(out)
    assert back.settings.activation == ("relu" if activation == "relu" else "jumprelu")
    assert back.sites_in == clt.sites_in and back.sites_out == clt.sites_out
    x = torch.randn(9, L * D)
    assert torch.allclose(back(x), clt(x), atol=1e-5)


def test_topk_clt_is_refused_for_circuit_tracer(tmp_path):
    with pytest.raises(MonosemanticError, match="ReLU or JumpReLU"):
        write_circuit_tracer(make("topk"), tmp_path / "ct")


def _transcoders(arch: str, **settings):
    torch.manual_seed(1)
    out = []
    for layer in range(2):
        c = DictionaryConfig(architecture=arch, d_sae=N, **settings,
                             site=f"blocks.{layer}.mlp.hook_in", site_out=f"blocks.{layer}.hook_mlp_out")  # fmt: skip
        dic = build_dictionary(c, D, D)
        with torch.no_grad():
            dic.b_enc.normal_(0, 0.3)
            dic.b_dec.normal_(0, 0.3)
        out.append(dic.eval())
    return out


def test_per_layer_relu_transcoders_as_circuit_tracer_files(tmp_path):
    tcs = _transcoders("relu")
    out = write_circuit_tracer(tcs, tmp_path / "set")
    x = torch.randn(5, D)
    for layer, tc in enumerate(tcs):
        t = load_file(str(out / f"layer_{layer}.safetensors"))
        # circuit-tracer's SingleLayerTranscoder: relu(F.linear(x, W_enc, b_enc)) @ W_dec + b_dec
        y = torch.relu(torch.nn.functional.linear(x, t["W_enc"], t["b_enc"])) @ t["W_dec"] + t["b_dec"]
        assert torch.allclose(y, tc(x), atol=1e-5)
    back = load_circuit_tracer_set(out)
    assert [d.cfg.hook_name for d in back] == ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]
    for tc, b in zip(tcs, back, strict=True):
        assert b.is_transcoder and torch.allclose(b(x), tc(x), atol=1e-5)


def test_skip_transcoder_round_trip_through_circuit_tracer_files(tmp_path):
    c = DictionaryConfig(
        architecture="relu", d_sae=N, site="blocks.0.mlp.hook_in", site_out="blocks.0.hook_mlp_out", skip=True
    )
    tc = build_dictionary(c, D, D).eval()
    with torch.no_grad():
        tc.W_skip.normal_(0, 0.2)
    out = write_circuit_tracer([tc], tmp_path / "skip")
    t = load_file(str(out / "layer_0.safetensors"))
    x = torch.randn(4, D)
    y = (
        torch.relu(torch.nn.functional.linear(x, t["W_enc"], t["b_enc"])) @ t["W_dec"]
        + t["b_dec"]
        + x @ t["W_skip"].T
    )
    assert torch.allclose(y, tc(x), atol=1e-5)
    (back,) = load_circuit_tracer_set(out)
    assert back.cfg.skip and torch.allclose(back(x), tc(x), atol=1e-5)


def test_gemma_scope_npz_round_trip(tmp_path):
    tcs = _transcoders("jumprelu")
    with torch.no_grad():
        tcs[0].log_threshold.fill_(-1.0)
    out = write_circuit_tracer(tcs, tmp_path / "gs")
    arrays = np.load(out / "layer_0" / "params.npz")
    assert arrays["W_enc"].shape == (D, N) and arrays["threshold"].shape == (N,)
    back = load_gemma_scope_npz(
        out / "layer_0", hook_name="blocks.0.mlp.hook_in", hook_name_out="blocks.0.hook_mlp_out"
    )
    assert back.is_transcoder and back.cfg.architecture == "jumprelu"
    x = torch.randn(6, D)
    assert torch.allclose(back(x), tcs[0](x), atol=1e-5)
    sae = load_dictionary(out / "layer_0")  # a folder with params.npz loads as a JumpReLU SAE
    assert torch.allclose(sae(x), tcs[0](x), atol=1e-5)


def test_bad_npz_is_one_line_error(tmp_path):
    np.savez(tmp_path / "params.npz", W_enc=np.zeros((2, 3)))
    with pytest.raises(MonosemanticError, match="missing arrays"):
        load_dictionary(tmp_path / "params.npz")


@pytest.mark.parametrize(
    "arch,settings", [("batchtopk", {"k": 3}), ("matryoshka", {"k": 3, "matryoshka_widths": [4, N]})]
)
def test_batch_selected_transcoders_export_in_their_jumprelu_form(tmp_path, arch, settings):
    tcs = _transcoders(arch, **settings)
    for tc in tcs:
        tc.train()
        tc.training_loss(torch.randn(64, D), torch.randn(64, D))  # learn a running threshold
        tc.eval()
    out = write_circuit_tracer(tcs, tmp_path / "gs")
    back = load_gemma_scope_npz(
        out / "layer_1", hook_name="blocks.1.mlp.hook_in", hook_name_out="blocks.1.hook_mlp_out"
    )
    x = torch.randn(6, D)
    assert float(tcs[1].threshold.abs().max()) > 1e-6
    assert torch.allclose(back(x), tcs[1](x), atol=1e-5)


def test_per_token_topk_transcoders_are_refused_for_circuit_tracer(tmp_path):
    with pytest.raises(MonosemanticError, match="topk has no equivalent there"):
        write_circuit_tracer(_transcoders("topk", k=3), tmp_path / "ct")
