"""Each release reader on fixtures in that release's exact layout (`tests/support/release_fixtures.py`):
what we load computes what the release's own loader computes. Every reference below is written
from the release's published code (named in each test), straight from the raw files, without
our reader."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from release_fixtures import (
    sae_training_installed,
    write_circuit_tracer_clt,
    write_circuit_tracer_config,
    write_circuit_tracer_layer,
    write_gemma_scope_2,
    write_gemma_scope_2_clt,
    write_llama_scope_v1,
    write_llamascopium,
    write_qwen_scope,
    write_transcoder_circuits,
)
from safetensors.torch import load_file

from monosemantic.config.site import Site
from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
from monosemantic.utils.errors import MonosemanticError

D, N = 16, 40
TOL = dict(rtol=1e-5, atol=1e-5)


def _x(n: int = 12, d: int = D, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 1.5


def test_gemma_scope_2_sae_equals_saelens_gemma_3_loader(tmp_path):
    """SAELens `gemma_3_sae_huggingface_loader` + JumpReLUSAE: pre = x w_enc + b_enc,
    f = relu(pre) * (pre > threshold), y = f w_dec + b_dec."""
    folder = write_gemma_scope_2(
        tmp_path / "resid_post" / "layer_3_width_1k_l0_small", D, N, "model.layers.3.output"
    )
    t, x = load_file(str(folder / "params.safetensors")), _x()
    pre = x @ t["w_enc"] + t["b_enc"]
    f = F.relu(pre) * (pre > t["threshold"])
    dic = load_dictionary(folder)
    assert dic.cfg.hook_name == "blocks.3.hook_resid_post" and not dic.is_transcoder
    assert (
        dic.cfg.metadata["model_family"] == "gemma3"
        and dic.cfg.metadata["model_name"] == "google/gemma-3-1b-pt"
    )
    torch.testing.assert_close(dic.encode(x), f, **TOL)
    torch.testing.assert_close(dic.decode(dic.encode(x), x), f @ t["w_dec"] + t["b_dec"], **TOL)
    assert 0 < int((f > 0).sum()) < f.numel()


def test_gemma_scope_2_affine_transcoder_equals_circuit_tracer_loader(tmp_path):
    """circuit-tracer `load_gemma_scope_2_transcoder`: W_enc = w_enc^T, W_skip = affine^T, and
    SingleLayerTranscoder adds input @ W_skip^T, i.e. x @ affine_skip_connection."""
    folder = write_gemma_scope_2(
        tmp_path / "transcoder_all" / "layer_1_width_1k_l0_small_affine", D, N,
        "model.layers.1.pre_feedforward_layernorm.output", "model.layers.1.post_feedforward_layernorm.output",
        affine=True,
    )  # fmt: skip
    t, x = load_file(str(folder / "params.safetensors")), _x()
    pre = F.linear(x, t["w_enc"].T, t["b_enc"])
    f = pre * (pre > t["threshold"])  # circuit-tracer's JumpReLU (thresholds are positive)
    W_skip = t["affine_skip_connection"].T.contiguous()  # circuit-tracer's param_dict["W_skip"]
    y = f @ t["w_dec"] + t["b_dec"] + x @ W_skip.T
    dic = load_dictionary(folder)
    assert (dic.cfg.hook_name, dic.cfg.hook_name_out) == ("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")
    torch.testing.assert_close(dic.decode(dic.encode(x), x), y, **TOL)


def test_gemma_scope_2_folder_without_config_is_read_as_saelens_infers_it(tmp_path):
    """SAELens `_infer_gemma_3_raw_cfg_dict`: the folder names say the hooks (attn_out_all -> o_proj input)."""
    folder = write_gemma_scope_2(
        tmp_path / "attn_out_all" / "layer_2_width_1k_l0_small", D, N, "x", config=False
    )
    assert load_dictionary(folder).cfg.hook_name == "blocks.2.attn.hook_z"


def test_gemma_scope_2_clt_equals_circuit_tracer_loader(tmp_path):
    """circuit-tracer `load_gemma_scope_2_clt`: stacked w_enc^T, W_dec[i] = w_dec[i][:, i:, :],
    layer j's output sums layers i <= j."""
    L = 3
    folders = write_gemma_scope_2_clt(tmp_path / "clt", "width_1k_l0_medium", L, D, N)
    t = [load_file(str(f / "params.safetensors")) for f in folders]
    x = torch.stack([_x(seed=i) for i in range(L)], dim=1)  # [n, L, d]
    f = []
    for i in range(L):
        pre = x[:, i] @ t[i]["w_enc"] + t[i]["b_enc"]
        f.append(pre * (pre > t[i]["threshold"]))
    y = [sum(f[i] @ t[i]["w_dec"][:, j] for i in range(j + 1)) + t[j]["b_dec"] for j in range(L)]
    clt = load_dictionary(tmp_path / "clt")
    assert [str(s) for s in Site.parse(clt.cfg.hook_name).sites()] == [
        f"blocks.{i}.mlp.hook_in" for i in range(L)
    ]
    codes = clt.encode(x.reshape(len(x), -1))
    torch.testing.assert_close(codes, torch.cat(f, dim=-1), **TOL)
    torch.testing.assert_close(clt.decode(codes), torch.cat(y, dim=-1), **TOL)


