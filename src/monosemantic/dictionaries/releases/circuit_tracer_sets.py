"""circuit-tracer's transcoder sets and CLTs as it publishes them: a folder with `config.yaml`.

Layout, from circuit-tracer's `utils/hf_utils.py` (`load_transcoder_from_hub`, `load_transcoders`,
`resolve_transcoder_paths`) and `transcoder/` loaders; its hub repos (`mntss/gemma-scope-transcoders`,
`mwhanna/qwen3-*-transcoders*`, `mwhanna/gemma-scope-2-*/transcoder_all/...`, `mntss/clt-*`)
are folders holding:

- `config.yaml`: `model_kind` ("transcoder_set" | "cross_layer_transcoder"), `model_name`,
  `feature_input_hook` / `feature_output_hook` (TransformerLens hook names per layer;
  `mlp.hook_out` is our `hook_mlp_out`), optionally `activation` ("relu" | "topk", with `k`) and
  `transcoders`: one file per layer, `hf://org/repo/file[?revision=R]` URIs or local paths, in
  layer order. Without that list a set is the folder's `layer_{i}.safetensors`, a CLT its
  `W_enc_{i}` / `W_dec_{i}.safetensors`.
- a per-layer `.safetensors` (`load_transcoder`): `W_enc [n, d_in]` (an `F.linear` weight),
  `W_dec [n, d_out]`, `b_enc`, `b_dec`, optional `W_skip [d_out, d_in]` (applied x W_skip^T) and
  `activation_function.threshold [n]` (JumpReLU, f = x * (x > threshold)); the activation is
  ReLU unless `config.yaml` says topk or a threshold is present.
- Gemma Scope's `params.npz` (`load_gemma_scope_transcoder`) and Gemma Scope 2's
  `params.safetensors` (`load_gemma_scope_2_transcoder`, lower-case `w_enc`) files in the list
  are read as those; a Gemma Scope 2 CLT's list is read as `load_gemma_scope_2_clt` does, which
  takes the first `max(index)` entries (its lists end with one entry past the last layer).

A transcoder set is one dictionary per layer (`SPEC#layer_N` names layer N); a CLT is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.readers import load_safetensors, read_text

from .build import ReleaseRef, release_metadata, single_site
from .hub import fetch_uri

CONFIG = "config.yaml"
KINDS = ("transcoder_set", "cross_layer_transcoder")
_FILE_KEYS = {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip", "activation_function.threshold"}


def read_config(folder: Path) -> dict[str, Any] | None:
    """circuit-tracer's config.yaml in `folder` when it names a model_kind, else None."""
    file = folder / CONFIG
    if not folder.is_dir() or not file.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(read_text(file, "circuit-tracer config")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{file}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or "model_kind" not in cfg:
        return None
    if cfg["model_kind"] not in KINDS:
        raise MonosemanticError(
            f"{file}: model_kind {cfg['model_kind']!r}; circuit-tracer's are {', '.join(KINDS)}"
        )
    return cfg


def _hooks(cfg: dict[str, Any], where: Path) -> tuple[str, str]:
    try:
        hook_in, hook_out = str(cfg["feature_input_hook"]), str(cfg["feature_output_hook"])
    except KeyError as e:
        raise DataError(f"{where / CONFIG} names no {e.args[0]}") from None
    return hook_in, "hook_mlp_out" if hook_out == "mlp.hook_out" else hook_out


def layer_files(folder: Path, cfg: dict[str, Any], spec: str, fetch: bool = True) -> list[str]:
    """The per-layer files in layer order: config.yaml's `transcoders` (hf:// URIs fetched when
    `fetch`, relative paths taken from `folder`), else the folder's layer_{i}.safetensors."""
    if "transcoders" in cfg:
        out = []
        for entry in cfg["transcoders"]:
            entry = str(entry)
            if entry.startswith("hf://"):
                out.append(str(fetch_uri(spec, entry)) if fetch else entry)
            else:
                out.append(str(Path(entry) if Path(entry).is_absolute() else folder / entry))
        return out
    n = len(list(folder.glob("layer_*.safetensors")))
    files = [folder / f"layer_{i}.safetensors" for i in range(n)]
    if not files or not all(f.is_file() for f in files):
        raise DataError(
            f"{folder}: no layer_0..layer_{max(n - 1, 0)}.safetensors and no transcoders list in config.yaml"
        )
    return [str(f) for f in files]


def n_layers(folder: Path, cfg: dict[str, Any], spec: str) -> int:
    return len(layer_files(folder, cfg, spec, fetch=False))


def read_layer(
    folder: Path, cfg: dict[str, Any], layer: int, ref: ReleaseRef | None, device: torch.device
) -> Dictionary:
    """Layer `layer` of a circuit-tracer transcoder set."""
    spec = ref.spec if ref else str(folder)
    files = layer_files(folder, cfg, spec, fetch=False)
    if not 0 <= layer < len(files):
        raise MonosemanticError(f"{spec}: no layer {layer}; this set has layers 0..{len(files) - 1}")
    entry = files[layer]
    file = fetch_uri(spec, entry) if entry.startswith("hf://") else Path(entry)
    return read_layer_file(file, cfg, layer, ref, device, folder)


def read_layer_file(
    file: Path, cfg: dict[str, Any], layer: int, ref: ReleaseRef | None, device: torch.device, folder: Path
) -> Dictionary:
    """One layer's file of a set whose config.yaml (in `folder`) is `cfg`."""
    spec = ref.spec if ref else str(file)
    hook_in, hook_out = _hooks(cfg, folder)
    md = release_metadata(ref, f"circuit-tracer transcoder set {spec} layer {layer}", cfg.get("model_name"))
    site_in, site_out = f"blocks.{layer}.{hook_in}", f"blocks.{layer}.{hook_out}"
    if file.suffix == ".npz":
        from monosemantic.dictionaries.circuit_tracer import load_gemma_scope_npz

        dic = load_gemma_scope_npz(file, device, site_in, site_out)
        dic.cfg.metadata = md | {"hook_name": site_in, "hook_name_out": site_out}
        return dic
    t = load_safetensors(file, what="circuit-tracer transcoder")
    if "w_enc" in t:  # Gemma Scope 2's params.safetensors
        w = {
            "W_enc": t["w_enc"],
            "W_dec": t["w_dec"],
            "b_enc": t["b_enc"],
            "b_dec": t["b_dec"],
            "threshold": t["threshold"],
        }
        if "affine_skip_connection" in t:
            w["W_skip"] = t["affine_skip_connection"]
        return single_site("jumprelu", w, site_in, site_out, md, device, str(file))
    return _circuit_tracer_file(t, cfg, site_in, site_out, md, device, file)


def _circuit_tracer_file(
    t: dict[str, torch.Tensor],
    cfg: dict[str, Any],
    site_in: str,
    site_out: str,
    md: dict,
    device: torch.device,
    file: Path,
) -> Dictionary:
    extra = sorted(set(t) - _FILE_KEYS)
    missing = sorted({"W_enc", "W_dec", "b_enc", "b_dec"} - set(t))
    if missing or extra:
        raise DataError(f"{file}: {'missing ' + str(missing) if missing else 'unexpected ' + str(extra)}; "
                        "not a circuit-tracer transcoder (W_enc, W_dec, b_enc, b_dec[, W_skip, activation_function.threshold])")  # fmt: skip
    w = {"W_enc": t["W_enc"].T, "W_dec": t["W_dec"], "b_enc": t["b_enc"], "b_dec": t["b_dec"]}
    if "W_skip" in t:
        w["W_skip"] = t["W_skip"].T  # circuit-tracer adds x @ W_skip^T
    activation, k = cfg.get("activation"), cfg.get("k")
    if activation == "topk":
        if k is None:
            raise DataError(f"{file.parent / CONFIG}: activation topk needs k")
        return single_site("topk", w, site_in, site_out, md, device, str(file), k=int(k))
    if activation not in (None, "relu"):
        raise MonosemanticError(
            f"{file.parent / CONFIG}: activation {activation!r}; circuit-tracer's are relu and topk"
        )
    if activation is None and "activation_function.threshold" in t:
        w["threshold"] = t["activation_function.threshold"].flatten()
        return single_site("jumprelu", w, site_in, site_out, md, device, str(file))
    return single_site("relu", w, site_in, site_out, md, device, str(file))


def read_clt(folder: Path, cfg: dict[str, Any], ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    """A circuit-tracer CLT: a Gemma Scope 2 CLT from its `transcoders` list, else the W_enc_{i}
    files in the folder."""
    spec = ref.spec if ref else str(folder)
    hook_in, hook_out = _hooks(cfg, folder)
    if "transcoders" in cfg:
        from .gemma_scope_2 import read_gemma_scope_2_clt

        files = [Path(f) for f in layer_files(folder, cfg, spec)]
        used = files[: len(files) - 1]  # as load_gemma_scope_2_clt: range(max(paths.keys()))
        dic = read_gemma_scope_2_clt([f.parent for f in used], ref, device, (hook_in, hook_out))
    else:
        from monosemantic.dictionaries.circuit_tracer import load_circuit_tracer_clt

        dic = load_circuit_tracer_clt(folder, device, hook_in, hook_out)
    dic.cfg.metadata = release_metadata(ref, f"circuit-tracer CLT {spec}", cfg.get("model_name"))
    return dic
