"""Steering edits: a dictionary feature added to, set, scaled or ablated on the subject model's sites.

The modes are the ones circuit interventions use (`dictionaries/interventions.py`); `clamp` is
accepted as the older name of `set`. A dictionary decodes linearly (`y = f W_dec + b_dec (+ x
W_skip)`), so changing feature `i` by `d` changes its reconstruction by exactly `d * W_dec[i]`.
Editing the activation itself by that amount (instead of replacing it with the reconstruction)
keeps the dictionary's error term, so the edit changes nothing but the feature (`set` to the
current value is the identity): `x + (f_i' - f_i) * W_dec[i]` with `f_i'` the edited value (for
`add`, just `x + value * W_dec[i]`).

A transcoder reads `hook_name` and writes `hook_name_out`: `f_i` is computed from the input site
in the same forward pass and the edit lands on the output site. Every position is edited except a
leading BOS, on which dictionaries are not trained (its activations are outliers).

Values: a number is a raw activation value; `"4x"` is 4 times the feature's max activation over
the analysed tokens (the feature store's `max_activation`), so one value means the same push for
features of different scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.config.steer import Value, parse_value, parse_values
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.interventions import canonical_mode, edit_latent
from monosemantic.utils.errors import MonosemanticError

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel

__all__ = [
    "Value", "parse_value", "parse_values", "steering_edits", "bos_aware_edits", "check_widths",
    "check_steering_value", "prompt_ids",
]  # fmt: skip
Edits = dict[str, Callable[[Tensor], Tensor]]

# Steering values are in units of the feature's activation (tens at most in practice); beyond this the
# edit only overflows the residual stream and the "steered" text is empty or garbage.
MAX_STEERING_VALUE = 1e6


def check_steering_value(value: float, mode: str) -> None:
    """Refuse a value that cannot steer: NaN/inf, or a magnitude that overflows the model."""
    if canonical_mode(mode) == "ablate":
        return
    if not math.isfinite(value):
        raise MonosemanticError(f"--value {value} is not a finite number; give a value such as 10 or -5")
    if abs(value) > MAX_STEERING_VALUE:
        raise MonosemanticError(
            f"--value {value:g} is absurdly large (|value| > {MAX_STEERING_VALUE:g}); steering values are "
            "in units of the feature's activation, typically 1 to 100"
        )


def steering_edits(
    dic: Dictionary, feature: int, mode: str, value: float | Tensor = 0.0, skip_first: bool = False
) -> Edits:
    """`model.run` edits that steer `feature` of `dic` (see the module docstring for the maths).

    `value` may be a tensor broadcastable to the positions `[B, T]` (clamp to per-token values)."""
    mode = canonical_mode(mode)
    if not 0 <= feature < dic.d_sae:
        raise MonosemanticError(
            f"feature {feature} is out of range; this dictionary has features 0..{dic.d_sae - 1}"
        )
    if dic.multi_site:
        raise MonosemanticError(
            f"steer edits a single-site dictionary's feature; a {dic.architecture} writes several sites "
            "(pick a per-layer SAE or transcoder)"
        )
    hook_name = dic.cfg.hook_name
    hook_name_out = dic.cfg.hook_name_out if dic.is_transcoder else hook_name
    if hook_name is None:
        raise MonosemanticError("the dictionary names no hook_name; add metadata.hook_name to its cfg.json")
    direction = dic.W_dec[feature].detach()
    seen: dict[str, Tensor] = {}

    def activation(x: Tensor) -> Tensor:
        with torch.no_grad():
            return dic.encode(x.to(dic.device, dic.dtype))[..., feature]

    def edit_out(y: Tensor) -> Tensor:
        if mode == "add":
            delta = torch.as_tensor(value, dtype=torch.float32, device=y.device)
            delta = delta.expand(y.shape[:-1]) if delta.dim() == 0 else delta
        else:
            f = activation(seen.pop("x") if dic.is_transcoder else y).to(y.device, torch.float32)
            delta = edit_latent(f, mode, value) - f
        delta = delta.clone()
        if skip_first:
            delta[..., 0] = 0.0
        return y + (delta.unsqueeze(-1) * direction.to(y.device, torch.float32)).to(y.dtype)

    if not dic.is_transcoder or mode == "add":
        return {hook_name_out: edit_out}

    def record_in(x: Tensor) -> Tensor:
        seen["x"] = x
        return x

    return {hook_name: record_in, hook_name_out: edit_out}


def check_widths(dic: Dictionary, model: SubjectModel, path: Path | str) -> None:
    """The dictionary must read and write the widths the model has at its sites."""
    hook_name = dic.cfg.hook_name
    if hook_name is None:
        raise MonosemanticError(f"{path} names no hook_name; add metadata.hook_name to its cfg.json")
    hook_name_out = dic.cfg.hook_name_out if dic.is_transcoder else hook_name
    model.check_sites([hook_name, hook_name_out])
    for site, width in ((hook_name, dic.d_in), (hook_name_out, dic.d_out)):
        have = int(model.site_width(site))
        if have != width:
            raise MonosemanticError(
                f"{path} has width {width} at {site}, but {model.name} has width {have} there; "
                "steer with a dictionary trained on this model (or set model.name to its model)"
            )


def prompt_ids(model: SubjectModel, prompt: str, prepend_bos: bool = True) -> Tensor:
    """The prompt's token ids as harvest saw them: a BOS first when the dictionary was trained with one."""
    tok = model.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id
    if prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if not ids:
        raise MonosemanticError("the prompt is empty; pass --prompt TEXT")
    return torch.tensor(ids, dtype=torch.long)


def chat_prompt_ids(
    model: SubjectModel,
    chat: str | list,
    template: str | Path | None,
    prepend_bos: bool = True,
    files: bool = True,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """A chat prompt's token ids, rendered with the generation prompt (`corpus.chat_prompt.chat_prompt`,
    as `circuit --chat` renders it), and its turns as runs of positions ({role, start, end})."""
    from monosemantic.corpus.chat_prompt import chat_prompt, parse_chat, turns

    ids, roles = chat_prompt(model.tokenizer, parse_chat(chat, files=files), template, prepend_bos)
    return torch.tensor(ids, dtype=torch.long), turns(roles)


def bos_aware_edits(
    model: SubjectModel, dic: Dictionary, ids: Tensor, feature: int, mode: str, value: float
) -> Callable[[int], Edits]:
    """Steering edits as a function of the first position a forward covers: the BOS is position 0,
    and only a forward starting there covers it (with a key/value cache, only the first)."""
    prepend = bool((dic.cfg.metadata or {}).get("prepend_bos", True))
    skip = (
        prepend and model.tokenizer.bos_token_id is not None and int(ids[0]) == model.tokenizer.bos_token_id
    )
    model.check_sites(list(steering_edits(dic, feature, mode, value)))
    return lambda start: steering_edits(dic, feature, mode, value, skip_first=skip and start == 0)