@pytest.mark.parametrize("rule", ["relu", "jumprelu", "topk", "skip"])
def test_circuit_tracer_transcoder_set_equals_load_transcoder(tmp_path, rule):
    """circuit-tracer `load_transcoder` + SingleLayerTranscoder: pre = F.linear(x, W_enc, b_enc);
    ReLU, JumpReLU x*(x > threshold), or TopK (config activation topk, k) gating x; y = f W_dec +
    b_dec + x W_skip^T."""
    folder = tmp_path / "set"
    extra = {"activation": "topk", "k": 5} if rule == "topk" else {}
    write_circuit_tracer_config(
        folder, "transcoder_set", "Qwen/Qwen3-0.6B", "mlp.hook_in", "mlp.hook_out", **extra
    )
    for i in range(2):
        write_circuit_tracer_layer(folder / f"layer_{i}.safetensors", D, N, seed=i, threshold=rule == "jumprelu",
                                   skip=rule == "skip")  # fmt: skip
    t, x = load_file(str(folder / "layer_1.safetensors")), _x()
    pre = F.linear(x, t["W_enc"], t["b_enc"])
    if rule == "jumprelu":
        f = pre * (pre > t["activation_function.threshold"])
    elif rule == "topk":
        gate = torch.zeros_like(pre).scatter_(-1, pre.topk(5, dim=-1).indices, 1)
        f = pre * gate
        assert (pre.topk(5, dim=-1).values > 0).all()  # where ours (ReLU after TopK) and theirs agree
    else:
        f = F.relu(pre)
    y = f @ t["W_dec"] + t["b_dec"] + (x @ t["W_skip"].T if rule == "skip" else 0)
    paths = find_dictionaries(folder)
    assert [p.name for p in paths] == ["set#layer_0", "set#layer_1"]
    dic = load_dictionary(paths[1])
    assert (dic.cfg.hook_name, dic.cfg.hook_name_out) == ("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")
    assert dic.cfg.metadata["model_family"] == "qwen3"
    torch.testing.assert_close(dic.encode(x), f, **TOL)
    torch.testing.assert_close(dic.decode(dic.encode(x), x), y, **TOL)


