"""Building our dictionaries from a release's tensors, and the metadata every release records.

Readers convert a release's weights to our in-memory layout (`W_enc [d_in, d_sae]`,
`W_dec [d_sae, d_out]`, `W_skip [d_in, d_out]`, `threshold [d_sae]`) and fold whatever
normalisation the release applies around the dictionary into them, so `encode`/`decode` of the
result compute what the release's own loader computes. They all end here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from monosemantic.dictionaries.base import Dictionary, DictionaryMeta
from monosemantic.dictionaries.weights import build_from_weights
from monosemantic.lm.sites import HOOK_NAMES

from .family import family_of_model


@dataclass(frozen=True)
class ReleaseRef:
    """What a config line named: the user's text, and where its files came from on the hub (repo
    and path inside it; None for a local folder). `model_name` is the release's model when the
    name says it (a catalog entry, SAELens' directory), else the reader finds it in the files."""

    spec: str
    repo_id: str | None = None
    path: str = ""
    model_name: str | None = None
    layout: str | None = None

    def text(self) -> str:
        """Where the files came from, for messages and metadata."""
        return f"{self.repo_id}/{self.path}".rstrip("/") if self.repo_id else self.spec


def release_metadata(
    ref: ReleaseRef | None, source: str, model_name: str | None, **extra: Any
) -> dict[str, Any]:
    """cfg.json-style metadata of a release: its model and family, where it came from, and the note
    that its sites are TransformerLens' names (every reader maps the release's hooks to them)."""
    model = model_name or (ref.model_name if ref else None)
    md: dict[str, Any] = {"source": source, "hook_names": HOOK_NAMES}
    if model:
        md["model_name"] = model
    if (family := family_of_model(model)) is not None:
        md["model_family"] = family
    if ref is not None:
        md["release"] = ref.spec
        if ref.repo_id:
            md["release_files"] = ref.text()
    return md | {k: v for k, v in extra.items() if v is not None}


def single_site(
    architecture: str,
    weights: dict[str, torch.Tensor],
    hook_name: str | None,
    hook_name_out: str | None,
    metadata: dict[str, Any],
    device: torch.device,
    where: str,
    k: int | None = None,
    apply_b_dec_to_input: bool = False,
) -> Dictionary:
    """An SAE (`hook_name_out` None or equal) or transcoder from in-memory-layout float tensors."""
    W_enc, W_dec = weights["W_enc"], weights["W_dec"]
    transcoder = hook_name_out is not None and hook_name_out != hook_name
    meta = DictionaryMeta.from_dict(
        {
            "architecture": architecture,
            "d_in": int(W_enc.shape[0]),
            "d_sae": int(W_enc.shape[1]),
            "d_out": int(W_dec.shape[1]),
            "k": k,
            "hook_name": hook_name,
            "hook_name_out": hook_name_out if transcoder else None,
            "skip": "W_skip" in weights,
            "apply_b_dec_to_input": apply_b_dec_to_input,
            "l1_decoder_norm": False,
        }
    )
    meta.metadata = dict(metadata)
    for key in ("hook_name", "hook_name_out"):
        if getattr(meta, key):
            meta.metadata[key] = getattr(meta, key)
    tensors = {name: t.detach().float().contiguous() for name, t in weights.items()}
    return build_from_weights(meta, tensors, "float32", device, where)
