"""Checkpoint formats: our SAELens-layout round trips, SAELens/sparsify/dictionary_learning readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import find_dictionaries, load_dictionary, load_sparsity, save_dictionary
from monosemantic.utils.errors import ConfigError, DataError, MonosemanticError

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
FIXTURES = Path(__file__).parent / "fixtures" / "saelens"
SAELENS_NAMES = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "matryoshka": "jumprelu",
}


@pytest.mark.parametrize("kind", ["sae", "transcoder", "skip"])
@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_reproduces_outputs(make_dic, x16, tmp_path, arch, kind):
    dic = make_dic(arch, kind)
    density = torch.linspace(-5, 0, dic.d_sae)
    path = save_dictionary(dic, tmp_path / "ckpt", {"model_name": "storyworld", "context_size": 64}, density)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporaries left behind
    loaded = load_dictionary(path)
    assert type(loaded) is type(dic) and loaded.cfg.to_dict() | {"metadata": {}} == dic.cfg.to_dict() | {
        "metadata": {}
    }
    torch.testing.assert_close(loaded.encode(x16), dic.encode(x16))
    torch.testing.assert_close(loaded(x16), dic(x16))
    torch.testing.assert_close(load_sparsity(path), density)
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["metadata"]["model_name"] == "storyworld" and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.0.mlp.hook_in"
    weights = load_file(str(path / "sae_weights.safetensors"))
    assert weights["W_enc"].shape == (16, dic.d_sae) and weights["W_dec"].shape == (dic.d_sae, dic.d_out)
    if kind == "sae":
        assert cfg["architecture"] == SAELENS_NAMES[arch] and cfg["apply_b_dec_to_input"] is True
    else:
        assert cfg["d_out"] == 12 and cfg["apply_b_dec_to_input"] is False
        assert cfg["metadata"]["hook_name_out"] == "blocks.0.hook_mlp_out"
    if kind == "skip":
        assert weights["W_skip"].shape == (12, 16)  # SAELens orientation [d_out, d_in]
    if arch in ("jumprelu", "batchtopk", "matryoshka"):
        assert weights["threshold"].shape == (dic.d_sae,)


def test_save_overwrites_in_place_and_keeps_trainer_state(make_dic, tmp_path):
    dic = make_dic("topk")
    path = save_dictionary(dic, tmp_path / "run")
    (path / "trainer_state").mkdir()
    with torch.no_grad():
        dic.W_dec.mul_(2)
    save_dictionary(dic, path)
    assert (path / "trainer_state").is_dir()
    torch.testing.assert_close(load_dictionary(path).W_dec, dic.W_dec.detach())


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_activation_scale_matches_scaled_inputs(make_dic, x16, arch):
    for kind in ("sae", "skip"):
        dic = make_dic(arch, kind)
        s_in, s_out = 0.37, (0.37 if kind == "sae" else 2.5)
        want_f = dic.encode(x16 * s_in)
        want_y = dic(x16 * s_in) / s_out
        dic.fold_activation_scale(s_in, None if kind == "sae" else s_out)
        torch.testing.assert_close(dic.encode(x16), want_f, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dic(x16), want_y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_saelens_checkpoints_reproduce_saelens_outputs(name):
    """Fixtures written by SAELens 6 itself (make_saelens_fixtures.py); no sae-lens needed here."""
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    dic = load_dictionary(FIXTURES / name)
    f = dic.encode(expected["x"])
    torch.testing.assert_close(f, expected["f"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dic.decode(f, expected["x"]), expected["y"], rtol=1e-4, atol=1e-4)
    assert (expected["f"] > 0).any(dim=1).all()  # the fixture is not trivially zero


def test_sparsify_layout(tmp_path):
    gen = torch.Generator().manual_seed(3)
    d_in, d_sae, k = 10, 24, 4
    enc_w, enc_b = torch.randn(d_sae, d_in, generator=gen), torch.randn(d_sae, generator=gen) * 0.1
    W_dec, b_dec = torch.randn(d_sae, d_in, generator=gen), torch.randn(d_in, generator=gen)
    folder = tmp_path / "layers.3"
    folder.mkdir()
    save_file(
        {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec},
        str(folder / "sae.safetensors"),
    )
    (folder / "cfg.json").write_text(
        json.dumps(
            {"expansion_factor": 0, "num_latents": d_sae, "k": k, "normalize_decoder": True, "d_in": d_in}
        )
    )
    x = torch.randn(7, d_in, generator=gen)
    dic = load_dictionary(folder)
    # sparsify: ReLU(encoder(x - b_dec)), keep the top k, decode with W_dec + b_dec
    pre = torch.relu((x - b_dec) @ enc_w.T + enc_b)
    want_f = torch.zeros_like(pre)
    for b in range(7):
        top = pre[b].topk(k)
        want_f[b, top.indices] = top.values
    torch.testing.assert_close(dic.encode(x), want_f)
    torch.testing.assert_close(dic(x), want_f @ W_dec + b_dec)
    assert dic.cfg.hook_name == "layers.3" and dic.settings.k == k
    (folder / "cfg.json").write_text(json.dumps({"num_latents": 99, "k": k, "d_in": d_in}))
    with pytest.raises(DataError, match="99 latents"):
        load_dictionary(folder)


def _dl_folder(tmp_path, name, state, cls, extra=None):
    folder = tmp_path / name
    folder.mkdir()
    torch.save(state, folder / "ae.pt")
    trainer = {"dict_class": cls, "activation_dim": 10, "dict_size": 24, "lm_name": "toy", **(extra or {})}
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}))
    return folder


def test_dictionary_learning_layouts(tmp_path):
    gen = torch.Generator().manual_seed(4)
    d, n = 10, 24
    enc_w, enc_b = torch.randn(n, d, generator=gen), torch.randn(n, generator=gen) * 0.3
    dec_w, bias = torch.randn(d, n, generator=gen), torch.randn(d, generator=gen)
    x = torch.randn(9, d, generator=gen)

    relu = load_dictionary(
        _dl_folder(
            tmp_path,
            "std",
            {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w, "bias": bias},
            "AutoEncoder",
        )
    )
    f = torch.relu((x - bias) @ enc_w.T + enc_b)
    torch.testing.assert_close(relu.encode(x), f)
    torch.testing.assert_close(relu(x), f @ dec_w.T + bias)

    topk_state = {
        "encoder.weight": enc_w,
        "encoder.bias": enc_b,
        "decoder.weight": dec_w,
        "b_dec": bias,
        "k": torch.tensor(3),
        "threshold": torch.tensor(0.2),
    }
    topk = load_dictionary(_dl_folder(tmp_path, "topk", topk_state, "AutoEncoderTopK"))
    post = torch.relu((x - bias) @ enc_w.T + enc_b)
    want = torch.zeros_like(post)
    for b in range(9):
        want[b, post[b].topk(3).indices] = post[b].topk(3).values
    torch.testing.assert_close(topk.encode(x), want)

    btk = load_dictionary(_dl_folder(tmp_path, "btk", topk_state, "BatchTopKSAE"))
    torch.testing.assert_close(btk.encode(x), post * (post > 0.2))
    # without config.json, `k` + `threshold` fit both classes: refused, never guessed
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(topk_state, bare / "ae.pt")
    with pytest.raises(DataError, match="AutoEncoderTopK and BatchTopKSAE both store"):
        load_dictionary(bare)

    W_enc, W_dec, thr = (
        torch.randn(d, n, generator=gen),
        torch.randn(n, d, generator=gen),
        torch.rand(n, generator=gen),
    )
    jr = load_dictionary(
        _dl_folder(
            tmp_path,
            "jr",
            {"W_enc": W_enc, "b_enc": enc_b, "W_dec": W_dec, "b_dec": bias, "threshold": thr},
            "JumpReluAutoEncoder",
        )
    )
    pre = x @ W_enc + enc_b  # dictionary_learning's JumpReLU does not subtract b_dec
    torch.testing.assert_close(jr.encode(x), torch.relu(pre * (pre > thr)))
    torch.testing.assert_close(jr(x), torch.relu(pre * (pre > thr)) @ W_dec + bias)

    r_mag, g_b, m_b = (
        torch.randn(n, generator=gen) * 0.3,
        torch.randn(n, generator=gen) * 0.3,
        torch.randn(n, generator=gen),
    )
    gated = load_dictionary(
        _dl_folder(
            tmp_path,
            "gated",
            {
                "encoder.weight": enc_w,
                "decoder.weight": dec_w,
                "decoder_bias": bias,
                "r_mag": r_mag,
                "gate_bias": g_b,
                "mag_bias": m_b,
            },
            "GatedAutoEncoder",
        )
    )
    h = (x - bias) @ enc_w.T
    f = ((h + g_b) > 0).float() * torch.relu(h * r_mag.exp() + m_b)
    torch.testing.assert_close(gated.encode(x), f)
    assert gated.cfg.metadata["model_name"] == "toy"


def test_find_dictionaries(make_dic, tmp_path):
    dic = make_dic("topk")
    for name in ("topk-k32-16k", "relu-l1-5", "nested/jumprelu"):
        save_dictionary(dic, tmp_path / "sweep" / name)
    (tmp_path / "sweep" / "topk-k32-16k" / "trainer_state").mkdir()
    found = find_dictionaries(tmp_path / "sweep")
    assert [p.relative_to(tmp_path / "sweep").as_posix() for p in found] == [
        "nested/jumprelu",
        "relu-l1-5",
        "topk-k32-16k",
    ]
    assert find_dictionaries(found[0]) == [found[0]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(MonosemanticError, match="no dictionary checkpoints"):
        find_dictionaries(tmp_path / "empty")


def test_bad_inputs(make_dic, x16, tmp_path):
    with pytest.raises(ConfigError, match="k=64 is larger than d_sae=32"):
        build_dictionary(DictionaryConfig(architecture="topk", expansion=2, k=64), 16)
    with pytest.raises(ConfigError, match="needs d_sae or expansion"):
        build_dictionary(DictionaryConfig(architecture="relu"), 16)
    with pytest.raises(ConfigError, match="matryoshka_widths"):
        build_dictionary(
            DictionaryConfig(architecture="matryoshka", d_sae=32, k=2, matryoshka_widths=[8, 16]), 16
        )
    dic = make_dic("topk")
    with pytest.raises(DataError, match="width 15 but this dictionary expects 16"):
        dic.encode(x16[:, :15])
    path = save_dictionary(dic, tmp_path / "c")
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["metadata"]["monosemantic"]["d_in"] = 20
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="weights do not match"):
        load_dictionary(path)
    with pytest.raises(MonosemanticError, match="no dictionary at"):
        load_dictionary(tmp_path / "missing")
    with pytest.raises(MonosemanticError, match="no known checkpoint"):
        load_dictionary(tmp_path)
