"""Attach capture / edit / stop hooks for one forward pass, and always take them off again.

Hooks are registered in forward order (the order of `site_names()`), and PyTorch runs hooks
on one module in registration order, so an edit upstream is seen by every capture downstream,
and a capture at an edited site records the edited value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from monosemantic.utils.errors import MonosemanticError

from .sites import FamilyLayout, SiteSpec, final_norm_path, parse_site

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


class HookSet:
    """Resolves site specs to modules and registers the hooks one `run` needs."""

    def __init__(self, base: nn.Module, full: nn.Module, layout: FamilyLayout) -> None:
        self.base, self.full, self.layout = base, full, layout
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.acts: dict[str, Tensor] = {}
        self._resid_pre: dict[int, Tensor] = {}

    def module(self, site: str) -> nn.Module:
        kind, layer = parse_site(site)
        if site == "ln_final.hook_normalized":
            return self.full.get_submodule(final_norm_path(self.full, self.layout))
        spec = self.layout.sites[kind]
        return self.base.get_submodule(spec.module.replace("{L}", str(layer)))

    def spec(self, site: str) -> SiteSpec:
        if site == "ln_final.hook_normalized":
            return SiteSpec(self.layout.final_norm, "out")
        return self.layout.sites[parse_site(site)[0]]

    def block(self, layer: int) -> nn.Module:
        return self.base.get_submodule(f"{self.layout.blocks}.{layer}")

    def add(self, site: str, capture: bool, edit: Edit | None) -> None:
        spec = self.spec(site)
        direct_edit = edit if spec.edit_via is None else None
        if spec.side == "out":
            self._out_hook(self.module(site), site, capture, direct_edit)
        else:
            self._in_hook(self.module(site), site, capture, direct_edit)
        if edit is not None and spec.edit_via == "attn_out":
            self._edit_resid_mid(site, edit)

    def _out_hook(self, module: nn.Module, site: str, capture: bool, edit: Edit | None) -> None:
        def hook(_mod: nn.Module, _args: Any, output: Any) -> Any:
            act = _first(output)
            if edit is not None:
                act = _apply(site, edit, act)
                output = _replace_first(output, act)
            if capture:
                self.acts[site] = act
            return output if edit is not None else None

        self.handles.append(module.register_forward_hook(hook))

    def _in_hook(self, module: nn.Module, site: str, capture: bool, edit: Edit | None) -> None:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> Any:
            act = args[0] if args else kwargs["hidden_states"]
            if edit is not None:
                act = _apply(site, edit, act)
                if args:
                    args = (act, *args[1:])
                else:
                    kwargs = {**kwargs, "hidden_states": act}
            if capture:
                self.acts[site] = act
            return (args, kwargs) if edit is not None else None

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

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


@contextmanager
def hooked(
    base: nn.Module,
    full: nn.Module,
    layout: FamilyLayout,
    order: Sequence[str],
    capture: set[str],
    edits: dict[str, Edit],
    stop_at_layer: int | None,
) -> Iterator[HookSet]:
    """Register hooks for the sites in `order` (forward order); remove them however the block exits."""
    hooks = HookSet(base, full, layout)
    try:
        for site in order:
            if site in capture or site in edits:
                hooks.add(site, site in capture, edits.get(site))
        if stop_at_layer is not None:
            hooks.stop_after(stop_at_layer)
        yield hooks
    finally:
        hooks.remove()
