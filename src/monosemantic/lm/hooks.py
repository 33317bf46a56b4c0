"""Attach capture / edit / stop hooks for one forward pass, and always take them off again.

Hooks are registered in forward order (the order of `site_names()`), and PyTorch runs hooks
on one module in registration order, so an edit upstream is seen by every capture downstream,
and a capture at an edited site records the edited value. How a hooked tensor becomes a site's
value (its `view`) is described in `family_sites.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from monosemantic.utils.errors import MonosemanticError

from .attn_scores import take_scores
from .families import Family
from .family_sites import SiteSpec
from .sites import final_norm_path, parse_site, site_suffix

Edit = Callable[[Tensor], Tensor]


class StopForward(Exception):
    """Raised from a hook to end the forward pass early (`stop_at_layer`); caught by `run`."""


def _first(value: Any) -> Tensor:
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, new: Tensor) -> Any:
    return (new, *value[1:]) if isinstance(value, tuple) else new


def _apply(site: str, fn: Edit, act: Tensor) -> Tensor:
    new = fn(act)
    if not isinstance(new, Tensor) or new.shape != act.shape:
        got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
        raise MonosemanticError(
            f"edit at {site!r} returned {got}; it must return a tensor of shape {tuple(act.shape)}"
        )
    return new.to(act.dtype)


# ---- norms: TransformerLens' hook_scale / hook_normalized, and the norm's affine part ----------
def norm_eps(mod: nn.Module) -> float:
    eps = getattr(mod, "variance_epsilon", None)
    return float(eps if eps is not None else mod.eps)


def norm_parts(kind: str, mod: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(scale [..., 1], x_hat) of a norm's input x, computed as the norm computes them: LayerNorm
    as TransformerLens does (centre, then divide by sqrt(var + eps)); RMSNorm as transformers does
    (in float32: x * rsqrt(mean(x^2) + eps)), whose scale is reported as sqrt(mean(x^2) + eps)."""
    eps = norm_eps(mod)
    if kind == "layer":
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        xc = xf - xf.mean(-1, keepdim=True)
        scale = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        return scale, (xc / scale).to(x.dtype)
    xf = x.to(torch.float32)
    var = xf.pow(2).mean(-1, keepdim=True) + eps
    return var.sqrt(), (xf * torch.rsqrt(var)).to(x.dtype)


def norm_affine(kind: str, mod: nn.Module, x_hat: Tensor, dtype: torch.dtype, bias: bool = True) -> Tensor:
    """The norm's output from x_hat: weight (and bias) applied as the family's norm applies them."""
    if kind == "layer":
        out = x_hat * mod.weight + mod.bias if bias and mod.bias is not None else x_hat * mod.weight
    elif kind == "rms1p":
        out = x_hat.float() * (1.0 + mod.weight.float())
    else:
        out = mod.weight * x_hat.to(mod.weight.dtype)
    return out.to(dtype)


