"""CE/KL with every MLP replaced at once: a cross-layer transcoder, or a set of per-layer transcoders;
and with every MLP and every attention layer replaced (per-layer transcoders plus one Lorsa per
attention layer: a complete replacement model).

A per-layer splice (`spliced.py`) replaces one MLP and keeps the others clean. A replacement model
for circuits replaces them all, so errors compound through the layers: layer l's transcoder reads
an MLP input that already carries the reconstruction errors of layers < l. This is the number
that says how faithful the replacement model is, and the one that compares a CLT with per-layer
transcoders (CLTs are reported to leave smaller errors because a feature can write to several
layers at once).

Per token batch: the clean model, the model with every replaced MLP's output zeroed (baseline),
and the model with all replacements. Only non-special positions are replaced, as in `spliced.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.config.site import Site
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.splice import Edit, compose, splice_edits, where_kept
from monosemantic.lm.model import SubjectModel
from monosemantic.utils.errors import ConfigError

from .spliced import next_token_ce, next_token_kl, recovered


@dataclass
class MLPReplacement:
    """The dictionaries that replace every MLP at once: one CLT, or one transcoder per layer (in
    layer order). Each is spliced by `dictionaries/splice.py`, as everywhere else."""

    dics: list[Dictionary]

    @classmethod
    def from_clt(cls, clt: Dictionary) -> MLPReplacement:
        return cls([clt])

    @classmethod
    def from_transcoders(cls, dics: Sequence[Dictionary]) -> MLPReplacement:
        return cls(sorted(dics, key=lambda d: d.cfg.site.layer))

    @property
    def out_sites(self) -> list[Site]:
        return [s for d in self.dics for s in d.sites_out]

    def edits(self, keep: Tensor) -> dict[str, Edit]:
        """`SubjectModel.run` edits: every MLP output replaced (kept positions), each layer's
        dictionary reading the MLP input its forward pass computes."""
        return compose(splice_edits(d, keep) for d in self.dics)

    def zero_edits(self, keep: Tensor) -> dict[str, Edit]:
        return {str(s): (lambda a: where_kept(keep, torch.zeros_like(a), a)) for s in self.out_sites}


def all_mlps_replaced(
    model: SubjectModel, batches: Sequence[Tensor], keeps: Sequence[Tensor], rep: MLPReplacement
) -> dict[str, float]:
    """ce_loss_clean / _zero_ablated / _replaced (nats per prediction), KL(clean || replaced), recovered."""
    ce = {"clean": 0.0, "zero": 0.0, "replaced": 0.0}
    kl, n = 0.0, 0
    with torch.inference_mode():
        for tokens, keep in zip(batches, keeps, strict=True):
            tokens = tokens.to(model.device).long()
            clean = model.run(tokens).logits
            zero = model.run(tokens, edits=rep.zero_edits(keep)).logits
            replaced = model.run(tokens, edits=rep.edits(keep)).logits
            ce["clean"] += next_token_ce(clean, tokens).item()
            ce["zero"] += next_token_ce(zero, tokens).item()
            ce["replaced"] += next_token_ce(replaced, tokens).item()
            kl += next_token_kl(clean, replaced).item()
            n += tokens.shape[0] * (tokens.shape[1] - 1)
    n = max(n, 1)
    c = {k: v / n for k, v in ce.items()}
    return {
        "layers_replaced": sorted({s.layer for s in rep.out_sites}),
        "sites_replaced": [str(s) for s in rep.out_sites],
        "ce_loss_clean": c["clean"],
        "ce_loss_zero_ablated": c["zero"],
        "ce_loss_replaced": c["replaced"],
        "ce_loss_increase": c["replaced"] - c["clean"],
        "ce_loss_recovered": recovered(c["zero"], c["replaced"], c["clean"]),
        "kl_replaced": kl / n,
        "n_predictions": n,
    }


def complete_replacement(dics: Sequence[Dictionary], n_layers: int) -> MLPReplacement | None:
    """Per-layer MLP transcoders and Lorsas (`blocks.L.hook_attn_out`) covering every layer of an
    `n_layers` model, one of each per layer (in forward order), or None when they do not."""
    mlp: dict[int, Dictionary] = {}
    attn: dict[int, Dictionary] = {}
    for d in dics:
        out = d.cfg.site_out
        if d.multi_site or d.fitted or not d.is_transcoder or out is None:
            continue
        if out.hook == "hook_mlp_out" and d.cfg.site.hook == "mlp.hook_in" and not d.sequence_level:
            mlp.setdefault(out.layer, d)
        elif out.hook == "hook_attn_out" and d.sequence_level:
            attn.setdefault(out.layer, d)
    layers = range(n_layers)
    if not all(L in mlp and L in attn for L in layers):
        return None
    return MLPReplacement([d for L in layers for d in (attn[L], mlp[L])])


class PerLayerMetrics:
    """FVU and L0 per layer: output layer l's reconstruction; for a CLT the latents of home layer l,
    for a crosscoder its one shared latent space."""

    def __init__(self, clt: Dictionary) -> None:
        from .metrics import ReconstructionMetrics

        self.clt = clt
        self.metrics = [ReconstructionMetrics(clt.n_per_layer, clt.d_layer_out) for _ in range(clt.n_layers)]

    def update(self, y: Tensor, y_hat: Tensor, f: Tensor, keep: Tensor) -> None:
        L = self.clt.n_layers
        ys, yh = (t.reshape(*t.shape[:-1], L, -1) for t in (y, y_hat))
        shared = self.clt.home_sites() is None  # a crosscoder's latents read every site
        fs = None if shared else f.reshape(*f.shape[:-1], L, -1)
        for i, m in enumerate(self.metrics):
            m.update(ys[..., i, :], yh[..., i, :], f if fs is None else fs[..., i, :], keep)

    def compute(self) -> list[dict[str, float]]:
        out = []
        sites = [str(s) for s in self.clt.sites_out]  # b:<site>: model B's (model diffing)
        for i, (layer, m) in enumerate(zip(self.clt.layers, self.metrics, strict=True)):
            r = m.compute()
            row = {"layer": int(layer), "fvu": r["fvu"], "l0": r["l0"], "dead_fraction": r["dead_fraction"]}
            out.append(row | ({"site": sites[i]} if len(sites) == len(self.metrics) else {}))
        return out


def mlp_transcoders(folders: Sequence, device: torch.device) -> dict[int, Dictionary]:
    """Per-layer MLP transcoders (blocks.L.mlp.hook_in -> blocks.L.hook_mlp_out) under `folders`, by layer."""
    from monosemantic.dictionaries.io import find_dictionaries, load_dictionary

    found: dict[int, Dictionary] = {}
    for folder in folders:
        for path in find_dictionaries(folder):
            dic = load_dictionary(path, device=device).eval().requires_grad_(False)
            site, out = dic.cfg.site, dic.cfg.site_out
            if dic.multi_site or not dic.is_transcoder or site is None or site.hook != "mlp.hook_in":
                continue
            if dic.fitted:  # a baseline (the MLP's own neurons) is not a trained transcoder to compare
                continue
            layer = site.layer
            if out.hook != "hook_mlp_out" or out.layer != layer:
                continue
            if layer in found:
                raise ConfigError(
                    f"evaluate.compare_transcoders: two transcoders for layer {layer} under {folder}; "
                    "point at folders with one transcoder per MLP"
                )
            found[layer] = dic
    return found


def clt_spliced_metrics(clt, model, batches, keeps, compare: list[Path] | None) -> dict[str, Any]:
    """A CLT's spliced metrics: every MLP it covers replaced at once; the same for per-layer
    transcoders of those layers from `evaluate.compare_transcoders`, under their folder names."""
    own = all_mlps_replaced(model, batches, keeps, MLPReplacement.from_clt(clt))
    out: dict[str, Any] = {
        "ce_loss_clean": own["ce_loss_clean"],
        "ce_loss_spliced": own["ce_loss_replaced"],
        "ce_loss_recovered": own["ce_loss_recovered"],
        "kl_spliced": own["kl_replaced"],
        "all_mlps_replaced": own,
    }
    if compare:
        sets = mlp_transcoders(compare, clt.device)
        layers = clt.layers
        missing = [v for v in layers if v not in sets]
        if missing:
            raise ConfigError(
                f"evaluate.compare_transcoders has no transcoder for layer(s) {missing}; the CLT covers {layers}"
            )
        rep = MLPReplacement.from_transcoders([sets[v] for v in layers])
        res = all_mlps_replaced(model, batches, keeps, rep)
        res["folders"] = [str(p) for p in compare]
        out["all_mlps_replaced_transcoders"] = res
    return out
