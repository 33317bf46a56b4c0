"""`monosemantic steer`: generate with one feature edited (added to, set, scaled or ablated),
beside the plain text. The modes are the ones circuit interventions use
(`dictionaries/interventions.py`); `clamp` is accepted as the older name of `set`.

A dictionary decodes linearly (`y = f W_dec + b_dec (+ x W_skip)`), so changing feature `i` by
`d` changes its reconstruction by exactly `d * W_dec[i]`. Editing the activation itself by that
amount (instead of replacing it with the reconstruction) keeps the dictionary's error term, so
the edit changes nothing but the feature (`set` to the current value is the identity):
`x + (f_i' - f_i) * W_dec[i]` with `f_i'` the edited value (for `add`, just `x + value * W_dec[i]`).

A transcoder reads `hook_name` and writes `hook_name_out`: `f_i` is computed from the input
site in the same forward pass and the edit lands on the output site. Every position is edited
except a leading BOS, on which dictionaries are not trained (its activations are outliers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.config.ranges import NonNegativeInt, check_argument
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.interventions import MODES, canonical_mode, edit_latent, next_token
from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
from monosemantic.dictionaries.provenance import check_provenance
from monosemantic.lm.tokenizer import tokenizer_fingerprint
from monosemantic.utils.errors import ConfigError, MonosemanticError
from monosemantic.utils.torch_utils import resolve_device

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel

__all__ = ["MODES", "steering_edits", "generate", "steer"]
Edits = dict[str, Callable[[Tensor], Tensor]]


def dictionary_path(cfg: Config) -> Path:
    """`[steer].dictionary`, else the single checkpoint under `[analyze].dictionary` / `[train].out`."""
    base = cfg.steer.dictionary or cfg.analyze.dictionary or cfg.train.out
    found = find_dictionaries(base)
    if len(found) > 1:
        names = ", ".join(str(p) for p in found[:8])
        raise MonosemanticError(
            f"{base} holds {len(found)} dictionaries; pick one with --set steer.dictionary=PATH ({names})"
        )
    return found[0]


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


def check_widths(dic: Dictionary, model: SubjectModel, path: Path) -> None:
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


def _max_context(model: SubjectModel) -> int:
    c = model.hf.config
    return int(getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None) or 1024)


@torch.no_grad()
def generate(
    model: SubjectModel,
    ids: Tensor,
    max_new_tokens: int,
    edits: Edits | Callable[[int], Edits | None] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    use_cache: bool = True,
    on_token: Callable[[int], None] | None = None,
) -> Tensor:
    """Continue `ids` [T] token by token (greedy, or sampled at `temperature` with a seeded
    generator), applying `edits` on every forward; stops at EOS. Returns the new tokens.

    With `use_cache` the prompt runs once and each new token reuses the key/value cache, so a
    step costs one position, not the whole sequence; the steered positions are the same, because
    an edit at position t only changes what t and later positions compute. `edits` may be a
    function of the first position a forward covers (`steer` uses it to leave a leading BOS
    alone). Past the model's context, the window slides and is recomputed each step.
    `on_token` sees each new token id as it is chosen (the server streams them)."""
    edits_at = edits if callable(edits) else (lambda start: edits)
    gen = torch.Generator().manual_seed(int(seed))
    eos = model.tokenizer.eos_token_id
    ctx = _max_context(model)
    seq = ids.clone()
    new: list[int] = []
    past = None
    for _ in range(max_new_tokens):
        if use_cache and seq.numel() <= ctx:
            start = 0 if past is None else seq.numel() - 1
            out = model.run(
                seq[start:].unsqueeze(0), edits=edits_at(start), past_key_values=past, use_cache=True
            )
            past = out.past_key_values
        else:
            start = max(seq.numel() - ctx, 0)
            out = model.run(seq[start:].unsqueeze(0), edits=edits_at(start))
        nxt = next_token(out.logits[0, -1], temperature, gen)
        if eos is not None and nxt == eos:
            break
        new.append(nxt)
        if on_token is not None:
            on_token(nxt)
        seq = torch.cat([seq, torch.tensor([nxt], dtype=seq.dtype)])
    return torch.tensor(new, dtype=torch.long)


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


def prompt_ids(model: SubjectModel, prompt: str, prepend_bos: bool = True) -> Tensor:
    tok = model.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id
    if prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if not ids:
        raise MonosemanticError("the prompt is empty; pass --prompt TEXT")
    return torch.tensor(ids, dtype=torch.long)


# Steering values are in units of the feature's activation (tens at most in practice); beyond this the
# edit only overflows the residual stream and the "steered" text is empty or garbage.
MAX_STEERING_VALUE = 1e6


def check_steering_value(value: float, mode: str) -> None:
    """Refuse a value that cannot steer: NaN/inf, or a magnitude that overflows the model."""
    if mode == "ablate":
        return
    if not math.isfinite(value):
        raise MonosemanticError(f"--value {value} is not a finite number; give a value such as 10 or -5")
    if abs(value) > MAX_STEERING_VALUE:
        raise MonosemanticError(
            f"--value {value:g} is absurdly large (|value| > {MAX_STEERING_VALUE:g}); steering values are "
            "in units of the feature's activation, typically 1 to 100"
        )


def steer(
    cfg: ConfigLike, feature: int, value: float, prompt: str | None = None, chat: str | list | None = None
) -> dict[str, Any]:
    """Generate from `prompt` (or from a chat prompt, `chat`, rendered with the chat template and
    the generation prompt) with and without steering `feature`; print both side by side."""
    from monosemantic.corpus.chat_prompt import parse_chat
    from monosemantic.dictionaries.releases.family import check_model_family

    cfg = as_config(cfg)
    feature = check_argument("feature", feature, NonNegativeInt)
    from monosemantic.lm.model import load_model

    s = cfg.steer
    if (prompt is None) == (chat is None):
        raise ConfigError("steer takes a prompt: pass --prompt TEXT or --chat CONVERSATION (one of them)")
    messages = parse_chat(chat) if chat is not None else None  # a malformed chat fails before any loading
    check_steering_value(value, s.mode)
    device = resolve_device(s.device)
    path = dictionary_path(cfg)
    dic = load_dictionary(path, device=device).eval()
    if not 0 <= feature < dic.d_sae:
        raise MonosemanticError(
            f"feature {feature} is out of range; {path.name} has features 0..{dic.d_sae - 1}"
        )
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, device=device, revision=cfg.model.revision)
    if model.is_encoder or not model.has_head:
        raise MonosemanticError(
            f"steer generates text, but {cfg.model.name} is an encoder ({model.family}) without a causal "
            "language-model head; set model.name to a causal LM (gpt2, pythia, llama, 'storyworld', ...)"
        )
    check_model_family(dic.cfg.metadata, model, str(path))
    check_widths(dic, model, path)
    check_provenance(
        dic, path, cfg.model.name, tokenizer_fingerprint(model.tokenizer), None, cfg.model.allow_foreign_model
    )
    prepend = bool((dic.cfg.metadata or {}).get("prepend_bos", True))
    turns: list[dict[str, Any]] | None = None
    if messages is not None:
        ids, turns = chat_prompt_ids(model, messages, cfg.data.chat_template, prepend)
        prompt = model.tokenizer.decode(ids[1:] if prepend else ids)  # the rendered conversation
    else:
        ids = prompt_ids(model, str(prompt), prepend)
    skip_first = prepend and ids[0].item() == model.tokenizer.bos_token_id
    model.check_sites(list(steering_edits(dic, feature, s.mode, value)))

    def edits(start: int) -> Edits:  # the BOS is position 0: only the first forward covers it
        return steering_edits(dic, feature, s.mode, value, skip_first=skip_first and start == 0)

    seed = int(s.seed or 0)
    plain = generate(model, ids, s.max_new_tokens, None, s.temperature, seed)
    steered = generate(model, ids, s.max_new_tokens, edits, s.temperature, seed)
    decode = model.tokenizer.decode
    out = {
        "dictionary": str(path),
        "site": dic.cfg.hook_name_out if dic.is_transcoder else dic.cfg.hook_name,
        "feature": feature,
        "mode": s.mode,
        "value": None if s.mode == "ablate" else value,
        "prompt": prompt,
        "unsteered": decode(plain.tolist()),
        "steered": decode(steered.tolist()),
        "unsteered_ids": plain.tolist(),
        "steered_ids": steered.tolist(),
    }
    if messages is not None:
        out |= {"chat": messages, "turns": turns}
    _print(out)
    return out


def _print(out: dict[str, Any]) -> None:
    """The two generations side by side, on stdout (they are the verb's result, not progress)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    what = f"{out['mode']} feature {out['feature']}" + (
        "" if out["value"] is None else f" = {out['value']:g}"
    )
    table = Table(title=f"steering {what} at {out['site']}", show_lines=True, expand=True)
    table.add_column("unsteered", ratio=1)
    table.add_column(f"steered ({what})", ratio=1)
    cell = lambda text: Text(out["prompt"], style="dim") + Text(text, style="bold")  # noqa: E731
    table.add_row(cell(out["unsteered"]), cell(out["steered"]))
    Console().print(table)
