"""Spliced-model metrics: how much next-token loss survives replacing a site by its reconstruction.

For a dictionary reading `in_site` and writing `out_site` (the same site for an SAE; `mlp.hook_in`
-> `hook_mlp_out` for a transcoder, which then replaces the MLP), each token batch is run:
- clean;
- **spliced**: the activation at `out_site` replaced by the reconstruction (for a transcoder,
  `transcoder(mlp_in)` of the same forward pass);
- **spliced + error**: the reconstruction plus the error term (x - x_hat) added back, which must
  give the clean logits exactly (computed in float64, so exact in float32: a wiring check; run
  on every batch, or on the first `error_check_batches`, in which case its CE/KL cover those);
- **zero-ablated** and **mean-ablated**: `out_site` set to 0 or to its mean over the evaluated
  tokens (baselines, computed once per site and shared across a sweep).
Only non-special positions are replaced (BOS/EOS/PAD keep their clean activation when the
cache's policy excludes them, since the dictionary never saw them); the ablations replace the
same positions, so the comparisons are like for like.

CE is mean nats per predicted token over all positions of the stored sequences (position t
predicts token t+1, T-1 predictions per sequence, special tokens included). KL is
KL(clean || spliced) of the next-token distributions, averaged over the same positions.
CE loss recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean) (and the same against mean
ablation): 1 means the splice costs nothing, 0 means it is as bad as deleting the site.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.dictionaries.base import Dictionary
from monosemantic.lm.model import SubjectModel
from monosemantic.utils.progress import progress_bar

Edit = Callable[[Tensor], Tensor]


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Summed cross-entropy (nats) of predicting tokens[:, 1:] from logits[:, :-1]."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None].long().to(logp.device)).sum()


def next_token_kl(clean_logits: Tensor, logits: Tensor) -> Tensor:
    """Summed KL(clean || other) over the predicting positions [:, :-1]."""
    p = F.log_softmax(clean_logits[:, :-1].float(), dim=-1)
    q = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return (p.exp() * (p - q)).sum()


def _where(keep: Tensor, new: Tensor, act: Tensor) -> Tensor:
    return torch.where(keep[..., None].to(act.device), new.to(act.dtype), act)


def reconstruct(dic: Dictionary, x: Tensor, record: dict[str, Tensor] | None = None) -> Tensor:
    """The dictionary's output for activations x [..., d_in], in the dictionary's dtype; `record`,
    if given, receives the `input`, its `codes` and the `output` (for `SpliceModel.run_with_cache`)."""
    x = x.to(dic.dtype)
    f = dic.encode(x)
    y = dic.decode(f, x)
    if record is not None:
        record.update(input=x, codes=f, output=y)
    return y


def splice_edits(
    dic: Dictionary,
    in_site: str,
    out_site: str,
    keep: Tensor,
    with_error: bool = False,
    record: dict[str, Tensor] | None = None,
) -> dict[str, Edit]:
    """`SubjectModel.run` edits that put the dictionary's output at `out_site` (positions in `keep`);
    `record` receives the dictionary's input, codes and output (see `reconstruct`)."""
    if in_site == out_site:

        def sae(act: Tensor) -> Tensor:
            x_hat = reconstruct(dic, act, record)
            if with_error:  # x_hat + (x - x_hat) in float64 == x exactly
                x64 = x_hat.double()
                x_hat = x64 + (act.double() - x64)
            return _where(keep, x_hat, act)

        return {in_site: sae}

    recorded: dict[str, Tensor] = {}

    def remember(act: Tensor) -> Tensor:
        recorded["x"] = act
        return act

    def transcoder(out: Tensor) -> Tensor:
        if "x" not in recorded:
            raise RuntimeError(f"{in_site} was not computed before {out_site}; cannot splice the transcoder")
        y_hat = reconstruct(dic, recorded["x"], record)
        if with_error:
            y64 = y_hat.double()
            y_hat = y64 + (out.double() - y64)
        return _where(keep, y_hat, out)

    return {in_site: remember, out_site: transcoder}


@dataclass
class SpliceSpec:
    """One dictionary to splice: it reads `in_site`, writes `out_site`; `mean` is out_site's mean."""

    dic: Dictionary
    in_site: str
    out_site: str
    mean: Tensor


