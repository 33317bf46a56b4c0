"""Dictionary checkpoints in the SAELens layout: `cfg.json` + `sae_weights.safetensors` (+ sparsity).

We write what SAELens 6 reads: architecture names "standard", "topk", "jumprelu", "gated",
"transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder", and
`metadata.sae_lens_version` = `SAELENS_FORMAT` (SAELens reads a cfg.json without it as a pre-6.0
file and drops `hook_name`, `model_name` and `context_size`). TopK transcoders are written as
"topk_transcoder" / "topk_skip_transcoder", which SAELens 6 does not register:
`saelens_topk.register_topk_transcoder()` adds them to SAELens's registry.
BatchTopK and Matryoshka are saved as their JumpReLU inference form (as SAELens does), and
SAELens stores W_skip as [d_out, d_in], so we transpose it on disk. Our own architecture and
every hyperparameter go in `metadata.monosemantic`, so a round trip restores the exact class.
Other libraries' layouts (sparsify, dictionary_learning) are read by `foreign.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from monosemantic.lm.sites import HOOK_NAMES
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.files import atomic_dir
from monosemantic.utils.progress import console
from monosemantic.utils.readers import load_safetensors
from monosemantic.utils.torch_utils import dtype_name, resolve_device

from .base import Dictionary, DictionaryMeta, dictionary_class
from .circuit_tracer import is_circuit_tracer_clt, load_circuit_tracer_clt, load_gemma_scope_npz
from .foreign import detect_format, load_dictionary_learning, load_sparsify
from .weights import CFG, SPARSITY, WEIGHTS, build_from_weights, read_cfg

# The SAELens checkpoint format our cfg.json follows (SAELens >= 6.0 reads metadata.hook_name etc.)
SAELENS_FORMAT = "6.0.0"


def _cfg_dict(dic: Dictionary, metadata: dict[str, Any] | None) -> dict[str, Any]:
    meta = dic.cfg
    md = {**meta.metadata, **(metadata or {})}
    md.setdefault("hook_name", meta.hook_name)
    md.setdefault("sae_lens_version", SAELENS_FORMAT)
    md.setdefault("sae_lens_training_version", None)  # not trained by SAELens
    if meta.is_transcoder:
        md.setdefault("hook_name_out", meta.hook_name_out)
    md["hook_names"] = HOOK_NAMES  # the sites mean exactly what TransformerLens means
    md["monosemantic"] = meta.to_dict()
    cfg = {
        "architecture": dictionary_class(meta.architecture).saelens_architecture(meta),
        "d_in": meta.d_in,
        "d_sae": meta.d_sae,
        "dtype": dtype_name(dic.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": meta.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": md,
    }
    if meta.is_transcoder or meta.skip:
        cfg["d_out"] = meta.d_out
    cfg.update(dictionary_class(meta.architecture).saelens_fields(meta))
    return cfg | dic.saved_cfg()  # a multi-site dictionary (CLT) names its own layout


def save_dictionary(
    dic: Dictionary,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    log10_density: torch.Tensor | None = None,
) -> Path:
    """Write `dic` to the folder `path` atomically (a temporary sibling folder, then rename).

    `metadata` (model_name, hook_name, hook_name_out, context_size, prepend_bos, dataset_path,
    a training summary, ...) is stored under cfg.json's `metadata`; `log10_density` [d_sae]
    becomes `sparsity.safetensors`. Fold any activation scaling first (`fold_activation_scale`).
    """
    path = Path(path)
    with atomic_dir(path, keep_extra=True) as tmp:  # a resumable run keeps trainer_state/ beside it
        weights = {k: v.detach().contiguous().cpu() for k, v in dic.weights_for_saving().items()}
        if "W_skip" in weights:
            weights["W_skip"] = weights["W_skip"].T.contiguous()
        save_file(weights, str(tmp / WEIGHTS))
        (tmp / CFG).write_text(json.dumps(_cfg_dict(dic, metadata), indent=2, default=str) + "\n")
        if log10_density is not None:
            if log10_density.shape != (dic.d_sae,):
                raise MonosemanticError(
                    f"log10_density must have shape [{dic.d_sae}], got {list(log10_density.shape)}"
                )
            save_file({"sparsity": log10_density.detach().float().contiguous().cpu()}, str(tmp / SPARSITY))
    return path


# SAELens architecture name -> (our architecture, is a transcoder, has a skip connection)
_SAELENS = {
    "standard": ("relu", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "gated": ("gated", False, False),
    "batchtopk": ("batchtopk", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}


def _meta_from_saelens(cfg: dict[str, Any], where: str = "this checkpoint") -> DictionaryMeta:
    md = dict(cfg.get("metadata") or {})
    ours = md.pop("monosemantic", None)
    if ours:  # ours, as this or any earlier version wrote it
        meta = DictionaryMeta.from_dict(_migrated(ours, md, where))
        meta.metadata = md
        return meta
    name = cfg.get("architecture", "standard")
    if name not in _SAELENS:
        raise MonosemanticError(
            f"SAELens architecture {name!r} is not supported; supported: {', '.join(sorted(_SAELENS))}"
        )
    arch, transcoder, skip = _SAELENS[name]
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in", None):
        raise MonosemanticError(
            f"normalize_activations={norm!r} (a per-token input normalisation) is not supported; "
            "only 'none' or folded 'expected_average_only_in' checkpoints load"
        )
    for key in ("model_name", "hook_name", "hook_name_out", "context_size", "prepend_bos", "dataset_path"):
        if key in cfg and key not in md:
            md[key] = cfg[key]
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    meta = DictionaryMeta.from_dict(
        {
            "architecture": arch,
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": int(cfg.get("d_out", d_in)) if transcoder else d_in,
            "k": cfg.get("k"),
            "hook_name": md.get("hook_name"),
            "hook_name_out": md.get("hook_name_out") if transcoder else None,
            "skip": skip,
            "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", not transcoder)) and not transcoder,
        }
    )
    meta.metadata = md
    return meta


_SITE_FIELDS = ("hook_name", "hook_name_out", "hook_names", "hook_names_out")


def _migrated(ours: dict[str, Any], md: dict[str, Any], where: str) -> dict[str, Any]:
    """Our checkpoints from before TransformerLens-exact hook names: their sites under today's names
    (`lm.sites.migrate_site`), said in one line; checkpoints with `hook_names` are read as written.
    (Other libraries' SAELens checkpoints always used TransformerLens' own names.)"""
    from monosemantic.lm.sites import HOOK_NAMES, migrate_site, migration_note

    if md.get("hook_names") == HOOK_NAMES:
        return ours
    new, renamed = dict(ours), {}
    for key in _SITE_FIELDS:
        value = ours.get(key)
        names = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        moved = [migrate_site(n) for n in names]
        renamed |= {a: b for a, b in zip(names, moved, strict=True) if a != b}
        if names:
            new[key] = moved if isinstance(value, list) else moved[0]
    for key in ("hook_name", "hook_name_out"):
        if isinstance(md.get(key), str):
            md[key] = migrate_site(md[key])
    md["hook_names"] = HOOK_NAMES
    if renamed:
        console.print(f"[yellow]note:[/] {migration_note(renamed, where)}", highlight=False, soft_wrap=True)
    return new


def _load_saelens(path: Path, device: torch.device) -> Dictionary:
    cfg = read_cfg(path)
    try:
        meta = _meta_from_saelens(cfg, f"checkpoint {path}")
    except KeyError as e:
        raise DataError(
            f"dictionary config {str(path / CFG)!r} lacks the field {e.args[0]!r}; re-save the checkpoint"
        ) from None
    except (TypeError, ValueError, AttributeError) as e:
        raise DataError(
            f"dictionary config {str(path / CFG)!r} is not valid ({e}); re-save the checkpoint"
        ) from None
    weights = load_safetensors(
        path / WEIGHTS, what="dictionary weights", fix="re-save or re-train the checkpoint"
    )
    if "W_skip" in weights:
        weights["W_skip"] = weights["W_skip"].T.contiguous()
    if cfg.get("rescale_acts_by_decoder_norm"):
        # TopK on pre * |W_dec| and decode with W_dec / |W_dec| is the same as folding the norms.
        norms = weights["W_dec"].norm(dim=-1)
        weights["W_enc"] = weights["W_enc"] * norms
        weights["b_enc"] = weights["b_enc"] * norms
        weights["W_dec"] = weights["W_dec"] / norms[:, None]
    if cfg.get("normalize_activations") == "expected_average_only_in" and "norm_scaling_factor" in cfg:
        scale = float(cfg["norm_scaling_factor"])
        weights["W_enc"] = weights["W_enc"] * scale
        weights["W_dec"] = weights["W_dec"] / scale
        weights["b_dec"] = weights["b_dec"] / scale
    return build_from_weights(meta, weights, cfg.get("dtype"), device, str(path))


def load_dictionary(
    path_or_hub_id: str | Path, device: str | torch.device | None = None, model: Any = None
) -> Dictionary:
    """Load ours, SAELens', sparsify's or dictionary_learning's checkpoint, or a released dictionary
    (`releases/`): a folder, a hub folder `org/repo[/sub/folder]`, a release `RELEASE:ID`, with
    `#layer_N` for one layer of a transcoder set. With `model` (the loaded `SubjectModel`, a
    `transformers` model, or a hub id / folder), a release of another model family is refused in
    one line (`releases.check_family`), before any weights are used."""
    from .releases import locate, read_release
    from .releases.family import check_model_family

    where = locate(path_or_hub_id)
    dev = resolve_device(str(device) if device is not None else "cpu")
    dic = read_release(where.local, where.ref, dev, where.layer) or _load_local(where.local, dev)
    if where.ref is not None and "release" not in dic.cfg.metadata:
        dic.cfg.metadata["release"] = where.ref.spec
    if model is not None:
        check_model_family(dic.cfg.metadata, model, str(path_or_hub_id))
    return dic


def _load_local(path: Path, dev: torch.device) -> Dictionary:
    foreign = _load_circuit_tracer_or_npz(path, dev)
    if foreign is not None:
        return foreign
    fmt = detect_format(path)
    if fmt == "saelens":
        return _load_saelens(path, dev)
    if fmt == "sparsify":
        return load_sparsify(path, dev)
    return load_dictionary_learning(path, dev)


def _load_circuit_tracer_or_npz(path: Path, device: torch.device) -> Dictionary | None:
    """circuit-tracer's CLT folder, or a Gemma Scope params.npz (file or folder); else None."""
    if path.is_dir() and is_circuit_tracer_clt(path):
        return load_circuit_tracer_clt(path, device)
    if path.name.endswith(".npz") or (
        path.is_dir() and (path / "params.npz").is_file() and not (path / CFG).exists()
    ):
        return load_gemma_scope_npz(path, device)
    return None


