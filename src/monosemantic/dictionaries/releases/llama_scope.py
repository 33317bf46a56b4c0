"""Llama Scope (OpenMOSS): the original Llama-3.1-8B release and Llamascopium's own layout.

**Llama Scope** (`fnlp/Llama3_1-8B-Base-L{X}{R,A,M,TC}-{8,32}x`), as SAELens'
`llama_scope_sae_huggingface_loader` reads it: a folder with `hyperparams.json` (`d_model`,
`d_sae`, `hook_point_in` (and `hook_point_out`) in TransformerLens names, a scalar
`jump_relu_threshold`, `dataset_average_activation_norm.in`) and `checkpoints/final.safetensors`
(`encoder.weight [d_sae, d], encoder.bias, decoder.weight [d, d_sae], decoder.bias`). Trained on
activations scaled by s = sqrt(d_model) / avg_norm_in; SAELens folds s in: W_enc * s,
W_dec / s, b_dec / s, threshold * s, and encodes x directly (JumpReLU, no input bias).

**Llamascopium** (Language-Model-SAEs' current `SparseDictionary`, e.g.
`OpenMOSS-Team/Llama-Scope-2-Qwen3-1.7B:transcoder/8x/k128/layer12_transcoder_8x_k128`): a folder
with `config.json` (`sae_type`, `d_model`, `expansion_factor`, `act_fn` relu|jumprelu|topk|batchtopk,
`top_k`, `hook_point_in`, `hook_point_out`, `norm_activation`, `sparsity_include_decoder_norm`,
`use_decoder_bias`) and `sae_weights.safetensors` (or `.pt` holding {"sae": state dict}, or
`checkpoints/final.safetensors`): `W_E [d, d_sae]`, `b_E`, `W_D [d_sae, d_out]`, `b_D`,
`activation_function.log_jumprelu_threshold`, `dataset_average_activation_norm.<hook>` scalars.
`SparseAutoEncoder.encode`: pre = x W_E + b_E; with `sparsity_include_decoder_norm` the rule sees
pre * |W_D row| and the result is divided by it again; decode f W_D + b_D. In "dataset-wise"
norm mode inputs are first multiplied by sqrt(d_model)/norm[hook_in] and outputs divided by
sqrt(d_model)/norm[hook_out] (`compute_norm_factor`); "inference" mode has it folded already.
We fold both: the input factor into W_E, the output one into W_D and b_D, and the decoder norms
into JumpReLU thresholds (exact); for TopK the decoder norms are folded into the encoder and
decoder (same choice of latents and same reconstruction; each latent's value is multiplied by its
decoder norm, the value of the unit-norm form). Only `sae_type = "sae"` (SAEs and per-layer
transcoders) is read; CLTs, Lorsa, crosscoders and MOLTs are refused in one line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.readers import load_safetensors, load_torch, read_json

from .build import ReleaseRef, release_metadata, single_site

HYPERPARAMS = "hyperparams.json"
LMS_CONFIG = "config.json"
_LMS_WEIGHTS = ("sae_weights.safetensors", "sae_weights.pt", "checkpoints/pruned.safetensors",
                "checkpoints/pruned.pt", "checkpoints/final.safetensors", "checkpoints/final.pt")  # fmt: skip


def is_llama_scope_v1(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / HYPERPARAMS).is_file()
        and (path / "checkpoints" / "final.safetensors").is_file()
    )


def _json(path: Path, what: str) -> dict[str, Any]:
    cfg = read_json(path, what)
    if not isinstance(cfg, dict):
        raise DataError(f"{path} is not a JSON object")
    return cfg


def is_llamascopium(path: Path) -> bool:
    if not (path.is_dir() and (path / LMS_CONFIG).is_file()):
        return False
    try:
        return "sae_type" in _json(path / LMS_CONFIG, "Llamascopium config")
    except DataError:
        return False


def _model_from_name(path: Path, ref: ReleaseRef | None, default: str | None) -> str | None:
    """Llama Scope 2's repos are named after their model (`Llama-Scope-2-Qwen3-1.7B`)."""
    names = ([ref.repo_id] if ref and ref.repo_id else []) + list(reversed(path.parts))
    for name in names:
        m = re.search(r"Llama-Scope-2-(.+)$", name.split("--")[-1])
        if m:
            model = m.group(1)
            return f"Qwen/{model}" if model.lower().startswith("qwen") else model
    return default


