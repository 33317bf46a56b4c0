"""Readers for other libraries' checkpoint layouts, converted to our `Dictionary` classes.

- EleutherAI sparsify: a folder with `cfg.json` (`d_in`, `num_latents` or `expansion_factor`,
  `k`, `transcode`, `skip_connection`) and `sae.safetensors` with `encoder.weight [d_sae, d_in]`,
  `encoder.bias`, `W_dec [d_sae, d_out]`, `b_dec`, optional `W_skip [d_out, d_in]`. A TopK SAE
  whose input is x - b_dec unless it is a transcoder.
- dictionary_learning (saprmarks): a folder with `ae.pt` (a state dict) and `config.json`
  (`trainer.dict_class`, `activation_dim`, `dict_size`, `k`). Without config.json the class is
  read from the weights' names only where they decide it; TopK vs BatchTopK (both store `k` and
  `threshold`) is refused rather than guessed. nn.Linear layouts:
  `encoder.weight [d_sae, d]`, `decoder.weight [d, d_sae]`; the decoder bias is `bias`
  (AutoEncoder), `b_dec` (TopK/BatchTopK, with `k` and `threshold` buffers) or `decoder_bias`
  (Gated, with `gate_bias`, `mag_bias`, `r_mag`); JumpReLU stores W_enc/W_dec/threshold
  directly and does not subtract b_dec from its input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.readers import load_safetensors, load_torch, read_json

from .base import Dictionary, DictionaryMeta
from .weights import CFG, WEIGHTS, build_from_weights


def detect_format(path: Path) -> str:
    if (path / CFG).exists() and (path / WEIGHTS).exists():
        return "saelens"
    if (path / "sae.safetensors").exists():
        return "sparsify"
    if (path / "ae.pt").exists():
        return "dictionary_learning"
    raise MonosemanticError(
        f"{path} holds no known checkpoint (cfg.json + sae_weights.safetensors, sae.safetensors, or ae.pt)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    cfg = read_json(path, "dictionary config")
    if not isinstance(cfg, dict):
        raise DataError(f"{path} is not a JSON object")
    return cfg


def _need(sd: dict[str, torch.Tensor], keys: list[str], where: Path) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise DataError(f"{where}: missing tensors {missing}; not a checkpoint of the expected kind")


def load_sparsify(path: Path, device: torch.device) -> Dictionary:
    cfg = _read_json(path / "cfg.json")
    sd = load_safetensors(path / "sae.safetensors", what="sparsify weights")
    _need(sd, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], path / "sae.safetensors")
    d_sae, d_in = sd["encoder.weight"].shape
    d_out = sd["W_dec"].shape[1]
    if "d_in" in cfg and int(cfg["d_in"]) != d_in:
        raise DataError(f"{path}: cfg.json says d_in={cfg['d_in']} but encoder.weight has {d_in} columns")
    expected = cfg.get("num_latents") or (cfg.get("expansion_factor", 0) * d_in)
    if expected and int(expected) != d_sae:
        raise DataError(f"{path}: cfg.json implies {expected} latents but encoder.weight has {d_sae}")
    transcode = bool(cfg.get("transcode", False)) or d_out != d_in
    meta = DictionaryMeta.from_dict(
        {
            "architecture": "topk",
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": d_out,
            "k": int(cfg.get("k", 32)),
            "hook_name": path.name,  # sparsify names each checkpoint folder after its hook point
            "skip": "W_skip" in sd,
            "apply_b_dec_to_input": not transcode,
        }
    )
    meta.metadata = {
        "source": "sparsify",
        "hook_name": path.name,
        **{f"sparsify_{k}": v for k, v in cfg.items()},
    }
    weights = {
        "W_enc": sd["encoder.weight"].T.contiguous(),
        "b_enc": sd["encoder.bias"],
        "W_dec": sd["W_dec"],
        "b_dec": sd["b_dec"],
    }
    if "W_skip" in sd:
        weights["W_skip"] = sd["W_skip"].T.contiguous()
    return build_from_weights(meta, weights, None, device, str(path))


def _dl_class(sd: dict[str, torch.Tensor], trainer: dict[str, Any], path: Path) -> str:
    """The dictionary_learning class: config.json's `trainer.dict_class`, else only what the weights'
    names decide. A `k` buffer is ambiguous (AutoEncoderTopK and BatchTopKSAE both store `k` and
    `threshold`, and read as the other their L0 differs by orders of magnitude), so it is refused."""
    name = trainer.get("dict_class")
    if name:
        return str(name)
    if "gate_bias" in sd:
        return "GatedAutoEncoder"
    if "W_enc" in sd and "threshold" in sd and "k" not in sd:
        return "JumpReluAutoEncoder"
    if "k" in sd:
        raise DataError(
            f"{path / 'ae.pt'} holds a `k` buffer, which AutoEncoderTopK and BatchTopKSAE both store; without "
            "config.json the class cannot be told from the weights. Put dictionary_learning's config.json "
            'beside it, or one naming the class: {"trainer": {"dict_class": "AutoEncoderTopK"}} (or '
            '"BatchTopKSAE")'
        )
    return "AutoEncoder"


def load_dictionary_learning(path: Path, device: torch.device) -> Dictionary:
    config = _read_json(path / "config.json")
    trainer = config.get("trainer", {})
    sd = load_torch(path / "ae.pt", "dictionary_learning weights")
    cls = _dl_class(sd, trainer, path)
    md = {"source": "dictionary_learning", "dict_class": cls}
    for ours, theirs in (("model_name", "lm_name"), ("hook_name", "submodule_name"), ("layer", "layer")):
        if theirs in trainer:
            md[ours] = trainer[theirs]
    if cls == "JumpReluAutoEncoder":
        _need(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], path / "ae.pt")
        arch, apply_b_dec = "jumprelu", False
        weights = {k: sd[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    elif cls == "GatedAutoEncoder":
        _need(
            sd,
            ["encoder.weight", "decoder.weight", "decoder_bias", "gate_bias", "mag_bias", "r_mag"],
            path / "ae.pt",
        )
        arch, apply_b_dec = "gated", True
        weights = {
            "W_enc": sd["encoder.weight"].T,
            "W_dec": sd["decoder.weight"].T,
            "b_dec": sd["decoder_bias"],
            "b_gate": sd["gate_bias"],
            "b_mag": sd["mag_bias"],
            "r_mag": sd["r_mag"],
        }
    else:
        bias_key = "bias" if cls == "AutoEncoder" else "b_dec"
        _need(sd, ["encoder.weight", "encoder.bias", "decoder.weight", bias_key], path / "ae.pt")
        weights = {
            "W_enc": sd["encoder.weight"].T,
            "b_enc": sd["encoder.bias"],
            "W_dec": sd["decoder.weight"].T,
            "b_dec": sd[bias_key],
        }
        arch, apply_b_dec = {"AutoEncoder": "relu", "AutoEncoderTopK": "topk"}.get(cls, "batchtopk"), True
        if cls not in ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
            raise MonosemanticError(f"dictionary_learning class {cls!r} is not supported")
        if arch == "batchtopk":
            _need(sd, ["threshold"], path / "ae.pt")
            weights["threshold"] = sd["threshold"].float().expand(sd["encoder.bias"].shape[0]).clone()
    weights = {k: v.contiguous() for k, v in weights.items()}
    d_sae, d_in = weights["W_dec"].shape[0], weights["W_enc"].shape[0]
    k = sd.get("k", trainer.get("k"))
    meta = DictionaryMeta.from_dict(
        {
            "architecture": arch,
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": weights["W_dec"].shape[1],
            "k": int(k) if k is not None else None,
            "hook_name": md.get("hook_name"),
            "apply_b_dec_to_input": apply_b_dec,
            "l1_decoder_norm": False,
        }
    )
    meta.metadata = md
    return build_from_weights(meta, weights, None, device, str(path))