def load_sparsity(path: str | Path) -> torch.Tensor | None:
    """log10 feature densities [d_sae] saved beside a checkpoint, or None."""
    f = Path(path) / SPARSITY
    return load_safetensors(f, ["sparsity"], what="feature densities")["sparsity"] if f.exists() else None


def is_checkpoint(path: Path) -> bool:
    from .releases import is_release

    if is_circuit_tracer_clt(path) or (path / "params.npz").is_file() or is_release(path):
        return True
    try:
        detect_format(path)
        return True
    except MonosemanticError:
        return False


def dictionary_names(paths: list[Path], root: str | Path | None = None) -> list[str]:
    """Each checkpoint's name in reports, the feature store and graphs (one rule for every stage):
    its path relative to `root` (the folder the user gave), else its folder name; a name that
    repeats is prefixed with parent folders until it is unique."""
    names: list[str] = []
    for p in map(Path, paths):
        inside = (
            root is not None
            and p.resolve() != Path(root).resolve()
            and p.resolve().is_relative_to(Path(root).resolve())
        )
        name = p.resolve().relative_to(Path(root).resolve()).as_posix() if inside else p.name
        parent = p.parent
        while name in names and parent.name:
            name, parent = f"{parent.name}/{name}", parent.parent
        names.append(name)
    return names