class HookSet:
    """Resolves site specs to modules and registers the hooks one `run` needs."""

    def __init__(self, base: nn.Module, full: nn.Module, family: Family, shape: tuple[int, int]) -> None:
        self.base, self.full, self.family, self.layout = base, full, family, family.layout
        self.config = full.config
        self.shape = shape  # (B, T) of this pass's input ids
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.acts: dict[str, Tensor] = {}
        self._resid_pre: dict[int, Tensor] = {}
        self._stash: dict[str, Tensor] = {}
        c = self.config
        self.n_heads = int(getattr(c, "num_attention_heads", 1) or 1)
        self.head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // self.n_heads)
        self.n_kv = int(getattr(c, "num_key_value_heads", None) or self.n_heads)

    def spec(self, site: str) -> SiteSpec:
        if site.startswith("ln_final."):
            return self.layout.final_sites()[site]
        return self.layout.sites[site_suffix(site)]

    def module(self, site: str) -> nn.Module:
        if site.startswith("ln_final."):
            return self.full.get_submodule(final_norm_path(self.full, self.layout))
        layer = parse_site(site)[1]
        return self.base.get_submodule(self.spec(site).module.replace("{L}", str(layer)))

    def block(self, layer: int) -> nn.Module:
        return self.base.get_submodule(f"{self.layout.blocks}.{layer}")

    def add(self, site: str, capture: bool, edit: Edit | None) -> None:
        spec = self.spec(site)
        if edit is not None and spec.capture_only:
            raise MonosemanticError(f"site {site!r} can be captured but not edited; edit another site")
        if spec.view == "norm_hat":
            self._norm_hat(site, capture, edit)
            return
        direct_edit = edit if spec.edit_via is None else None
        if spec.side == "out":
            self._out_hook(self.module(site), site, spec.view, capture, direct_edit)
        else:
            self._in_hook(self.module(site), site, spec.view, capture, direct_edit)
        if edit is not None and spec.edit_via == "attn_out":
            self._edit_resid_mid(site, edit)

    # ---- views: the hooked tensor -> the site's value, and an edited value written back --------
    def _read(self, view: str | None, t: Tensor, output: Any = None, mod: nn.Module | None = None) -> Tensor:
        if view is None:
            return t
        if view == "norm_scale":
            return norm_parts(self.family.norm, mod, t)[0]
        if view == "pattern":
            if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                raise MonosemanticError(
                    "attn.hook_pattern needs eager attention; this attention returned none"
                )
            return output[1]
        if view == "scores":
            scores = take_scores(mod)
            if scores is None:
                raise MonosemanticError(
                    "attn.hook_attn_scores needs the scores-keeping eager attention (lm/attn_scores.py); "
                    "capture it with SubjectModel.run"
                )
            return scores
        if view == "router":
            return t.view(*self.shape, t.shape[-1])
        return self._slice(view, t)

    def _slice(self, view: str, t: Tensor) -> Tensor:
        B, T = t.shape[:2]
        hd, H, kv = self.head_dim, self.n_heads, self.n_kv
        if view == "heads":
            return t.view(B, T, -1, hd)
        if view.startswith("half:"):
            return t.chunk(2, dim=-1)[int(view[-1])]
        _, layout, which = view.split(":")
        i = "qkv".index(which)
        if layout == "separate":
            return t.view(B, T, -1, hd)
        if layout == "neox":  # per head: (q, k, v)
            return t.view(B, T, H, 3 * hd)[..., i * hd : (i + 1) * hd]
        widths = [H * hd, kv * hd, kv * hd] if layout == "phi3" else [H * hd] * 3
        start = sum(widths[:i])
        return t[..., start : start + widths[i]].view(B, T, -1, hd)

    def _write(self, view: str | None, t: Tensor, new: Tensor) -> Tensor:
        if view is None:
            return new
        if view == "heads" or view.startswith("qkv:separate"):
            return new.reshape(t.shape)
        out = t.clone()
        self._slice(view, out).copy_(new)
        return out

    # ---- hooks ---------------------------------------------------------------------------------
    def _out_hook(
        self, module: nn.Module, site: str, view: str | None, capture: bool, edit: Edit | None
    ) -> None:
        def hook(mod: nn.Module, _args: Any, output: Any) -> Any:
            raw = _first(output)
            act = self._read(view, raw, output, mod)
            if edit is not None:
                act = _apply(site, edit, act)
                output = _replace_first(output, self._write(view, raw, act))
            if capture:
                self.acts[site] = act
            return output if edit is not None else None

        self.handles.append(module.register_forward_hook(hook))

    def _in_hook(
        self, module: nn.Module, site: str, view: str | None, capture: bool, edit: Edit | None
    ) -> None:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
            raw = args[0] if args else kwargs["hidden_states"]
            act = self._read(view, raw, None, mod)
            if edit is not None:
                act = _apply(site, edit, act)
                new = self._write(view, raw, act)
                if args:
                    args = (new, *args[1:])
                else:
                    kwargs = {**kwargs, "hidden_states": new}
            if capture:
                self.acts[site] = act
            return (args, kwargs) if edit is not None else None

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _norm_hat(self, site: str, capture: bool, edit: Edit | None) -> None:
        """x_hat from the norm's input; an edit x_hat -> x_hat' moves the norm's output by the weight
        times (x_hat' - x_hat) (so an edit that changes nothing changes no bit of the output)."""
        module, kind = self.module(site), self.family.norm

        def pre(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            x_hat = norm_parts(kind, mod, args[0] if args else kwargs["hidden_states"])[1]
            if edit is None:
                if capture:
                    self.acts[site] = x_hat
            else:
                self._stash[site] = x_hat

        def post(mod: nn.Module, _args: Any, output: Any) -> Any:
            before = self._stash.pop(site)
            x_hat = _apply(site, edit, before)
            if capture:
                self.acts[site] = x_hat
            out = _first(output)
            return _replace_first(output, out + norm_affine(kind, mod, x_hat - before, out.dtype, bias=False))

        self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        if edit is not None:
            self.handles.append(module.register_forward_hook(post))

    def _edit_resid_mid(self, site: str, edit: Edit) -> None:
        """resid_mid = resid_pre + attn_out; move it by adding the edit's delta to attn_out."""
        _, layer = parse_site(site)
        assert layer is not None

        def remember(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
            self._resid_pre[layer] = args[0] if args else kwargs["hidden_states"]

        def shift(_mod: nn.Module, _args: Any, output: Any) -> Any:
            attn = _first(output)
            mid = self._resid_pre[layer] + attn
            return _replace_first(output, attn + (_apply(site, edit, mid) - mid))

        attn_module = self.module(f"blocks.{layer}.hook_attn_out")
        self.handles.append(self.block(layer).register_forward_pre_hook(remember, with_kwargs=True))
        self.handles.append(attn_module.register_forward_hook(shift))

    def stop_after(self, n_blocks: int) -> None:
        def stop(*_: Any) -> None:
            raise StopForward

        if n_blocks == 0:
            self.handles.append(self.block(0).register_forward_pre_hook(stop, prepend=True))
        else:
            self.handles.append(self.block(n_blocks - 1).register_forward_hook(stop))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._resid_pre.clear()
        self._stash.clear()


@contextmanager
def hooked(
    base: nn.Module,
    full: nn.Module,
    family: Family,
    order: Sequence[str],
    capture: set[str],
    edits: dict[str, Edit],
    stop_at_layer: int | None,
    shape: tuple[int, int],
) -> Iterator[HookSet]:
    """Register hooks for the sites in `order` (forward order); remove them however the block exits."""
    hooks = HookSet(base, full, family, shape)
    try:
        for site in order:
            if site in capture or site in edits:
                hooks.add(site, site in capture, edits.get(site))
        if stop_at_layer is not None:
            hooks.stop_after(stop_at_layer)
        yield hooks
    finally:
        hooks.remove()
