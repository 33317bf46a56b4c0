"""Tiny random dictionaries written in each release's exact on-disk layout, and a local hub cache.

Every writer follows the layout its release's own loader reads (file names, tensor names, shapes
and transposes, dtypes, config keys, hook names); the layouts and the code they come from are
listed in `src/monosemantic/dictionaries/releases/` (one module per release family) and
`docs/releases.md`. Weights are random and non-trivial: positive thresholds, nonzero biases.

Run as a script to write one of each into a folder for a look (or for a peer's own loader):
    python tests/support/release_fixtures.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _w(gen: torch.Generator, *shape: int, scale: float | None = None) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * (scale if scale is not None else shape[0] ** -0.5)


def _thr(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=gen) * 0.3 + 0.05


# ---- Gemma Scope 2 (google/gemma-scope-2-*) ----------------------------------------------------
def write_gemma_scope_2(
    folder: Path,
    d_in: int,
    d_sae: int,
    hook_in: str,
    hook_out: str | None = None,
    d_out: int | None = None,
    affine: bool = False,
    model_name: str = "google/gemma-3-1b-pt",
    seed: int = 0,
    config: bool = True,
) -> Path:
    """`<folder>/params.safetensors` (w_enc [d_in, d_sae], w_dec [d_sae, d_out], b_enc, b_dec,
    threshold, affine_skip_connection [d_in, d_out]) + `config.json` naming HF module hooks.
    Layout from: SAELens (decoderesearch/SAELens) `sae_lens/loading/pretrained_sae_loaders.py` `gemma_3_sae_huggingface_loader`, `_infer_gemma_3_raw_cfg_dict`;
    circuit-tracer (decoderesearch/circuit-tracer) `circuit_tracer/transcoder/single_layer_transcoder.py` `load_gemma_scope_2_transcoder`.
    """
    g, d_out = _gen(seed), d_out or d_in
    folder.mkdir(parents=True, exist_ok=True)
    t = {"w_enc": _w(g, d_in, d_sae), "b_enc": _w(g, d_sae, scale=0.2) + 0.1, "w_dec": _w(g, d_sae, d_out),
         "b_dec": _w(g, d_out, scale=0.2), "threshold": _thr(g, d_sae)}  # fmt: skip
    if affine:
        t["affine_skip_connection"] = _w(g, d_in, d_out, scale=0.3 / d_in**0.5)
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "params.safetensors"))
    if config:
        cfg = {"architecture": "jump_relu", "model_name": model_name, "hf_hook_point_in": hook_in}
        if hook_out:
            cfg |= {"hf_hook_point_out": hook_out, "affine_connection": affine}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder


def write_gemma_scope_2_clt(
    root: Path,
    suffix: str,
    n_layers: int,
    d: int,
    n: int,
    model_name: str = "google/gemma-3-270m",
    seed: int = 0,
) -> list[Path]:
    """`<root>/layer_{i}_{suffix}/params.safetensors` with w_dec [n, n_layers, d] (to every layer).
    Layout from: circuit-tracer (decoderesearch/circuit-tracer) `circuit_tracer/transcoder/cross_layer_transcoder.py` `load_gemma_scope_2_clt`.
    """
    g, folders = _gen(seed), []
    for i in range(n_layers):
        f = root / f"layer_{i}_{suffix}"
        f.mkdir(parents=True, exist_ok=True)
        t = {"w_enc": _w(g, d, n), "b_enc": _w(g, n, scale=0.2) + 0.1, "w_dec": _w(g, n, n_layers, d, scale=n**-0.5),
             "b_dec": _w(g, d, scale=0.2), "threshold": _thr(g, n)}  # fmt: skip
        save_file(t, str(f / "params.safetensors"))
        cfg = {"architecture": "jump_relu", "model_name": model_name,
               "hf_hook_point_in": f"model.layers.{i}.pre_feedforward_layernorm.output",
               "hf_hook_point_out": f"model.layers.{i}.post_feedforward_layernorm.output", "affine_connection": False}  # fmt: skip
        (f / "config.json").write_text(json.dumps(cfg))
        folders.append(f)
    return folders


def write_gemma_scope_npz(folder: Path, d: int, n: int, seed: int = 0) -> Path:
    """Gemma Scope (1)'s `params.npz` (google/gemma-scope-2b-pt-transcoders/layer_L/width_16k/average_l0_N):
    W_enc [d, n], W_dec [n, d], b_enc, b_dec, threshold (float32).
    Layout from: circuit-tracer (decoderesearch/circuit-tracer) `circuit_tracer/transcoder/single_layer_transcoder.py` `load_gemma_scope_transcoder`;
    SAELens (decoderesearch/SAELens) `sae_lens/loading/pretrained_sae_loaders.py` `get_gemma_2_transcoder_config_from_hf`.
    """
    import numpy as np

    g = _gen(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = {"W_enc": _w(g, d, n), "W_dec": _w(g, n, d), "b_enc": _w(g, n, scale=0.2) + 0.1, "b_dec": _w(g, d, scale=0.2),
         "threshold": _thr(g, n)}  # fmt: skip
    with open(folder / "params.npz", "wb") as f:
        np.savez(f, **{k: v.numpy() for k, v in t.items()})
    return folder / "params.npz"


# ---- circuit-tracer (config.yaml + per-layer files) -------------------------------------------
def write_circuit_tracer_layer(
    file: Path, d: int, n: int, seed: int = 0, threshold: bool = False, skip: bool = False
) -> Path:
    """`load_transcoder`'s file: W_enc [n, d] (an F.linear weight), W_dec [n, d], b_enc, b_dec,
    optional activation_function.threshold [n] and W_skip [d, d] (applied x W_skip^T).
    Layout from: circuit-tracer (decoderesearch/circuit-tracer) `circuit_tracer/transcoder/single_layer_transcoder.py` `load_transcoder`.
    """
    g = _gen(seed)
    t = {"W_enc": _w(g, n, d, scale=d**-0.5), "W_dec": _w(g, n, d), "b_enc": _w(g, n, scale=0.2) + 0.1,
         "b_dec": _w(g, d, scale=0.2)}  # fmt: skip
    if threshold:
        t["activation_function.threshold"] = _thr(g, n)
    if skip:
        t["W_skip"] = _w(g, d, d, scale=0.3 / d**0.5)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(file))
    return file


def write_circuit_tracer_config(
    folder: Path, kind: str, model_name: str, hook_in: str, hook_out: str, **extra
) -> Path:
    """circuit-tracer's config.yaml (model_kind, model_name, feature hooks; `transcoders`, `activation`, `k`).
    Layout from: circuit-tracer (decoderesearch/circuit-tracer) `circuit_tracer/utils/hf_utils.py` `load_transcoders`, `resolve_transcoder_paths`, `load_transcoder_from_hub`.
    """
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_kind": kind,
        "model_name": model_name,
        "feature_input_hook": hook_in,
        "feature_output_hook": hook_out,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg | extra, sort_keys=False))
    return folder


def write_circuit_tracer_clt(folder: Path, n_layers: int, d: int, n: int, seed: int = 0) -> Path:
    """`load_clt`'s folder: W_enc_{i}.safetensors (W_enc_i [n, d], b_enc_i, b_dec_i, threshold_i)
    and W_dec_{i}.safetensors (W_dec_i [n, n_layers - i, d]).
    Layout from: circuit-tracer (decoderesearch/circuit-tracer) `circuit_tracer/transcoder/cross_layer_transcoder.py` `load_clt`.
    """
    g = _gen(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_layers):
        save_file({f"W_enc_{i}": _w(g, n, d, scale=d**-0.5), f"b_enc_{i}": _w(g, n, scale=0.2) + 0.1,
                   f"b_dec_{i}": _w(g, d, scale=0.2), f"threshold_{i}": _thr(g, n)}, str(folder / f"W_enc_{i}.safetensors"))  # fmt: skip
        save_file(
            {f"W_dec_{i}": _w(g, n, n_layers - i, d, scale=n**-0.5)}, str(folder / f"W_dec_{i}.safetensors")
        )
    return folder


# ---- Qwen Scope (Qwen/SAE-Res-*) -----------------------------------------------------------------
def write_qwen_scope(repo: Path, layer: int, d_in: int, d_sae: int, seed: int = 0) -> Path:
    """`<repo>/layer{L}.sae.pt`: torch.save of {W_enc [d_sae, d_in], W_dec [d_in, d_sae], b_enc, b_dec}.
    Layout from: SAELens (decoderesearch/SAELens) `sae_lens/loading/pretrained_sae_loaders.py` `qwen_scope_sae_huggingface_loader` (and the release's model cards).
    """
    g = _gen(seed)
    repo.mkdir(parents=True, exist_ok=True)
    sd = {"W_enc": _w(g, d_sae, d_in, scale=d_in**-0.5), "W_dec": _w(g, d_in, d_sae, scale=d_sae**-0.5),
          "b_enc": _w(g, d_sae, scale=0.2), "b_dec": _w(g, d_in, scale=0.2)}  # fmt: skip
    torch.save(sd, repo / f"layer{layer}.sae.pt")
    return repo / f"layer{layer}.sae.pt"


# ---- Llama Scope (fnlp/Llama3_1-8B-Base-*) and Llamascopium -------------------------------------
def write_llama_scope_v1(
    folder: Path, d: int, d_sae: int, hook_in: str, hook_out: str | None = None, seed: int = 0
) -> Path:
    """hyperparams.json + checkpoints/final.safetensors (encoder.weight [d_sae, d], decoder.weight
    [d, d_sae], biases; bfloat16 as released).
    Layout from: SAELens (decoderesearch/SAELens) `sae_lens/loading/pretrained_sae_loaders.py` `llama_scope_sae_huggingface_loader`.
    """
    g = _gen(seed)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    hp = {"d_model": d, "d_sae": d_sae, "hook_point_in": hook_in, "hook_point_out": hook_out or hook_in,
          "jump_relu_threshold": 0.05, "dataset_average_activation_norm": {"in": 3.7, "out": 2.9}}  # fmt: skip
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    t = {"encoder.weight": _w(g, d_sae, d, scale=d**-0.5), "encoder.bias": _w(g, d_sae, scale=0.1),
         "decoder.weight": _w(g, d, d_sae, scale=d_sae**-0.5), "decoder.bias": _w(g, d, scale=0.1)}  # fmt: skip
    save_file(
        {k: v.to(torch.bfloat16) for k, v in t.items()}, str(folder / "checkpoints" / "final.safetensors")
    )
    return folder


def write_llamascopium(
    folder: Path, d: int, expansion: int, hook_in: str, hook_out: str, act_fn: str = "topk", top_k: int = 4,
    norm_activation: str = "dataset-wise", gated: bool = True, seed: int = 0,
) -> Path:  # fmt: skip
    """config.json (SAEConfig.save_hyperparameters) + sae_weights.safetensors (full_state_dict:
    W_E [d, d_sae], b_E, W_D [d_sae, d], b_D, activation_function.log_jumprelu_threshold,
    dataset_average_activation_norm.<hook>).
    Layout from: Language-Model-SAEs (OpenMOSS/Language-Model-SAEs) `src/llamascopium/models/sparse_dictionary.py`
    (`from_local`, `compute_norm_factor`) and `src/llamascopium/models/sae.py` (`encode`).
    """
    g, n = _gen(seed), d * expansion
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"sae_type": "sae", "d_model": d, "expansion_factor": expansion, "use_decoder_bias": True, "act_fn": act_fn,
           "norm_activation": norm_activation, "sparsity_include_decoder_norm": gated, "top_k": top_k,
           "use_triton_kernel": False, "sparsity_threshold_for_triton_spmm_kernel": 0.996,
           "jumprelu_threshold_window": 2.0, "hook_point_in": hook_in, "hook_point_out": hook_out, "use_glu_encoder": False}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
    sd = {
        "W_E": _w(g, d, n),
        "b_E": _w(g, n, scale=0.2),
        "W_D": _w(g, n, d, scale=0.5),
        "b_D": _w(g, d, scale=0.2),
    }
    if act_fn == "jumprelu":
        sd["activation_function.log_jumprelu_threshold"] = (_thr(g, n) * 0.5).log()
    for hook, norm in ((hook_in, 4.5), (hook_out, 2.5)):
        sd[f"dataset_average_activation_norm.{hook}"] = torch.tensor(norm)
    save_file(sd, str(folder / "sae_weights.safetensors"))
    return folder


# ---- transcoder_circuits (pchlenski/gpt2-transcoders) -------------------------------------------
@dataclass
class LanguageModelSAERunnerConfig:
    """The fields of `sae_training.config.LanguageModelSAERunnerConfig` that a saved transcoder
    carries (pickled by `save_model` under the module name `sae_training.config`)."""

    model_name: str = "gpt2-small"
    hook_point: str = "blocks.0.ln2.hook_normalized"
    hook_point_layer: int = 0
    hook_point_head_index: int | None = None
    dataset_path: str = "Skylion007/openwebtext"
    is_dataset_tokenized: bool = False
    context_size: int = 128
    d_in: int = 768
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 42
    dtype: torch.dtype = torch.float32
    is_transcoder: bool = True
    out_hook_point: str | None = "blocks.0.hook_mlp_out"
    out_hook_point_layer: int | None = 0
    d_out: int | None = 768
    expansion_factor: int = 32
    b_dec_init_method: str = "mean"
    l1_coefficient: float = 0.00014
    lr: float = 0.0004
    d_sae: int = 24576


def write_transcoder_circuits(folder: Path, layer: int, d: int, d_sae: int, seed: int = 0) -> Path:
    """`final_sparse_autoencoder_gpt2-small_blocks.{L}.ln2.hook_normalized_{d_sae}.pt`:
    torch.save({"cfg": LanguageModelSAERunnerConfig, "state_dict": {W_enc, b_enc, W_dec, b_dec, b_dec_out}}).
    Layout from: transcoder_circuits (jacobdunefsky/transcoder_circuits) `sae_training/sparse_autoencoder.py`
    (`save_model`, `forward`) and `sae_training/config.py` (`LanguageModelSAERunnerConfig`).
    """
    g = _gen(seed)
    cfg = LanguageModelSAERunnerConfig(hook_point=f"blocks.{layer}.ln2.hook_normalized", hook_point_layer=layer,
                                       out_hook_point=f"blocks.{layer}.hook_mlp_out", out_hook_point_layer=layer,
                                       d_in=d, d_out=d, d_sae=d_sae, expansion_factor=d_sae // d)  # fmt: skip
    sd = OrderedDict(W_enc=_w(g, d, d_sae), b_enc=_w(g, d_sae, scale=0.2), W_dec=_w(g, d_sae, d, scale=d_sae**-0.5),
                     b_dec=_w(g, d, scale=0.3), b_dec_out=_w(g, d, scale=0.2))  # fmt: skip
    with sae_training_installed() as cls:
        obj = cls.__new__(cls)
        obj.__dict__.update(vars(cfg))
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"final_sparse_autoencoder_gpt2-small_blocks.{layer}.ln2.hook_normalized_{d_sae}.pt"
        torch.save({"cfg": obj, "state_dict": sd}, file)
    return file


@contextmanager
def sae_training_installed() -> Iterator[type]:
    """A stand-in `sae_training.config` module while the block runs (what transcoder_circuits'
    own code has installed when it saves and loads), so its pickles are written and read as by it."""
    module = types.ModuleType("sae_training.config")
    cls = type(
        "LanguageModelSAERunnerConfig", (LanguageModelSAERunnerConfig,), {"__module__": "sae_training.config"}
    )
    module.LanguageModelSAERunnerConfig = cls
    saved = {k: sys.modules.get(k) for k in ("sae_training", "sae_training.config")}
    sys.modules["sae_training"] = types.ModuleType("sae_training")
    sys.modules["sae_training.config"] = module
    try:
        yield cls
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


# ---- a local Hugging Face hub cache, so release names resolve offline ---------------------------
def hub_cache_repo(cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """The snapshot folder of `repo_id` in a hub cache at `cache` (refs/main -> snapshots/<commit>),
    where writers put files exactly as `snapshot_download` leaves them."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def main(out: Path) -> None:
    write_gemma_scope_2(
        out / "gemma-scope-2/resid_post/layer_1_width_1k_l0_small", 32, 64, "model.layers.1.output"
    )
    write_gemma_scope_2(out / "gemma-scope-2/transcoder_all/layer_0_width_1k_l0_small_affine", 32, 64,
                        "model.layers.0.pre_feedforward_layernorm.output",
                        "model.layers.0.post_feedforward_layernorm.output", affine=True)  # fmt: skip
    write_gemma_scope_2_clt(out / "gemma-scope-2/clt", "width_1k_l0_medium", 2, 32, 64)
    write_circuit_tracer_config(
        out / "circuit-tracer-set", "transcoder_set", "Qwen/Qwen3-0.6B", "mlp.hook_in", "mlp.hook_out"
    )
    for i in range(2):
        write_circuit_tracer_layer(out / "circuit-tracer-set" / f"layer_{i}.safetensors", 32, 64, seed=i)
    write_qwen_scope(out / "SAE-Res-Qwen3-1.7B-Base-W1K-L0_8", 1, 32, 1024)
    write_llama_scope_v1(out / "Llama3_1-8B-Base-L1R-8x", 32, 256, "blocks.1.hook_resid_post")
    write_llamascopium(
        out / "layer1_transcoder_8x_k4", 32, 8, "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"
    )
    write_transcoder_circuits(out / "gpt2-transcoders", 0, 32, 128)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
