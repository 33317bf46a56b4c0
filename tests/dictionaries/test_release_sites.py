"""The Hugging Face module paths releases name (Gemma Scope 2's `hf_hook_point_in/out`, Qwen Scope's
`model.layers.L`) are the tensors of our sites: each row of `releases/hf_sites.py` checked against
forward hooks on that very module of a tiny Gemma 3 and Qwen 3."""

from __future__ import annotations

import pytest
import torch
from tiny_families import load64, token_ids

from monosemantic.dictionaries.releases.hf_sites import hf_site
from monosemantic.utils.errors import MonosemanticError

GEMMA = [
    "model.layers.1.output",
    "model.layers.1.input",
    "model.layers.1.self_attn.o_proj.input",
    "model.layers.1.post_attention_layernorm.output",
    "model.layers.1.pre_feedforward_layernorm.input",
    "model.layers.1.pre_feedforward_layernorm.output",
    "model.layers.1.post_feedforward_layernorm.output",
]
QWEN = ["model.layers.0", "model.layers.0.mlp.input", "model.layers.0.mlp.output"]


def _module_value(model, path: str, ids: torch.Tensor) -> torch.Tensor:
    """The module's input or output tensor, read by a forward hook on the transformers module."""
    name, _, side = path.rpartition(".") if path.endswith((".input", ".output")) else (path, "", "output")
    module = model.hf.get_submodule(name)
    got = {}

    def hook(mod, args, out):
        got["v"] = args[0] if side == "input" else (out[0] if isinstance(out, tuple) else out)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.hf(input_ids=ids)
    finally:
        handle.remove()
    return got["v"]


@pytest.mark.parametrize(("variant", "paths"), [("gemma3", GEMMA), ("qwen3", QWEN)])
def test_release_module_paths_are_our_sites(tiny_family, variant, paths):
    model = load64(tiny_family(variant))
    ids = token_ids(6)
    sites = [hf_site(p) for p in paths]
    with torch.no_grad():
        acts = model.run(ids, capture=sites).activations
    for path, site in zip(paths, sites, strict=True):
        theirs = _module_value(model, path, ids)
        ours = acts[site].reshape(theirs.shape)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=f"{path} vs {site}")


def test_unknown_module_paths_are_one_line():
    with pytest.raises(MonosemanticError, match="no site for.*known: model.layers.L"):
        hf_site("model.layers.3.self_attn.q_proj.output", "gemma-scope-2-1b-pt-res:x")