def test_circuit_tracer_set_listing_gemma_scope_2_files(tmp_path):
    """A config.yaml whose `transcoders` list names Gemma Scope 2 params.safetensors (the
    mwhanna/gemma-scope-2-* sets): read with `load_gemma_scope_2_transcoder`, hooks from config.yaml."""
    files = []
    for i in range(2):
        f = write_gemma_scope_2(
            tmp_path / "gs2" / f"layer_{i}_width_1k_l0_small_affine", D, N, "a", "b", affine=True, seed=i
        )
        files.append(str(f / "params.safetensors"))
    folder = write_circuit_tracer_config(tmp_path / "set", "transcoder_set", "google/gemma-3-1b-pt",
                                         "ln2.hook_normalized", "hook_mlp_out", transcoders=files)  # fmt: skip
    dic = load_dictionary(f"{folder}#layer_1")
    t, x = load_file(files[1]), _x()
    pre = x @ t["w_enc"] + t["b_enc"]
    y = (pre * (pre > t["threshold"])) @ t["w_dec"] + t["b_dec"] + x @ t["affine_skip_connection"]
    assert dic.cfg.hook_name == "blocks.1.ln2.hook_normalized"
    torch.testing.assert_close(dic.decode(dic.encode(x), x), y, **TOL)


def test_circuit_tracer_clt_config_with_gemma_scope_2_list_drops_the_last_entry(tmp_path):
    """`load_gemma_scope_2_clt` reads range(max(paths)): the list's last entry is not a layer."""
    folders = write_gemma_scope_2_clt(tmp_path / "clt", "width_1k_l0_medium", 2, D, N)
    listed = [str(f / "params.safetensors") for f in folders] + [str(folders[-1] / "params.safetensors")]
    folder = write_circuit_tracer_config(tmp_path / "ct", "cross_layer_transcoder", "google/gemma-3-270m",
                                         "hook_resid_mid", "hook_mlp_out", transcoders=listed)  # fmt: skip
    clt = load_dictionary(folder)
    assert [str(s) for s in Site.parse(clt.cfg.hook_name).sites()] == [
        "blocks.0.hook_resid_mid",
        "blocks.1.hook_resid_mid",
    ]
    assert clt.cfg.metadata["model_family"] == "gemma3"


def test_circuit_tracer_clt_folder_for_gpt_oss(tmp_path):
    """mntss/clt-* (GPT-OSS-20B): config.yaml + W_enc_{i}/W_dec_{i}.safetensors, as `load_clt`."""
    folder = write_circuit_tracer_clt(tmp_path / "clt-131k", 2, D, N)
    write_circuit_tracer_config(
        folder, "cross_layer_transcoder", "openai/gpt-oss-20b", "hook_resid_mid", "mlp.hook_out"
    )
    enc = [load_file(str(folder / f"W_enc_{i}.safetensors")) for i in range(2)]
    dec = [load_file(str(folder / f"W_dec_{i}.safetensors")) for i in range(2)]
    x = torch.stack([_x(seed=i) for i in range(2)], dim=1)
    f = []
    for i in range(2):
        pre = F.linear(x[:, i], enc[i][f"W_enc_{i}"], enc[i][f"b_enc_{i}"])
        f.append(pre * (pre > enc[i][f"threshold_{i}"]))
    y1 = f[0] @ dec[0]["W_dec_0"][:, 1] + f[1] @ dec[1]["W_dec_1"][:, 0] + enc[1]["b_dec_1"]
    clt = load_dictionary(folder)
    assert [str(s) for s in Site.parse(clt.cfg.hook_name_out).sites()] == [
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_mlp_out",
    ]
    assert clt.cfg.metadata["model_family"] == "gpt_oss"
    torch.testing.assert_close(clt.decode(clt.encode(x.reshape(len(x), -1)))[:, D:], y1, **TOL)


def test_qwen_scope_equals_saelens_qwen_scope_loader(tmp_path):
    """SAELens `qwen_scope_sae_huggingface_loader`: W_enc^T, W_dec^T, TopK with k from the repo
    name (L0_8), hook blocks.L.hook_resid_post; pre = x W_enc^T + b_enc."""
    file = write_qwen_scope(tmp_path / "SAE-Res-Qwen3-1.7B-Base-W1K-L0_8", 5, D, 1024)
    sd, x = torch.load(file, weights_only=True), _x()
    pre = x @ sd["W_enc"].T + sd["b_enc"]
    top = pre.topk(8, dim=-1)
    f = torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))
    dic = load_dictionary(file)
    assert (dic.cfg.hook_name, dic.cfg.settings.k) == ("blocks.5.hook_resid_post", 8)
    assert (
        dic.cfg.metadata["model_name"] == "Qwen/Qwen3-1.7B-Base"
        and dic.cfg.metadata["model_family"] == "qwen3"
    )
    torch.testing.assert_close(dic.encode(x), f, **TOL)
    torch.testing.assert_close(dic.decode(f), f @ sd["W_dec"].T + sd["b_dec"], **TOL)