def read_llama_scope_v1(folder: Path, ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    hp = _json(folder / HYPERPARAMS, "Llama Scope hyperparams")
    try:
        d, s = (
            int(hp["d_model"]),
            math.sqrt(int(hp["d_model"])) / float(hp["dataset_average_activation_norm"]["in"]),
        )
        threshold, hook_in = float(hp["jump_relu_threshold"]), str(hp["hook_point_in"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{folder / HYPERPARAMS}: lacks or garbles {e}; not a Llama Scope folder") from None
    t = load_safetensors(folder / "checkpoints" / "final.safetensors", what="Llama Scope weights")
    need = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
    if any(key not in t for key in need):
        raise DataError(f"{folder}/checkpoints/final.safetensors: expected {', '.join(need)}")
    W_enc = t["encoder.weight"].float().T * s
    w = {"W_enc": W_enc, "b_enc": t["encoder.bias"].float(), "W_dec": t["decoder.weight"].float().T / s,
         "b_dec": t["decoder.bias"].float() / s, "threshold": torch.full((W_enc.shape[1],), threshold * s)}  # fmt: skip
    if W_enc.shape[0] != d:
        raise DataError(f"{folder}: encoder reads {W_enc.shape[0]} values, hyperparams say d_model={d}")
    hook_out = hp.get("hook_point_out")
    md = release_metadata(ref, f"Llama Scope {folder.name}", "meta-llama/Llama-3.1-8B", norm_scaling_factor=s)
    return single_site(
        "jumprelu", w, hook_in, hook_out if hook_out != hook_in else None, md, device, str(folder)
    )


def _lms_state(folder: Path) -> dict[str, torch.Tensor]:
    for name in _LMS_WEIGHTS:
        f = folder / name
        if f.is_file():
            if f.suffix == ".safetensors":
                return load_safetensors(f, what="Llamascopium weights")
            sd = load_torch(f, "Llamascopium weights")
            if not isinstance(sd, dict) or "sae" not in sd:
                raise DataError(f"{f}: expected a dict with the state dict under 'sae'")
            return sd["sae"]
    raise DataError(f"{folder}: no {', '.join(_LMS_WEIGHTS)} beside config.json")


def read_llamascopium(folder: Path, ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    cfg = _json(folder / LMS_CONFIG, "Llamascopium config")
    if cfg.get("sae_type") != "sae":
        raise MonosemanticError(
            f"{folder}: a Llamascopium {cfg.get('sae_type')!r}; monosemantic reads its SAEs and transcoders "
            "(sae_type 'sae'); CLTs, Lorsa and crosscoders of this layout are not supported yet"
        )
    act, hook_in, hook_out = cfg.get("act_fn", "relu"), cfg["hook_point_in"], cfg["hook_point_out"]
    if act not in ("relu", "jumprelu", "topk") or cfg.get("use_glu_encoder"):
        raise MonosemanticError(
            f"{folder}: act_fn {act!r}{' with a GLU encoder' if cfg.get('use_glu_encoder') else ''}; "
            "readable are relu, jumprelu and topk (batch rules depend on the batch at inference)"
        )
    sd = _lms_state(folder)
    w = {"W_enc": sd["W_E"].float(), "b_enc": sd["b_E"].float(), "W_dec": sd["W_D"].float()}
    w["b_dec"] = sd["b_D"].float() if cfg.get("use_decoder_bias", True) else torch.zeros(w["W_dec"].shape[1])
    f_in, f_out = _norm_factors(cfg, sd, hook_in, hook_out, folder)
    w["W_enc"] = w["W_enc"] * f_in
    w["W_dec"], w["b_dec"] = w["W_dec"] / f_out, w["b_dec"] / f_out
    arch = {"relu": "relu", "jumprelu": "jumprelu", "topk": "topk"}[act]
    gated = cfg.get("sparsity_include_decoder_norm", True)
    norms = sd["W_D"].float().norm(dim=1)  # the rule's |W_D| is that of the stored decoder
    if act == "jumprelu":
        theta = sd["activation_function.log_jumprelu_threshold"].float().exp()
        w["threshold"] = theta / norms if gated else theta
    elif act == "topk" and gated:
        w["W_enc"], w["b_enc"], w["W_dec"] = (
            w["W_enc"] * norms,
            w["b_enc"] * norms,
            w["W_dec"] / norms[:, None],
        )
    model = _model_from_name(folder, ref, ref.model_name if ref else None)
    md = release_metadata(
        ref, f"Llamascopium {folder.name}", model, norm_activation=cfg.get("norm_activation")
    )
    k = int(cfg.get("top_k", 50)) if act == "topk" else None
    return single_site(
        arch, w, hook_in, hook_out if hook_out != hook_in else None, md, device, str(folder), k=k
    )


def _norm_factors(
    cfg: dict[str, Any], sd: dict[str, torch.Tensor], hook_in: str, hook_out: str, folder: Path
) -> tuple[float, float]:
    """`compute_norm_factor` for "dataset-wise" (sqrt(d_model) / the recorded average norm), 1 for
    "inference"; token- and batch-wise norms depend on each input and cannot be folded."""
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode == "inference":
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise MonosemanticError(
            f"{folder}: norm_activation {mode!r} scales each input differently; not readable"
        )
    d = math.sqrt(int(cfg["d_model"]))
    try:
        norm_in = float(sd[f"dataset_average_activation_norm.{hook_in}"])
        norm_out = float(sd[f"dataset_average_activation_norm.{hook_out}"])
    except KeyError as e:
        raise DataError(f"{folder}: dataset-wise normalisation but no {e.args[0]} in the weights") from None
    return d / norm_in, d / norm_out
