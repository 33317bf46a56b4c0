"""Which release layout a local path holds, and reading it (the per-layout readers live beside).

`read_release` returns None for layouts it does not own (ours, SAELens', sparsify's,
dictionary_learning's, circuit-tracer's bare CLT folder), which `dictionaries/io.py` reads.
`entries` lists what a folder holds when it is a set (one entry per dictionary), so the verbs
that take "a checkpoint or a folder of them" take a release folder as well.
"""

from __future__ import annotations

from pathlib import Path

import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import MonosemanticError

from . import circuit_tracer_sets as ct
from .build import ReleaseRef
from .gemma_scope_2 import (
    clt_layer_folders,
    is_gemma_scope_2,
    is_gemma_scope_2_clt,
    read_gemma_scope_2,
    read_gemma_scope_2_clt,
)
from .llama_scope import is_llama_scope_v1, is_llamascopium, read_llama_scope_v1, read_llamascopium
from .qwen_scope import is_qwen_scope, read_qwen_scope
from .transcoder_circuits import is_transcoder_circuits, read_transcoder_circuits


def is_release(path: Path) -> bool:
    """A dictionary (or set) in one of the release layouts read here."""
    return (
        ct.read_config(path) is not None
        or is_gemma_scope_2(path)
        or is_gemma_scope_2_clt(path)
        or is_llama_scope_v1(path)
        or is_llamascopium(path)
        or is_qwen_scope(path)
        or is_transcoder_circuits(path)
    )


def entries(path: Path, spec: str | None = None) -> list[str] | None:
    """The dictionaries a release folder holds as loadable lines (`SPEC#layer_N` for a transcoder
    set, file paths for folders of per-layer files), or None when `path` is one dictionary."""
    cfg = ct.read_config(path)
    if cfg is not None and cfg["model_kind"] == "transcoder_set":
        base = spec or str(path)
        return [f"{base}#layer_{i}" for i in range(ct.n_layers(path, cfg, base))]
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if is_qwen_scope(p) or is_transcoder_circuits(p)), key=_layer_key
        )
        if files:
            return [str(f) for f in files]
    return None


def _layer_key(p: Path) -> tuple[int, str]:
    import re

    m = re.search(r"(?:layer|blocks\.)(\d+)", p.name)
    return (int(m.group(1)) if m else -1, p.name)


def read_release(
    path: Path, ref: ReleaseRef | None, device: torch.device, layer: int | None = None
) -> Dictionary | None:
    """The dictionary at `path` when it is in a release layout, else None."""
    spec = ref.spec if ref else str(path)
    layout = ref.layout if ref else None
    if layout and layout.startswith("gemma_scope_2_clt:"):
        return read_gemma_scope_2_clt(clt_layer_folders(path, layout.split(":", 1)[1]), ref, device)
    cfg = ct.read_config(path)
    if cfg is not None:
        if cfg["model_kind"] == "cross_layer_transcoder":
            return ct.read_clt(path, cfg, ref, device)
        if layer is None:
            n = ct.n_layers(path, cfg, spec)
            raise MonosemanticError(
                f"{spec} is a set of {n} per-layer transcoders; name one as {spec}#layer_N, or give the set "
                "where a folder of dictionaries is taken (evaluate.dictionary, circuit.dictionaries)"
            )
        return ct.read_layer(path, cfg, layer, ref, device)
    if layout == "circuit_tracer_file" and path.is_file():  # SAELens' mwhanna_transcoder entries
        cfg = ct.read_config(path.parent)
        if cfg is None:
            raise MonosemanticError(
                f"{spec}: no circuit-tracer config.yaml beside {path.name} to name its hooks"
            )
        return ct.read_layer_file(path, cfg, _layer_key(path)[0], ref, device, path.parent)
    if layout == "gemma_2_transcoder":
        return _gemma_scope_transcoder(path, ref, device)
    readers = (
        (is_gemma_scope_2, read_gemma_scope_2),
        (is_gemma_scope_2_clt, lambda p, r, d: read_gemma_scope_2_clt(clt_layer_folders(p), r, d)),
        (is_llama_scope_v1, read_llama_scope_v1),
        (is_llamascopium, read_llamascopium),
        (is_qwen_scope, read_qwen_scope),
        (is_transcoder_circuits, read_transcoder_circuits),
    )
    for test, reader in readers:
        if test(path):
            return reader(path, ref, device)
    return None


def _gemma_scope_transcoder(path: Path, ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    """Gemma Scope's transcoders (`google/gemma-scope-2b-pt-transcoders`, params.npz), read as
    SAELens' `get_gemma_2_transcoder_config_from_hf` names them: ln2.hook_normalized -> hook_mlp_out."""
    import re

    from monosemantic.dictionaries.circuit_tracer import load_gemma_scope_npz

    from .build import release_metadata

    m = re.search(r"layer_(\d+)", ref.path if ref else str(path))
    if m is None:
        raise MonosemanticError(f"{path}: no layer_N in the folder name of a Gemma Scope transcoder")
    L = int(m.group(1))
    dic = load_gemma_scope_npz(path, device, f"blocks.{L}.ln2.hook_normalized", f"blocks.{L}.hook_mlp_out")
    model = ref.model_name if ref else None
    dic.cfg.metadata = release_metadata(ref, f"Gemma Scope transcoder {path.name}", model) | {
        "hook_name": dic.cfg.hook_name, "hook_name_out": dic.cfg.hook_name_out}  # fmt: skip
    return dic
