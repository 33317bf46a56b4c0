"""Qwen Scope (the Qwen team's TopK SAEs on the residual stream of Qwen 3 and Qwen 3.5).

Layout, from the release's model cards and SAELens' `qwen_scope_sae_huggingface_loader`: one
hub repo per model and setting, `Qwen/SAE-Res-{Model}-W{width}K-L0_{k}` (e.g.
`Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50`), holding `layer{L}.sae.pt` per decoder layer: a
`torch.save`d dict of `W_enc [d_sae, d_in]`, `W_dec [d_in, d_sae]`, `b_enc [d_sae]`, `b_dec [d_in]`.
The SAE reads the residual stream after decoder layer L (`model.layers.L`'s output, our
`blocks.L.hook_resid_post`): pre = x W_enc^T + b_enc, the top k pre-activations kept (k from the
repo name), y = f W_dec^T + b_dec. The repo name gives the model (`Qwen/{Model}`), the width
(`W32K` = 32 * 1024) and k.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.readers import load_torch

from .build import ReleaseRef, release_metadata, single_site
from .family import unsupported_model

_REPO = re.compile(r"SAE-Res-(?P<model>.+?)-W(?P<width>\d+)K-L0_(?P<k>\d+)$")
_FILE = re.compile(r"^layer(\d+)\.sae\.pt$")


def is_qwen_scope(path: Path) -> bool:
    return path.is_file() and _FILE.match(path.name) is not None


def _repo_fields(path: Path, ref: ReleaseRef | None) -> tuple[str, int, int]:
    """(model, width, k) from the repo name: the hub id, else a folder of the local path."""
    names = ([ref.repo_id.split("/")[-1]] if ref and ref.repo_id else []) + [p for p in reversed(path.parts)]
    for name in names:
        m = _REPO.search(name.replace("models--Qwen--", ""))
        if m:
            return f"Qwen/{m['model']}", int(m["width"]) * 1024, int(m["k"])
    raise MonosemanticError(
        f"{path}: a Qwen Scope file, but no SAE-Res-<Model>-W<width>K-L0_<k> repo name to read k from; "
        "give it as Qwen/SAE-Res-...-L0_<k>/layerN.sae.pt or keep it in a folder of that name"
    )


def read_qwen_scope(file: Path, ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    model, width, k = _repo_fields(file, ref)
    if unsupported_model(model):
        raise MonosemanticError(
            f"{file}: Qwen Scope SAE of {model}, whose hybrid (Gated DeltaNet) layers monosemantic cannot run; "
            "use one of the Qwen 3 releases"
        )
    layer = int(_FILE.match(file.name).group(1))  # type: ignore[union-attr]
    sd = load_torch(file, "Qwen Scope weights")
    if not isinstance(sd, dict) or any(key not in sd for key in ("W_enc", "W_dec", "b_enc", "b_dec")):
        raise DataError(f"{file}: expected a dict of W_enc, W_dec, b_enc, b_dec (Qwen Scope layout)")
    W_enc, W_dec = sd["W_enc"], sd["W_dec"]
    if tuple(W_enc.shape) != (width, W_dec.shape[0]) or tuple(W_dec.shape) != (W_enc.shape[1], width):
        raise DataError(
            f"{file}: W_enc {list(W_enc.shape)} / W_dec {list(W_dec.shape)} do not match the repo's width {width} "
            "(Qwen Scope stores W_enc [d_sae, d_in], W_dec [d_in, d_sae])"
        )
    w = {"W_enc": W_enc.T, "W_dec": W_dec.T, "b_enc": sd["b_enc"], "b_dec": sd["b_dec"]}
    site = f"blocks.{layer}.hook_resid_post"
    md = release_metadata(ref, f"Qwen Scope {file.name}", model, hf_hook_point_in=f"model.layers.{layer}")
    return single_site("topk", w, site, None, md, device, str(file), k=k)
