"""circuit-tracer's transcoder layouts and Gemma Scope's `params.npz`, read and written.

- circuit-tracer CLT (`load_clt`): a folder with, per layer i, `W_enc_{i}.safetensors` holding
  `W_enc_{i} [n, d]`, `b_enc_{i} [n]`, `b_dec_{i} [d]` (and `threshold_{i} [n]` for JumpReLU) and
  `W_dec_{i}.safetensors` holding `W_dec_{i} [n, L - i, d]` (layer i's latents to layers i..L-1).
  Layers are 0..L-1; activation ReLU, or JumpReLU when thresholds are present.
- circuit-tracer per-layer ReLU transcoders (`load_relu_transcoder`): one safetensors file per
  layer with `W_enc [n, d]` (an `F.linear` weight), `W_dec [n, d]`, `b_enc`, `b_dec`, optional
  `W_skip [d_out, d_in]` (applied as x W_skip^T).
- Gemma Scope (`params.npz`, also circuit-tracer's `load_gemma_scope_transcoder`): `W_enc [d, n]`,
  `W_dec [n, d]`, `b_enc`, `b_dec`, `threshold`: a JumpReLU SAE or transcoder.
- circuit-tracer's `config.yaml` beside them names the hooks they read and write per layer
  (`feature_input_hook`, `feature_output_hook`: TransformerLens names such as `mlp.hook_in`,
  `ln2.hook_normalized`, `hook_mlp_out`) and the `model_kind`; we write it on export and read it back.
The weight files alone name no hook: without a config.yaml, readers take the hooks as arguments,
defaulting to circuit-tracer's own defaults (`mlp.hook_in` -> `mlp.hook_out`, our `hook_mlp_out`)
for its safetensors layouts and Gemma Scope's (`ln2.hook_normalized` -> `hook_mlp_out`) for params.npz.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from monosemantic.config.site import Site, site_group
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.files import atomic_path

from .base import Dictionary, DictionaryMeta
from .clt import CLTConfig, CrossLayerTranscoder
from .weights import build_from_weights

SITES_FILE = "monosemantic_sites.json"  # our sidecar: which hook sites a written CLT reads and writes
CONFIG_FILE = "config.yaml"  # circuit-tracer's: model_kind, feature_input_hook, feature_output_hook
CT_IN, CT_OUT = (
    "mlp.hook_in",
    "hook_mlp_out",
)  # circuit-tracer's defaults (its mlp.hook_out = our hook_mlp_out)
GEMMA_SCOPE_IN = "ln2.hook_normalized"  # where Gemma Scope transcoders read (circuit-tracer's gemma configs)


def _layer_hook(site: str | Site | None) -> str:
    """`blocks.3.ln2.hook_normalized` -> `ln2.hook_normalized` (circuit-tracer's per-layer hook name)."""
    parsed = Site.parse(site) if site is not None else None
    if parsed is None or not parsed.block or parsed.is_pair:
        raise MonosemanticError(f"{site}: circuit-tracer takes per-layer sites blocks.L.<hook>")
    return "hook_mlp_out" if parsed.hook == "mlp.hook_out" else parsed.hook


def read_hooks(folder: Path, default_in: str, default_out: str) -> tuple[str, str]:
    """(feature_input_hook, feature_output_hook) from circuit-tracer's config.yaml in `folder`, else
    the defaults. circuit-tracer's `mlp.hook_out` (its MLP wrapper's output) is our `hook_mlp_out`."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        return default_in, default_out
    import yaml

    try:
        cfg = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{file}: not valid YAML ({str(e).splitlines()[0]})") from None
    hook_in = str(cfg.get("feature_input_hook", default_in))
    hook_out = str(cfg.get("feature_output_hook", default_out))
    return hook_in, "hook_mlp_out" if hook_out == "mlp.hook_out" else hook_out


def _write_config(
    out: Path, kind: str, hook_in: str, hook_out: str, files: list[str], model: str | None
) -> None:
    """circuit-tracer's config.yaml (JSON is YAML): the hooks each layer's features read and write."""
    cfg: dict = {"model_kind": kind, "feature_input_hook": hook_in, "feature_output_hook": hook_out}
    if model:
        cfg["model_name"] = model
    if files:
        cfg["transcoders"] = files
    with atomic_path(out / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")


def is_circuit_tracer_clt(path: Path) -> bool:
    return (path / "W_enc_0.safetensors").is_file() and (path / "W_dec_0.safetensors").is_file()


def load_circuit_tracer_clt(
    path: str | Path,
    device: torch.device | str = "cpu",
    hook_in: str | None = None,
    hook_out: str | None = None,
) -> CrossLayerTranscoder:
    """A circuit-tracer CLT folder as our CrossLayerTranscoder (hooks from the arguments, else its
    config.yaml, else circuit-tracer's defaults; our sidecar's site lists when present)."""
    path = Path(path)
    hook_in, hook_out = (hook_in, hook_out) if hook_in and hook_out else read_hooks(path, CT_IN, CT_OUT)
    L = 0
    while (path / f"W_enc_{L}.safetensors").is_file():
        L += 1
    if L == 0 or not is_circuit_tracer_clt(path):
        raise DataError(f"{path}: no W_enc_0.safetensors / W_dec_0.safetensors; not a circuit-tracer CLT")
    enc = [load_file(str(path / f"W_enc_{i}.safetensors")) for i in range(L)]
    dec = [load_file(str(path / f"W_dec_{i}.safetensors")) for i in range(L)]
    try:
        W_enc = torch.stack([e[f"W_enc_{i}"].float().T for i, e in enumerate(enc)])  # [L, d, n]
        b_enc = torch.stack([e[f"b_enc_{i}"].float() for i, e in enumerate(enc)])
        b_dec = torch.stack([e[f"b_dec_{i}"].float() for i, e in enumerate(enc)])
        W_dec = {f"W_dec_{i}": d[f"W_dec_{i}"].float() for i, d in enumerate(dec)}
    except KeyError as e:
        raise DataError(f"{path}: missing tensor {e}; not a circuit-tracer CLT") from e
    if any(f"W_skip_{i}" in e for i, e in enumerate(enc)):
        raise MonosemanticError(f"{path}: CLTs with skip connections (W_skip_i) are not supported")
    jump = all(f"threshold_{i}" in e for i, e in enumerate(enc))
    sites = {"hook_names": [f"blocks.{i}.{hook_in}" for i in range(L)],
             "hook_names_out": [f"blocks.{i}.{hook_out}" for i in range(L)]}  # fmt: skip
    if (path / SITES_FILE).is_file():
        sites |= json.loads((path / SITES_FILE).read_text())
    weights = {"W_enc": W_enc, "b_enc": b_enc, "b_dec": b_dec, **W_dec}
    if jump:
        weights["threshold"] = torch.stack([e[f"threshold_{i}"].float().flatten() for i, e in enumerate(enc)])
    md = {"source": f"circuit-tracer CLT at {path}"}
    return clt_from_tensors(
        weights, sites["hook_names"], sites["hook_names_out"], md, torch.device(device), str(path)
    )


def clt_from_tensors(
    weights: dict[str, torch.Tensor],
    sites_in: list[str],
    sites_out: list[str],
    metadata: dict,
    device: torch.device,
    where: str,
) -> CrossLayerTranscoder:
    """A CLT over layers 0..L-1 from `W_enc [L, d, n]`, `b_enc [L, n]`, `b_dec [L, d]`, `W_dec_{i}
    [n, L - i, d]` and optionally `threshold [L, n]` (then JumpReLU, else ReLU)."""
    L, d, n = weights["W_enc"].shape
    activation = "jumprelu" if "threshold" in weights else "relu"
    meta = DictionaryMeta(
        architecture="clt",
        d_in=L * d,
        d_sae=L * n,
        d_out=L * weights["b_dec"].shape[1],
        hook_name=str(site_group(list(sites_in))),
        hook_name_out=str(site_group(list(sites_out))),
        apply_b_dec_to_input=False,
        settings=CLTConfig.model_validate({"architecture": "clt", "activation": activation}),
        metadata=dict(metadata),
    )
    return build_from_weights(meta, weights, "float32", device, where)


def load_circuit_tracer_transcoder(
    file: str | Path,
    layer: int | None = None,
    device: torch.device | str = "cpu",
    hook_in: str | None = None,
    hook_out: str | None = None,
) -> Dictionary:
    """One circuit-tracer per-layer ReLU transcoder file as our (skip) transcoder of `layer`
    (default: the number in a `layer_{i}.safetensors` name); hooks as in `load_circuit_tracer_clt`."""
    file = Path(file)
    hook_in, hook_out = (
        (hook_in, hook_out) if hook_in and hook_out else read_hooks(file.parent, CT_IN, CT_OUT)
    )
    if layer is None:
        m = re.search(r"(\d+)", file.stem)
        if m is None:
            raise MonosemanticError(f"{file}: give the layer (the file name carries no layer number)")
        layer = int(m.group(1))
    t = load_file(str(file))
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in t]
    if missing:
        raise DataError(f"{file}: missing tensors {missing}; not a circuit-tracer transcoder")
    if "log_thresholds" in t or "threshold" in t:
        raise MonosemanticError(
            f"{file}: thresholded transcoders come as Gemma Scope params.npz in circuit-tracer"
        )
    n, d_in = t["W_enc"].shape
    meta = DictionaryMeta(
        architecture="relu",  # circuit-tracer's L1 is not decoder-norm weighted: settings do not matter here
        d_in=d_in,
        d_sae=n,
        d_out=t["W_dec"].shape[1],
        hook_name=f"blocks.{layer}.{hook_in}",
        hook_name_out=f"blocks.{layer}.{hook_out}",
        skip="W_skip" in t,
        apply_b_dec_to_input=False,
        metadata={"source": f"circuit-tracer transcoder {file}"},
    )
    w = {"W_enc": t["W_enc"].float().T.contiguous(), "W_dec": t["W_dec"].float(), "b_enc": t["b_enc"].float(),
         "b_dec": t["b_dec"].float()}  # fmt: skip
    if "W_skip" in t:
        w["W_skip"] = t["W_skip"].float().T.contiguous()  # circuit-tracer applies x W_skip^T
    return build_from_weights(meta, w, "float32", torch.device(device), str(file))


def load_circuit_tracer_set(folder: str | Path, device: torch.device | str = "cpu") -> list[Dictionary]:
    """A folder of per-layer transcoders as `write_circuit_tracer` lays them out (`layer_{i}.safetensors`
    or `layer_{i}/params.npz`), in layer order."""
    folder = Path(folder)
    out: dict[int, Dictionary] = {}
    for f in folder.glob("layer_*.safetensors"):
        dic = load_circuit_tracer_transcoder(f, device=device)
        out[dic.cfg.site.layer] = dic
    hook_in, hook_out = read_hooks(folder, GEMMA_SCOPE_IN, CT_OUT)
    for f in folder.glob("layer_*/params.npz"):
        layer = int(f.parent.name.split("_")[1])
        out[layer] = load_gemma_scope_npz(
            f, device, f"blocks.{layer}.{hook_in}", f"blocks.{layer}.{hook_out}"
        )
    if not out:
        raise DataError(f"{folder}: no layer_{{i}}.safetensors or layer_{{i}}/params.npz transcoders")
    return [out[k] for k in sorted(out)]


def write_circuit_tracer(dics: list[Dictionary] | Dictionary, out: str | Path) -> Path:
    """Write a CLT as circuit-tracer's CLT folder, or per-layer transcoders as its per-layer files
    (`layer_{i}.safetensors`, ReLU) or Gemma Scope `layer_{i}/params.npz` (JumpReLU/BatchTopK),
    with circuit-tracer's config.yaml naming the hooks they were trained on."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(dics, Dictionary) and dics.multi_site:
        if not isinstance(dics, CrossLayerTranscoder):
            raise MonosemanticError(
                f"circuit-tracer has no {dics.cfg.architecture} format; only CLTs and transcoders"
            )
        return _write_clt(dics, out)
    dics = [dics] if isinstance(dics, Dictionary) else list(dics)
    layers = []
    for dic in dics:
        site = dic.cfg.site
        if site is None or site.is_group or site.layer is None or not dic.is_transcoder:
            raise MonosemanticError(
                f"{dic.cfg.hook_name}: circuit-tracer takes per-layer transcoders on blocks.L"
            )
        layers.append(site.layer)
    if sorted(layers) != list(range(len(layers))):
        raise MonosemanticError(
            f"circuit-tracer needs one transcoder per layer 0..L-1, got layers {sorted(layers)}"
        )
    hooks = {(_layer_hook(d.cfg.hook_name), _layer_hook(d.cfg.hook_name_out)) for d in dics}
    if len(hooks) != 1:
        raise MonosemanticError(
            f"circuit-tracer's transcoder sets read and write one hook per layer; these use {sorted(hooks)}"
        )
    files = []
    for layer, dic in zip(layers, dics, strict=True):
        w = {k: v.detach().float().cpu().contiguous() for k, v in dic.weights_for_saving().items()}
        form = type(dic).inference_form()
        if form == "standard":
            t = {
                "W_enc": w["W_enc"].T.contiguous(),
                "W_dec": w["W_dec"],
                "b_enc": w["b_enc"],
                "b_dec": w["b_dec"],
            }
            if "W_skip" in w:
                t["W_skip"] = w["W_skip"].T.contiguous()
            with atomic_path(out / f"layer_{layer}.safetensors") as tmp:
                save_file(t, str(tmp))
            files.append((layer, f"layer_{layer}.safetensors"))
        elif form == "jumprelu" and "W_skip" not in w:
            (out / f"layer_{layer}").mkdir(exist_ok=True)
            arrays = {k: w[k].numpy() for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
            with atomic_path(out / f"layer_{layer}" / "params.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
            files.append((layer, f"layer_{layer}/params.npz"))
        else:
            raise MonosemanticError(
                f"circuit-tracer reads ReLU or JumpReLU transcoders; {dic.cfg.architecture}"
                f"{' with skip' if 'W_skip' in w else ''} has no equivalent there (train relu, jumprelu, "
                "batchtopk or matryoshka transcoders to export)"
            )
    (hook_in, hook_out), model = hooks.pop(), dics[0].cfg.metadata.get("model_name")
    _write_config(out, "transcoder_set", hook_in, hook_out, [f for _, f in sorted(files)], model)
    return out


def _write_clt(clt: CrossLayerTranscoder, out: Path) -> Path:
    if not clt.activation.elementwise or clt.layers != list(range(clt.n_layers)):
        raise MonosemanticError(
            "circuit-tracer CLTs are ReLU or JumpReLU over layers 0..L-1; this one is "
            f"{clt.activation.name} over {clt.layers} (train relu, jumprelu or batchtopk over every layer to export)"
        )
    w = {k: v.detach().float().cpu() for k, v in clt.weights_for_saving().items()}
    for i in range(clt.n_layers):
        enc = {f"W_enc_{i}": w["W_enc"][i].T.contiguous(), f"b_enc_{i}": w["b_enc"][i].contiguous(),
               f"b_dec_{i}": w["b_dec"][i].contiguous()}  # fmt: skip
        if "threshold" in w:
            enc[f"threshold_{i}"] = w["threshold"][i].contiguous()
        with atomic_path(out / f"W_enc_{i}.safetensors") as tmp:
            save_file(enc, str(tmp))
        with atomic_path(out / f"W_dec_{i}.safetensors") as tmp:
            save_file({f"W_dec_{i}": w[f"W_dec_{i}"].contiguous()}, str(tmp))
    sites = {"hook_names": [str(s) for s in clt.sites_in], "hook_names_out": [str(s) for s in clt.sites_out]}
    (out / SITES_FILE).write_text(json.dumps(sites, indent=2) + "\n")
    hooks = {(_layer_hook(a), _layer_hook(b)) for a, b in zip(clt.sites_in, clt.sites_out, strict=True)}
    if len(hooks) != 1:
        raise MonosemanticError(
            f"circuit-tracer's CLTs read and write one hook per layer; this one uses {sorted(hooks)}"
        )
    _write_config(out, "cross_layer_transcoder", *hooks.pop(), [], (clt.cfg.metadata or {}).get("model_name"))
    return out


def load_gemma_scope_npz(
    path: str | Path,
    device: torch.device | str = "cpu",
    hook_name: str | None = None,
    hook_name_out: str | None = None,
) -> Dictionary:
    """A Gemma Scope `params.npz` (file or folder holding one) as a JumpReLU SAE, or a transcoder when
    `hook_name_out` differs from `hook_name`."""
    path = Path(path)
    file = path / "params.npz" if path.is_dir() else path
    try:
        arrays = dict(np.load(file))
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: not a readable params.npz ({e})") from e
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if k not in arrays]
    if missing:
        raise DataError(f"{file}: missing arrays {missing}; not a Gemma Scope checkpoint")
    w = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    d_in, d_sae = w["W_enc"].shape
    d_out = w["W_dec"].shape[1]
    transcoder = hook_name_out is not None and hook_name_out != hook_name
    meta = DictionaryMeta(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        d_out=d_out,
        hook_name=hook_name,
        hook_name_out=hook_name_out if transcoder else None,
        apply_b_dec_to_input=False,  # Gemma Scope encodes x directly
        metadata={"source": f"Gemma Scope params.npz at {file}"},
    )
    weights = {k: w[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
    return build_from_weights(meta, weights, "float32", torch.device(device), str(file))
