"""Hugging Face module paths that releases name their hook points by, as our TransformerLens sites.

Gemma Scope 2's `config.json` says where each dictionary reads and writes as a module of the
`transformers` model (`hf_hook_point_in = "model.layers.10.pre_feedforward_layernorm.output"`);
Qwen Scope's model card names the residual stream by the decoder layer (`model.layers.5`). Each
path is one tensor of the forward pass, which is one of our sites (`docs/families.md`):

| module path (layer L)                        | site                      |
| -------------------------------------------- | ------------------------- |
| `model.layers.L` / `model.layers.L.output`   | `blocks.L.hook_resid_post`|
| `model.layers.L.input`                       | `blocks.L.hook_resid_pre` |
| `...self_attn.o_proj.input`                  | `blocks.L.attn.hook_z`    |
| `...post_attention_layernorm.output` (Gemma) | `blocks.L.hook_attn_out`  |
| `...pre_feedforward_layernorm.input` (Gemma) | `blocks.L.hook_mlp_in`    |
| `...pre_feedforward_layernorm.output` (Gemma)| `blocks.L.mlp.hook_in`    |
| `...post_feedforward_layernorm.output` (Gemma)| `blocks.L.hook_mlp_out`  |
| `...mlp.input`                               | `blocks.L.mlp.hook_in`    |
| `...mlp.output`                              | `blocks.L.hook_mlp_out` (no post-norm families) |

`tests/dictionaries/test_release_sites.py` checks each row against forward hooks on those very
modules of a tiny Gemma 3 and Qwen 3.
"""

from __future__ import annotations

import re

from monosemantic.utils.errors import MonosemanticError

_LAYER = re.compile(r"^(?:model\.)?(?:language_model\.)?layers\.(\d+)(?:\.(.+))?$")

# module path after `model.layers.L.` -> our site suffix
_SUFFIXES = {
    None: "hook_resid_post",
    "output": "hook_resid_post",
    "input": "hook_resid_pre",
    "self_attn.o_proj.input": "attn.hook_z",
    "post_attention_layernorm.output": "hook_attn_out",
    "pre_feedforward_layernorm.input": "hook_mlp_in",
    "pre_feedforward_layernorm.output": "mlp.hook_in",
    "post_feedforward_layernorm.output": "hook_mlp_out",
    "mlp.input": "mlp.hook_in",
    "mlp.output": "hook_mlp_out",
}


def hf_site(path: str, where: str = "this release") -> str:
    """`model.layers.10.pre_feedforward_layernorm.output` -> `blocks.10.mlp.hook_in`."""
    m = _LAYER.match(str(path).strip())
    if m is None or m.group(2) not in _SUFFIXES:
        known = ", ".join(f"model.layers.L.{s}" if s else "model.layers.L" for s in _SUFFIXES)
        raise MonosemanticError(
            f"{where} reads or writes {path!r}, a module monosemantic has no site for; known: {known}"
        )
    return f"blocks.{int(m.group(1))}.{_SUFFIXES[m.group(2)]}"
