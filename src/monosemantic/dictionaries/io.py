"""Dictionary checkpoints in the SAELens layout: `cfg.json` + `sae_weights.safetensors` (+ sparsity).

We write what SAELens 6 reads: architecture names "standard", "topk", "jumprelu", "gated",
"transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder".
BatchTopK and Matryoshka are saved as their JumpReLU inference form (as SAELens does), and
SAELens stores W_skip as [d_out, d_in], so we transpose it on disk. Our own architecture and
every hyperparameter go in `metadata.monosemantic`, so a round trip restores the exact class.
Other libraries' layouts (sparsify, dictionary_learning) are read by `foreign.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.progress import console
from monosemantic.utils.torch_utils import dtype_name, resolve_device, torch_dtype

from .base import Dictionary, DictionaryMeta, dictionary_class
from .registry import ARCHITECTURES  # noqa: F401  (registers every architecture)

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"


def saelens_architecture(meta: DictionaryMeta) -> str:
    """The SAELens 6 architecture name that runs this dictionary at inference."""
    arch = meta.architecture
    inference = "jumprelu" if arch in ("batchtopk", "matryoshka", "jumprelu") else arch
    if meta.is_transcoder or meta.skip:
        if inference in ("relu", "jumprelu"):
            base = "transcoder" if inference == "relu" else "jumprelu_transcoder"
            return base.replace("transcoder", "skip_transcoder") if meta.skip else base
        return f"{inference}_skip_transcoder" if meta.skip else f"{inference}_transcoder"
    return {"relu": "standard"}.get(inference, inference)


def _cfg_dict(dic: Dictionary, metadata: dict[str, Any] | None) -> dict[str, Any]:
    meta = dic.cfg
    md = {**meta.metadata, **(metadata or {})}
    md.setdefault("hook_name", meta.hook_name)
    if meta.is_transcoder:
        md.setdefault("hook_name_out", meta.hook_name_out)
    md["monosemantic"] = {**meta.to_dict(), "metadata": None}
    cfg = {
        "architecture": saelens_architecture(meta),
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
    if meta.architecture == "topk":
        cfg["k"] = meta.k
        cfg["rescale_acts_by_decoder_norm"] = False
    if hasattr(dic, "saved_cfg"):  # a multi-site dictionary (CLT) names its own layout
        cfg |= dic.saved_cfg()
    return cfg


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
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
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def _replace_dir(tmp: Path, path: Path) -> None:
    """Swap `tmp` into place; an existing checkpoint folder keeps any extra entries (trainer_state/)."""
    if not path.exists():
        os.replace(tmp, path)
        return
    for f in tmp.iterdir():
        os.replace(f, path / f.name)


def read_cfg(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / CFG).read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path / CFG} is not valid JSON ({e}); re-save the checkpoint") from e


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


def _meta_from_saelens(cfg: dict[str, Any]) -> DictionaryMeta:
    md = dict(cfg.get("metadata") or {})
    ours = md.pop("monosemantic", None)
    if ours:
        cls = getattr(dictionary_class(ours.get("architecture", "relu")), "meta_class", DictionaryMeta)
        meta = cls.from_dict(ours)
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
    return DictionaryMeta(
        architecture=arch,
        d_in=d_in,
        d_sae=d_sae,
        d_out=int(cfg.get("d_out", d_in)) if transcoder else d_in,
        k=cfg.get("k"),
        hook_name=md.get("hook_name"),
        hook_name_out=md.get("hook_name_out") if transcoder else None,
        skip=skip,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", not transcoder)) and not transcoder,
        metadata=md,
    )


def _load_saelens(path: Path, device: torch.device) -> Dictionary:
    cfg = read_cfg(path)
    meta = _meta_from_saelens(cfg)
    weights = load_file(str(path / WEIGHTS))
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


def build_from_weights(
    meta: DictionaryMeta,
    weights: dict[str, torch.Tensor],
    dtype: str | None,
    device: torch.device,
    where: str,
) -> Dictionary:
    """Instantiate the class for `meta` and load `weights`, with one-line errors on mismatch."""
    W_dec = weights.get("W_dec")
    multi_site = getattr(dictionary_class(meta.architecture), "multi_site", False)  # CLT: its loader checks
    if not multi_site and (W_dec is None or tuple(W_dec.shape) != (meta.d_sae, meta.d_out)):
        got = None if W_dec is None else list(W_dec.shape)
        raise DataError(
            f"{where}: W_dec has shape {got}, config says [{meta.d_sae}, {meta.d_out}]; the checkpoint is inconsistent"
        )
    dic = dictionary_class(meta.architecture)(meta)
    dt = torch_dtype(dtype) if dtype else weights["b_dec"].dtype
    dic.to(dtype=dt)
    try:
        dic.load_saved_weights({k: v.to(dt) for k, v in weights.items()})
    except RuntimeError as e:
        raise DataError(f"{where}: weights do not match the config ({str(e).splitlines()[0]})") from e
    return dic.to(device).eval()


def _resolve(path_or_hub_id: str | Path) -> Path:
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_hub_id)
    if ":" in text and not text.startswith((".", "/", "~")):
        from .releases import resolve_release

        text, entry = resolve_release(text)
        kwargs = (entry.get("config_overrides") or {}).get("model_from_pretrained_kwargs")
        if kwargs:  # e.g. center_writing_weights: TransformerLens-transformed activations
            console.print(
                f"[yellow]note:[/] {path_or_hub_id} was trained on activations of a model loaded with "
                f"{kwargs}; monosemantic hooks the untransformed Hugging Face model",
                highlight=False,
            )
    elif text.startswith((".", "/", "~")) or text.count("/") < 1:
        raise MonosemanticError(
            f"no dictionary at {text}: give a checkpoint folder, a hub id like org/repo[/sub/folder], "
            "or a SAELens release as RELEASE:SAE_ID"
        )
    # org/repo[/subfolder]: fetch only that folder from the Hugging Face hub.
    from huggingface_hub import snapshot_download

    parts = text.split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        local = snapshot_download(repo_id=repo, allow_patterns=[f"{sub}/*"] if sub else None)
    except Exception as e:  # network, auth, missing repo: one line for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MonosemanticError(
            f"{text} is not a local folder, and downloading {repo} from the hub failed: {msg}"
        ) from e
    return Path(local) / sub


def load_dictionary(path_or_hub_id: str | Path, device: str | torch.device | None = None) -> Dictionary:
    """Load ours, SAELens', sparsify's or dictionary_learning's checkpoint (folder or hub id)."""
    from .foreign import detect_format, load_dictionary_learning, load_sparsify

    path = _resolve(path_or_hub_id)
    dev = resolve_device(str(device) if device is not None else "cpu")
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
    from .circuit_tracer import is_circuit_tracer_clt, load_circuit_tracer_clt, load_gemma_scope_npz

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
    return load_file(str(f))["sparsity"] if f.exists() else None


def is_checkpoint(path: Path) -> bool:
    from .circuit_tracer import is_circuit_tracer_clt
    from .foreign import detect_format

    if is_circuit_tracer_clt(path) or (path / "params.npz").is_file():
        return True
    try:
        detect_format(path)
        return True
    except MonosemanticError:
        return False


def find_dictionaries(path: str | Path) -> list[Path]:
    """`path` itself if it is a checkpoint, else every checkpoint folder below it, sorted."""
    path = Path(path)
    if not path.is_dir():
        raise MonosemanticError(f"{path} is not a folder; give a checkpoint folder or a sweep folder")
    if is_checkpoint(path):
        return [path]
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_dir() and not p.name.startswith(".") and "trainer_state" not in p.parts and is_checkpoint(p)
    )
    if not found:
        raise MonosemanticError(
            f"no dictionary checkpoints under {path} (looked for cfg.json + sae_weights.safetensors)"
        )
    return found
