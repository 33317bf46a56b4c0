"""Splicing: the one way a dictionary replaces what the model computes at the sites it writes.

`splice_edits(dic, keep)` gives the edits `SubjectModel.run` applies as activations flow: at each
site the dictionary reads, its latents are encoded from the activations of that forward pass
(`encode_site`); at each site it writes, the activation is replaced by the reconstruction
(`decode_site`, from the latents of that site and the earlier ones), at the positions in `keep`.
An SAE reads and writes one site; a transcoder reads `hook_name` and writes `hook_name_out`; a
cross-layer transcoder reads every layer's MLP input and writes every MLP output, so all the MLPs
it covers are replaced at once and each layer reads an input that carries the earlier layers'
errors. Spliced CE/KL (`evaluation/spliced.py`), every-MLP replacement (`evaluation/replace_all.py`)
and `SpliceModel` (`circuits/splice.py`) all use it; the replacement model of circuit attribution
(`circuits/replacement.py`) is a linearised forward pass of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

from .base import Dictionary

Edit = Callable[[Tensor], Tensor]


def where_kept(keep: Tensor, new: Tensor, act: Tensor) -> Tensor:
    """`new` at the positions in `keep` [B, T], the activation `act` elsewhere (in act's dtype)."""
    return torch.where(keep[..., None].to(act.device), new.to(act.dtype), act)


def with_error(y_hat: Tensor, act: Tensor) -> Tensor:
    """y_hat + (act - y_hat) in float64, which is `act` exactly in float32: the wiring check."""
    y64 = y_hat.double()
    return y64 + (act.double() - y64)


def splice_edits(
    dic: Dictionary,
    keep: Tensor,
    add_error: bool = False,
    record: dict[str, Tensor] | None = None,
) -> dict[str, Edit]:
    """`SubjectModel.run` edits that put the dictionary's reconstruction at every site it writes
    (positions in `keep`). `add_error` adds the error term back (see `with_error`); `record`
    receives its `input`, latents (`codes`) and `output`, each concatenated over its sites."""
    ins = [str(s) for s in dic.sites_in]
    outs = [str(s) for s in dic.sites_out]
    if not ins:
        raise MonosemanticError("the dictionary names no hook_name; add metadata.hook_name to its cfg.json")
    if len(ins) > 1 and not dic.causal:
        raise MonosemanticError(
            f"a {dic.architecture} reads later sites to encode earlier ones, so it cannot be spliced into a "
            "forward pass; splice SAEs, transcoders or a cross-layer transcoder"
        )
    seen: dict[int, Tensor] = {}  # input site -> its activations, in the dictionary's dtype
    codes: dict[int, Tensor] = {}  # input site -> its latents

    def read(i: int, act: Tensor) -> None:
        seen[i] = act.to(dic.dtype)
        codes[i] = dic.encode_site(i, seen[i])

    def write(j: int, act: Tensor) -> Tensor:
        missing = [ins[s] for s in range(j + 1) if s not in codes]
        if missing:
            raise MonosemanticError(
                f"{missing[0]} was not computed before {outs[j]}; cannot splice {dic.architecture}"
            )
        y_hat = dic.decode_site(j, [codes[s] for s in range(j + 1)], seen[j])
        if record is not None:
            _record(record, j, len(outs), seen, codes, y_hat)
        return where_kept(keep, with_error(y_hat, act) if add_error else y_hat, act)

    edits: dict[str, Edit] = {}
    for i, site in enumerate(ins):

        def on_input(act: Tensor, i: int = i) -> Tensor:
            read(i, act)
            return act

        edits[site] = on_input
    for j, site in enumerate(outs):
        prev = edits.get(site)  # an SAE reads and writes the same site: encode, then replace

        def on_output(act: Tensor, j: int = j, prev: Edit | None = prev) -> Tensor:
            if prev is not None:
                prev(act)
            return write(j, act)

        edits[site] = on_output
    return edits


def _record(
    record: dict[str, Tensor],
    j: int,
    n: int,
    seen: dict[int, Tensor],
    codes: dict[int, Tensor],
    y_hat: Tensor,
) -> None:
    """What `SpliceModel.run_with_cache` shows: inputs, latents and outputs concatenated over sites."""
    outputs = record.setdefault("_outputs", {})
    outputs[j] = y_hat
    if j < n - 1:
        return
    del record["_outputs"]

    def cat(parts: list[Tensor]) -> Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    record.update(
        input=cat([seen[i] for i in range(n)]),
        codes=cat([codes[i] for i in range(n)]),
        output=cat([outputs[i] for i in range(n)]),
    )


def compose(edit_sets: Iterable[dict[str, Edit]]) -> dict[str, Edit]:
    """Several dictionaries' edits in one set: where two act on one site they run in order."""
    out: dict[str, Edit] = {}
    for edits in edit_sets:
        for site, fn in edits.items():
            prev = out.get(site)
            out[site] = fn if prev is None else (lambda a, f=fn, g=prev: f(g(a)))
    return out
