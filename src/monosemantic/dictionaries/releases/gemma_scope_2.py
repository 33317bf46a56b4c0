"""Gemma Scope 2 (Google DeepMind's JumpReLU SAEs, transcoders and CLTs on Gemma 3).

Layout (`google/gemma-scope-2-{270m,1b,4b,12b,27b}-{pt,it}` on the hub), as SAELens'
`gemma_3_sae_huggingface_loader` and circuit-tracer's `load_gemma_scope_2_transcoder` /
`load_gemma_scope_2_clt` read it:

- one folder per dictionary, `{resid_post,attn_out,mlp_out,transcoder,clt}[_all]/layer_{L}_width_{W}_l0_{small,medium,big}[_affine]`,
  holding `params.safetensors` and `config.json`;
- `params.safetensors`: `w_enc [d_in, d_sae]`, `b_enc [d_sae]`, `w_dec [d_sae, d_out]`, `b_dec [d_out]`,
  `threshold [d_sae]` (JumpReLU: f = pre * (pre > threshold), pre = x w_enc + b_enc, no input
  bias), and for `_affine` transcoders `affine_skip_connection [d_in, d_out]`, added as
  x @ affine_skip_connection (circuit-tracer's orientation; SAELens 6 applies its transpose, see
  docs/releases.md);
- `config.json`: `architecture` ("jump_relu"), `model_name`, `hf_hook_point_in` and for transcoders
  `hf_hook_point_out`, modules of the `transformers` model (`hf_sites.py` maps them to our sites),
  `affine_connection`. Folders without one are read as SAELens infers it from the folder name.
- A CLT is one such folder per layer (`clt/layer_{i}_{suffix}`) whose `w_dec` is
  `[d_sae, n_layers, d]`: layer i's latents write to every layer, of which circuit-tracer keeps
  layers i..L-1 (`w_dec[:, i:]`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.readers import load_safetensors, read_json

from .build import ReleaseRef, release_metadata, single_site
from .hf_sites import hf_site

PARAMS = "params.safetensors"
CONFIG = "config.json"
KEYS = ("w_enc", "w_dec", "b_enc", "b_dec", "threshold")

# SAELens' `_infer_gemma_3_raw_cfg_dict`: the hooks a folder without config.json reads and writes.
_INFERRED = {
    "resid_post": ("model.layers.{L}.output", None),
    "attn_out": ("model.layers.{L}.self_attn.o_proj.input", None),
    "mlp_out": ("model.layers.{L}.post_feedforward_layernorm.output", None),
    "transcoder": ("model.layers.{L}.pre_feedforward_layernorm.output",
                   "model.layers.{L}.post_feedforward_layernorm.output"),
    "clt": ("model.layers.{L}.pre_feedforward_layernorm.output",
            "model.layers.{L}.post_feedforward_layernorm.output"),
}  # fmt: skip


def _w_dec_rank(file: Path) -> int | None:
    """The number of dimensions of `w_dec` in a params.safetensors (read from its header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return len(f.get_slice("w_dec").get_shape()) if "w_dec" in f.keys() else None
    except Exception:  # not a safetensors file: not ours to judge here, the reader says why
        return None


def is_gemma_scope_2(path: Path) -> bool:
    """One SAE or transcoder folder (its w_dec is [d_sae, d_out])."""
    return path.is_dir() and (path / PARAMS).is_file() and _w_dec_rank(path / PARAMS) != 3


def is_gemma_scope_2_clt(path: Path) -> bool:
    """A folder of one CLT's per-layer folders (`layer_{i}_.../params.safetensors`, w_dec 3-D)."""
    if not path.is_dir() or (path / PARAMS).is_file():
        return False
    first = next(iter(sorted(path.glob("layer_*/" + PARAMS))), None)
    return first is not None and _w_dec_rank(first) == 3


def _config(folder: Path) -> dict[str, Any]:
    """config.json, or what SAELens infers from the folder names when it is missing."""
    if (folder / CONFIG).is_file():
        cfg = read_json(folder / CONFIG, "Gemma Scope 2 config")
        if not isinstance(cfg, dict):
            raise DataError(f"{folder / CONFIG} is not a JSON object")
        return cfg
    m = re.search(r"layer_(\d+)", folder.name)
    kind = next(
        (k for k in _INFERRED if any(p.startswith(k) for p in (folder.parent.name, folder.name))), None
    )
    if m is None or kind is None:
        raise DataError(
            f"{folder}: no config.json, and the folder name says no layer and hook "
            "(Gemma Scope 2 folders are <resid_post|attn_out|mlp_out|transcoder|clt>[_all]/layer_L_...)"
        )
    hook_in, hook_out = (h.format(L=m.group(1)) if h else None for h in _INFERRED[kind])
    cfg = {"architecture": "jump_relu", "hf_hook_point_in": hook_in}
    if hook_out:
        cfg |= {"hf_hook_point_out": hook_out, "affine_connection": folder.name.endswith("_affine")}
    return cfg


def _params(folder: Path) -> dict[str, torch.Tensor]:
    t = load_safetensors(folder / PARAMS, what="Gemma Scope 2 weights")
    missing = [k for k in KEYS if k not in t]
    if missing:
        raise DataError(f"{folder / PARAMS}: missing {missing} (has {sorted(t)}); not Gemma Scope 2 weights")
    return t


def _sites(cfg: dict[str, Any], where: str) -> tuple[str, str | None]:
    if cfg.get("architecture", "jump_relu") != "jump_relu":
        raise MonosemanticError(
            f"{where}: architecture {cfg['architecture']!r}; Gemma Scope 2 readers take jump_relu"
        )
    if "hf_hook_point_in" not in cfg:
        raise DataError(f"{where}/config.json names no hf_hook_point_in")
    out = cfg.get("hf_hook_point_out")
    return hf_site(cfg["hf_hook_point_in"], where), hf_site(out, where) if out else None


def read_gemma_scope_2(folder: Path, ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    """One Gemma Scope 2 SAE or (skip) transcoder folder."""
    cfg, t = _config(folder), _params(folder)
    if t["w_dec"].ndim == 3:
        raise MonosemanticError(
            f"{folder} is one layer of a Gemma Scope 2 CLT; load the folder holding all its layer_* folders"
        )
    hook_in, hook_out = _sites(cfg, str(folder))
    weights = {"W_enc": t["w_enc"], "W_dec": t["w_dec"], "b_enc": t["b_enc"], "b_dec": t["b_dec"],
               "threshold": t["threshold"]}  # fmt: skip
    if "affine_skip_connection" in t:
        weights["W_skip"] = t["affine_skip_connection"]  # applied as x @ A: already [d_in, d_out]
    md = release_metadata(ref, f"Gemma Scope 2 {folder.name}", cfg.get("model_name"),
                          hf_hook_point_in=cfg.get("hf_hook_point_in"), hf_hook_point_out=cfg.get("hf_hook_point_out"))  # fmt: skip
    return single_site("jumprelu", weights, hook_in, hook_out, md, device, str(folder))


def clt_layer_folders(folder: Path, suffix: str | None = None) -> list[Path]:
    """`layer_{i}_{suffix}` folders in layer order (all of them when `suffix` is None, which must then
    be one dictionary's)."""
    found: dict[int, list[Path]] = {}
    for p in folder.glob("layer_*"):
        m = re.match(r"^layer_(\d+)_(.+)$", p.name)
        if m and (p / PARAMS).is_file() and (suffix is None or m.group(2) == suffix):
            found.setdefault(int(m.group(1)), []).append(p)
    if not found:
        raise DataError(
            f"{folder}: no layer_*{'_' + suffix if suffix else ''}/params.safetensors (a Gemma Scope 2 CLT)"
        )
    if any(len(v) > 1 for v in found.values()):
        raise MonosemanticError(
            f"{folder} holds several CLTs ({sorted({p.name.split('_', 2)[2] for v in found.values() for p in v})}); "
            "name one, e.g. RELEASE:width_262k_l0_medium"
        )
    layers = sorted(found)
    if layers != list(range(len(layers))):
        raise DataError(f"{folder}: CLT layers {layers} are not 0..L-1")
    return [found[i][0] for i in layers]


def read_gemma_scope_2_clt(
    folders: list[Path], ref: ReleaseRef | None, device: torch.device, hooks: tuple[str, str] | None = None
) -> Dictionary:
    """A Gemma Scope 2 CLT from its per-layer folders (layer order), as `load_gemma_scope_2_clt`;
    `hooks` (per-layer names, from circuit-tracer's config.yaml) override the folders' own."""
    from monosemantic.dictionaries.circuit_tracer import clt_from_tensors

    params = [_params(f) for f in folders]
    L = len(params)
    if any("affine_skip_connection" in p for p in params):
        raise MonosemanticError(
            f"{folders[0].parent}: CLTs with affine skip connections are not supported yet; "
            "use a Gemma Scope 2 CLT without _affine"
        )
    if params[0]["w_dec"].ndim != 3 or params[0]["w_dec"].shape[1] != L:
        raise DataError(
            f"{folders[0]}: w_dec has shape {list(params[0]['w_dec'].shape)}; a CLT of {L} layers has [d_sae, {L}, d]"
        )
    sites = [_sites(_config(f), str(f)) for f in folders]
    if hooks is not None:
        sites = [(f"blocks.{i}.{hooks[0]}", f"blocks.{i}.{hooks[1]}") for i in range(L)]
    if any(out is None for _, out in sites):
        raise DataError(f"{folders[0].parent}: a CLT's config.json must name hf_hook_point_out")
    tensors = {
        "W_enc": torch.stack([p["w_enc"].float() for p in params]),  # [L, d, n]
        "b_enc": torch.stack([p["b_enc"].float() for p in params]),
        "b_dec": torch.stack([p["b_dec"].float() for p in params]),
        "threshold": torch.stack([p["threshold"].float() for p in params]),
        **{f"W_dec_{i}": p["w_dec"][:, i:, :].float() for i, p in enumerate(params)},
    }
    cfg = _config(folders[0])
    md = release_metadata(ref, f"Gemma Scope 2 CLT {folders[0].parent.name}", cfg.get("model_name"))
    return clt_from_tensors(tensors, [s for s, _ in sites], [str(o) for _, o in sites], md, device,
                            str(folders[0].parent))  # fmt: skip