def test_qwen_scope_of_qwen_3_5_is_refused(tmp_path):
    file = write_qwen_scope(tmp_path / "SAE-Res-Qwen3.5-2B-Base-W1K-L0_50", 0, D, 1024)
    with pytest.raises(MonosemanticError, match="Gated DeltaNet"):
        load_dictionary(file)


def test_llama_scope_equals_saelens_llama_scope_loader(tmp_path):
    """SAELens `llama_scope_sae_huggingface_loader` + `fold_activation_norm_scaling_factor`:
    s = sqrt(d_model) / avg_norm_in; W_enc = encoder.weight^T * s, threshold = jump_relu_threshold * s,
    W_dec = decoder.weight^T / s, b_dec = decoder.bias / s (bfloat16 files read as float)."""
    folder = write_llama_scope_v1(tmp_path / "Llama3_1-8B-Base-L3R-8x", D, N, "blocks.3.hook_resid_post")
    hp = json.loads((folder / "hyperparams.json").read_text())
    t = {k: v.float() for k, v in load_file(str(folder / "checkpoints" / "final.safetensors")).items()}
    s = math.sqrt(D) / hp["dataset_average_activation_norm"]["in"]
    x = _x() / s
    pre = x @ (t["encoder.weight"].T * s) + t["encoder.bias"]
    f = F.relu(pre) * (pre > hp["jump_relu_threshold"] * s)
    y = f @ (t["decoder.weight"].T / s) + t["decoder.bias"] / s
    dic = load_dictionary(folder)
    assert dic.cfg.hook_name == "blocks.3.hook_resid_post" and dic.cfg.metadata["model_family"] == "llama"
    torch.testing.assert_close(dic.encode(x), f, **TOL)
    torch.testing.assert_close(dic.decode(f), y, **TOL)
    assert 0 < int((f > 0).sum()) < f.numel()


@pytest.mark.parametrize(("act", "norm", "gated"), [("topk", "dataset-wise", True), ("jumprelu", "dataset-wise", True),
                                                    ("relu", "inference", False), ("jumprelu", "inference", False)])  # fmt: skip
def test_llamascopium_equals_sparse_autoencoder(tmp_path, act, norm, gated):
    """Llamascopium `SparseAutoEncoder`: normalize_activations (x * sqrt(d)/norm_in), encode with the
    decoder-norm gating of `sparsity_include_decoder_norm`, decode, denormalize (/ sqrt(d)/norm_out)."""
    hook_in, hook_out = "blocks.4.ln2.hook_normalized", "blocks.4.hook_mlp_out"
    folder = write_llamascopium(tmp_path / "Llama-Scope-2-Qwen3-1.7B" / "layer4", D, 4, hook_in, hook_out,
                                act_fn=act, norm_activation=norm, gated=gated, top_k=6)  # fmt: skip
    sd, x = load_file(str(folder / "sae_weights.safetensors")), _x()
    f_in = (
        math.sqrt(D) / float(sd[f"dataset_average_activation_norm.{hook_in}"])
        if norm == "dataset-wise"
        else 1.0
    )
    f_out = (
        math.sqrt(D) / float(sd[f"dataset_average_activation_norm.{hook_out}"])
        if norm == "dataset-wise"
        else 1.0
    )
    hidden = (x * f_in) @ sd["W_E"] + sd["b_E"]
    n = sd["W_D"].norm(dim=1)
    h = hidden * n if gated else hidden
    if act == "topk":
        r = h * h.gt(0)
        acts = torch.zeros_like(r).scatter_(-1, r.topk(6, dim=-1).indices, r.topk(6, dim=-1).values)
    elif act == "jumprelu":
        acts = h * h.gt(sd["activation_function.log_jumprelu_threshold"].exp())
    else:
        acts = h * h.gt(0)
    f = acts / n if gated else acts
    y = (f @ sd["W_D"] + sd["b_D"]) / f_out
    dic = load_dictionary(folder)
    assert (dic.cfg.hook_name, dic.cfg.hook_name_out) == (hook_in, hook_out)
    assert dic.cfg.metadata["model_name"] == "Qwen/Qwen3-1.7B"
    ours = dic.encode(x)
    # TopK's decoder norms are folded into the weights: the same latents, each scaled by its norm
    torch.testing.assert_close(ours, f * n if act == "topk" and gated else f, **TOL)
    torch.testing.assert_close(dic.decode(ours), y, **TOL)


