"""Checkpoint file names and building a dictionary from loaded tensors, shared by every reader.

`io.py` (our and SAELens's layout) and `foreign.py` (sparsify, dictionary_learning) both end in
`build_from_weights`, so it lives below them both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.utils.errors import DataError
from monosemantic.utils.readers import read_json
from monosemantic.utils.torch_utils import torch_dtype

from .base import Dictionary, DictionaryMeta, dictionary_class
from .registry import architectures  # noqa: F401  (importing it registers every architecture)

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"


def read_cfg(path: Path) -> dict[str, Any]:
    cfg = read_json(path / CFG, "dictionary config", "re-save the checkpoint")
    if not isinstance(cfg, dict):
        raise DataError(f"{path / CFG} is not a JSON object; re-save the checkpoint")
    return cfg


def build_from_weights(
    meta: DictionaryMeta,
    weights: dict[str, torch.Tensor],
    dtype: str | None,
    device: torch.device,
    where: str,
) -> Dictionary:
    """Instantiate the class for `meta` and load `weights`, with one-line errors on mismatch."""
    W_dec = weights.get("W_dec")
    if not dictionary_class(meta.architecture).multi_site and (
        W_dec is None or tuple(W_dec.shape) != (meta.d_sae, meta.d_out)
    ):
        got = None if W_dec is None else list(W_dec.shape)
        raise DataError(
            f"{where}: W_dec has shape {got}, config says [{meta.d_sae}, {meta.d_out}]; the checkpoint is inconsistent"
        )
    dic = dictionary_class(meta.architecture)(meta)
    dt = torch_dtype(dtype) if dtype else (W_dec if W_dec is not None else weights["b_dec"]).dtype
    dic.to(dtype=dt)
    try:
        dic.load_saved_weights({k: v.to(dt) for k, v in weights.items()})
    except RuntimeError as e:
        raise DataError(f"{where}: weights do not match the config ({str(e).splitlines()[0]})") from e
    return dic.to(device).eval()