class SplicedEvaluator:
    """CE/KL of one subject model on fixed token batches, for many dictionaries at once.

    Each batch runs the clean model once, the two ablations once per distinct output site, and
    the two splices once per dictionary, so a sweep costs no redundant clean passes.
    """

    def __init__(
        self,
        model: SubjectModel,
        batches: Sequence[Tensor],
        keeps: Sequence[Tensor],
        error_check_batches: int | None = None,
    ) -> None:
        """`error_check_batches`: run the spliced+error check on only the first N batches (None: all)."""
        if len(batches) != len(keeps) or not batches:
            raise ValueError("SplicedEvaluator needs one keep mask per token batch, and at least one batch")
        self.model, self.batches, self.keeps = model, list(batches), list(keeps)
        self.n_predictions = sum(b.shape[0] * (b.shape[1] - 1) for b in self.batches)
        n_check = (
            len(self.batches) if error_check_batches is None else min(error_check_batches, len(self.batches))
        )
        self.n_check = n_check
        self.n_check_predictions = sum(b.shape[0] * (b.shape[1] - 1) for b in self.batches[:n_check])

    def _run(self, tokens: Tensor, edits: dict[str, Edit] | None = None) -> Tensor:
        with torch.inference_mode():
            logits = self.model.run(tokens.long(), edits=edits).logits
        if logits is None:
            raise RuntimeError(
                f"{self.model.name} returned no logits; spliced metrics need a language-model head"
            )
        return logits

    def evaluate(self, dic: Dictionary, in_site: str, out_site: str, mean: Tensor) -> dict[str, float]:
        """All spliced metrics of one dictionary (see the module docstring)."""
        return self.evaluate_many([SpliceSpec(dic, in_site, out_site, mean)])[0]

    def evaluate_many(self, specs: Sequence[SpliceSpec]) -> list[dict[str, float]]:
        """All spliced metrics of each dictionary in `specs`, in order."""
        sites = {s.out_site: s.mean for s in specs}
        base = {site: {"clean": 0.0, "zero": 0.0, "mean": 0.0} for site in sites}
        sums = [{"ce": 0.0, "ce_err": 0.0, "kl": 0.0, "kl_err": 0.0, "diff": 0.0} for _ in specs]
        with torch.no_grad(), progress_bar(transient=True) as bar:
            task = bar.add_task("spliced CE/KL", total=len(self.batches), unit="batch", info="")
            for i, (tokens, keep) in enumerate(zip(self.batches, self.keeps, strict=True)):
                tokens = tokens.to(self.model.device)
                clean = self._run(tokens)
                ce_clean = next_token_ce(clean, tokens).item()
                for site, mean in sites.items():
                    zero = {site: lambda a, k=keep: _where(k, torch.zeros_like(a), a)}
                    ablate = {site: lambda a, k=keep, m=mean: _where(k, m.to(a.device).expand_as(a), a)}
                    base[site]["clean"] += ce_clean
                    base[site]["zero"] += next_token_ce(self._run(tokens, zero), tokens).item()
                    base[site]["mean"] += next_token_ce(self._run(tokens, ablate), tokens).item()
                for spec, acc in zip(specs, sums, strict=True):
                    for suffix, with_error in (("", False), ("_err", True))[: 2 if i < self.n_check else 1]:
                        edits = splice_edits(spec.dic, spec.in_site, spec.out_site, keep, with_error)
                        logits = self._run(tokens, edits)
                        acc["ce" + suffix] += next_token_ce(logits, tokens).item()
                        acc["kl" + suffix] += next_token_kl(clean, logits).item()
                        if with_error:
                            acc["diff"] = max(
                                acc["diff"], (logits.float() - clean.float()).abs().max().item()
                            )
                bar.advance(task)
        n = self.n_predictions
        results = []
        for spec, acc in zip(specs, sums, strict=True):
            b = {k: v / n for k, v in base[spec.out_site].items()}
            ce = acc["ce"] / n
            results.append(
                {
                    "ce_loss_clean": b["clean"],
                    "ce_loss_zero_ablated": b["zero"],
                    "ce_loss_mean_ablated": b["mean"],
                    "ce_loss_spliced": ce,
                    "ce_loss_increase": ce - b["clean"],
                    "ce_loss_recovered": _recovered(b["zero"], ce, b["clean"]),
                    "ce_loss_recovered_mean_ablation": _recovered(b["mean"], ce, b["clean"]),
                    "kl_spliced": acc["kl"] / n,
                    "ce_loss_spliced_with_error": acc["ce_err"] / max(self.n_check_predictions, 1),
                    "kl_spliced_with_error": acc["kl_err"] / max(self.n_check_predictions, 1),
                    "splice_error_check_max_logit_diff": acc["diff"],
                    "splice_error_check_batches": self.n_check,
                    "n_predictions": n,
                }
            )
        return results


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else math.nan