def test_llamascopium_clt_is_refused_in_one_line(tmp_path):
    folder = write_llamascopium(tmp_path / "clt", D, 2, "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out")
    cfg = json.loads((folder / "config.json").read_text()) | {"sae_type": "clt"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MonosemanticError, match="Llamascopium 'clt'.*not supported yet"):
        load_dictionary(folder)


def test_transcoder_circuits_equals_sparse_autoencoder_forward(tmp_path):
    """transcoder_circuits `SparseAutoencoder.forward`: pre = (x - b_dec) W_enc + b_enc, ReLU,
    y = f W_dec + b_dec_out; hooks from the pickled cfg (read without its package)."""
    file = write_transcoder_circuits(tmp_path / "gpt2-transcoders", 7, D, N)
    assert "sae_training" not in sys.modules  # our reader must not need the package
    with sae_training_installed():  # the reference reads the file as transcoder_circuits does
        raw = torch.load(file, weights_only=False)["state_dict"]
    x = _x()
    f = F.relu((x - raw["b_dec"]) @ raw["W_enc"] + raw["b_enc"])
    dic = load_dictionary(file)
    assert (dic.cfg.hook_name, dic.cfg.hook_name_out) == (
        "blocks.7.ln2.hook_normalized",
        "blocks.7.hook_mlp_out",
    )
    assert dic.cfg.metadata["model_family"] == "gpt2"
    torch.testing.assert_close(dic.encode(x), f, **TOL)
    torch.testing.assert_close(dic.decode(f), f @ raw["W_dec"] + raw["b_dec_out"], **TOL)


def test_folders_of_per_layer_release_files_list_each(tmp_path):
    for layer in (2, 0, 1):
        write_transcoder_circuits(tmp_path / "t", layer, D, N, seed=layer)
    names = [p.name for p in find_dictionaries(tmp_path / "t")]
    assert [n.split("blocks.")[1][0] for n in names] == ["0", "1", "2"]


def test_a_transcoder_set_without_a_layer_says_how_to_name_one(tmp_path):
    folder = write_circuit_tracer_config(
        tmp_path / "set", "transcoder_set", "gpt2", "mlp.hook_in", "hook_mlp_out"
    )
    write_circuit_tracer_layer(folder / "layer_0.safetensors", D, N)
    with pytest.raises(MonosemanticError, match=r"set of 1 per-layer transcoders; name one as .*#layer_N"):
        load_dictionary(folder)


def test_damaged_release_files_are_one_line(tmp_path):
    folder = write_gemma_scope_2(tmp_path / "resid_post" / "layer_0_w", D, N, "model.layers.0.output")
    (folder / "params.safetensors").write_bytes(b"garbage")
    with pytest.raises(MonosemanticError, match="not a readable safetensors file"):
        load_dictionary(folder)
    bad = write_gemma_scope_2(tmp_path / "resid_post" / "layer_1_w", D, N, "model.layers.1.mystery.output")
    with pytest.raises(MonosemanticError, match="no site for"):
        load_dictionary(bad)
