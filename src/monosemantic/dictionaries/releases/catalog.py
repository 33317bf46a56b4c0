"""Release names monosemantic resolves by itself (no SAELens needed), as `RELEASE:ID`.

Gemma Scope 2's names follow SAELens' (`gemma-scope-2-1b-pt-res:layer_12_width_16k_l0_medium`):
`gemma-scope-2-{size}-{pt|it}-{kind}[-all]` is the hub repo `google/gemma-scope-2-{size}-{pt|it}`
and the folder `{folder}[_all]/{ID}` with kind res -> resid_post, mlp -> mlp_out,
att -> attn_out, transcoders -> transcoder, clt -> clt (a CLT's ID is the part after
`layer_{i}_` that its layer folders share, e.g. `width_262k_l0_medium`). The model is
`google/gemma-3-{size}` (`-it` for instruction-tuned; the pretrained ones are `-pt` from 1b up).

Other releases are named by their hub folder (`org/repo/path` or `org/repo:path`), or by
SAELens' release ids when `sae-lens` is installed (its directory ships with it).
"""

from __future__ import annotations

import re

from .build import ReleaseRef

_GEMMA_SCOPE_2 = re.compile(
    r"^gemma-scope-2-(?P<size>\d+[mb])-(?P<variant>pt|it)-(?P<kind>res|mlp|att|transcoders|clt)(?P<all>-all)?$"
)
_FOLDERS = {
    "res": "resid_post",
    "mlp": "mlp_out",
    "att": "attn_out",
    "transcoders": "transcoder",
    "clt": "clt",
}


def gemma_scope_2(release: str, sae_id: str, spec: str) -> ReleaseRef | None:
    m = _GEMMA_SCOPE_2.match(release)
    if m is None:
        return None
    size, variant = m["size"], m["variant"]
    folder = _FOLDERS[m["kind"]] + ("_all" if m["all"] else "")
    model = f"google/gemma-3-{size}" + ("" if variant == "pt" and size.endswith("m") else f"-{variant}")
    if m["kind"] == "clt":  # the layer folders clt/layer_{i}_{ID}: fetch the folder, pick by suffix
        return ReleaseRef(
            spec,
            f"google/gemma-scope-2-{size}-{variant}",
            folder,
            model,
            layout=f"gemma_scope_2_clt:{sae_id}",
        )
    return ReleaseRef(
        spec, f"google/gemma-scope-2-{size}-{variant}", f"{folder}/{sae_id}", model, layout="gemma_scope_2"
    )


def lookup(release: str, sae_id: str, spec: str) -> ReleaseRef | None:
    """Our catalog's reference for `RELEASE:ID`, or None when the name is not one of ours."""
    return gemma_scope_2(release, sae_id, spec)
