"""Which model a dictionary was trained on, and whether a verb may use it with another.

A checkpoint's cfg.json records `metadata.model_name` and (since harvest records it)
`metadata.tokenizer_fingerprint`. `evaluate`, `analyze`, `steer` and `circuit` refuse a dictionary
of another model (another name, another tokenizer, or another width at its sites) in one line:
a GPT-2 SAE read on storyworld activations gives numbers, and they mean nothing.
`model.allow_foreign_model = true` lets a name or tokenizer difference through (an SAE of a base
model on its instruction-tuned sibling is a legitimate experiment); a width never fits.

Names are compared loosely, as the same model is spelled in several ways: a hub id by its last
part (`openai-community/gpt2` = `gpt2`), a local folder by its folder name (a model folder moved
to another machine is still that model), the shipped LM as `storyworld` wherever it is installed,
and TransformerLens's aliases of the same weights (`gpt2-small` = `gpt2`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monosemantic.utils.errors import ConfigError
from monosemantic.utils.progress import console

# TransformerLens (and so SAELens) names of the same checkpoints
ALIASES = {"gpt2-small": "gpt2"}
ALLOW = "model.allow_foreign_model"


def model_key(name: str | None) -> str | None:
    """A model name reduced to what identifies it (see the module docstring); None when unknown."""
    if not name:
        return None
    text = str(name).rstrip("/")
    parts = Path(text).parts
    if text == "storyworld" or (
        len(parts) >= 2 and parts[-2] == "shipped" and parts[-1].startswith("storyworld")
    ):
        return "storyworld"
    key = Path(text).name.lower() if text.startswith(("/", ".", "~")) or "/" in text else text.lower()
    return ALIASES.get(key, key)


def foreign(metadata: Mapping[str, Any], model: str | None, tokenizer: str | None) -> str | None:
    """How a dictionary with this cfg.json `metadata` differs from `model` (and its tokenizer
    fingerprint), or None when nothing recorded says it was trained elsewhere."""
    theirs, ours = model_key(metadata.get("model_name")), model_key(model)
    if theirs is not None and ours is not None and theirs != ours:
        return f"it was trained on {metadata.get('model_name')!r}, not {model!r}"
    fingerprint = metadata.get("tokenizer_fingerprint")
    if fingerprint and tokenizer and fingerprint != tokenizer:
        return f"it was trained with another tokenizer than {model!r}'s (fingerprint {fingerprint} vs {tokenizer})"
    return None


def check_width(path: str | Path, site: str, width: int, have: int | None, model: str | None) -> None:
    """A dictionary reading or writing `width` values where the model has `have` cannot run at all."""
    if have is not None and int(have) != int(width):
        raise ConfigError(
            f"{path} has width {width} at {site}, but {model or 'the model'} has width {have} there; "
            "use a dictionary trained on this model (or set model.name to its model)"
        )


def check_provenance(
    dic: Any,
    path: str | Path,
    model: str | None,
    tokenizer: str | None,
    widths: Mapping[str, int] | None,
    allow: bool,
) -> None:
    """Refuse (one line) a dictionary of another model; with `allow`, say so once and go on. Every
    site of `widths` (site -> width) the dictionary reads or writes must match in any case."""
    cfg = dic.cfg
    sites = {cfg.hook_name: dic.d_in}
    if getattr(dic, "is_transcoder", False) and cfg.hook_name_out:
        sites[cfg.hook_name_out] = dic.d_out
    for site, width in sites.items():
        if site is not None and widths is not None and not getattr(dic, "multi_site", False):
            check_width(path, site, width, widths.get(site), model)
    problem = foreign(cfg.metadata or {}, model, tokenizer)
    if problem is None:
        return
    if not allow:
        raise ConfigError(
            f"{path}: {problem}; use a dictionary trained on this model, or pass --set {ALLOW}=true to "
            "use it anyway"
        )
    console.print(f"[yellow]note:[/] {path}: {problem} ({ALLOW} = true)", highlight=False, soft_wrap=True)


FINGERPRINT_SAMPLE = 1 << 16  # values hashed per tensor (plus the tensor's exact sum)


def weights_fingerprint(dic: Any) -> str:
    """A short hash of a dictionary's weights: every tensor's name, shape and exact float64 sum,
    and an evenly spaced sample of its values. The feature store records it per dictionary, so
    labels are matched to weights, never to a name another training run reused."""
    import hashlib
    import json

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(dic.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):  # a module's extra state (settings, not weights)
            h.update(f"{name}{json.dumps(tensor, sort_keys=True, default=str)}".encode())
            continue
        t = tensor.detach().to("cpu", torch.float64).flatten()
        h.update(f"{name}{list(tensor.shape)}{float(t.sum())!r}".encode())
        if t.numel() > FINGERPRINT_SAMPLE:
            t = t[torch.linspace(0, t.numel() - 1, FINGERPRINT_SAMPLE).long()]
        h.update(t.float().numpy().tobytes())
    return h.hexdigest()[:16]