def find_dictionaries(path: str | Path) -> list[Path]:
    """`path` itself if it is a checkpoint, else every checkpoint below it, sorted. A release line
    (`RELEASE:ID`, a hub folder, `...#layer_N`) is fetched first; a set (per-layer transcoders, a
    folder of per-layer release files) gives one entry per dictionary."""
    from .releases import entries, locate, split_layer

    text = str(path)
    where = locate(text)
    if split_layer(text)[1] is not None:
        return [Path(text)]
    if where.ref is not None:
        return [Path(e) for e in entries(where.local, text) or [text]]
    path = where.local
    if (listed := entries(path)) is not None:
        return [Path(e) for e in listed]
    if not path.is_dir():
        raise MonosemanticError(f"{path} is not a folder; give a checkpoint folder or a sweep folder")
    found = _scan(path)
    if not found:
        raise MonosemanticError(
            f"no dictionary checkpoints under {path} (looked for cfg.json + sae_weights.safetensors)"
        )
    return found


def _scan(folder: Path) -> list[Path]:
    """Checkpoints at or below `folder`, in name order, without descending into one (a CLT's
    per-layer folders are parts of it) or into trainer state and hidden folders."""
    from .releases import entries

    if (listed := entries(folder)) is not None:
        return [Path(e) for e in listed]
    if is_checkpoint(folder):
        return [folder]
    found: list[Path] = []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and p.name != "trainer_state":
            found += _scan(p)
    return found
