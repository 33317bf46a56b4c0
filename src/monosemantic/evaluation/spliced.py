"""Spliced-model metrics: how much next-token loss survives replacing a site by its reconstruction.

For a dictionary reading `hook_name` and writing `hook_name_out` (the same site for an SAE;
`mlp.hook_in` -> `hook_mlp_out` for a transcoder, which then replaces the MLP), each token batch is
run (the splice is `dictionaries/splice.py`'s):
- clean;
- **spliced**: the activation at `hook_name_out` replaced by the reconstruction (for a transcoder,
  `transcoder(mlp_in)` of the same forward pass);
- **spliced + error**: the reconstruction plus the error term (x - x_hat) added back, which must
  give the clean logits exactly (computed in float64, so exact in float32: a wiring check; run
  on every batch, or on the first `error_check_batches`, in which case its CE/KL cover those);
- **zero-ablated** and **mean-ablated**: `hook_name_out` set to 0 or to its mean over the evaluated
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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.splice import Edit, splice_edits, where_kept
from monosemantic.lm.model import SubjectModel
from monosemantic.utils.progress import progress_bar

__all__ = ["Edit", "SplicedEvaluator", "SpliceSpec", "next_token_ce", "next_token_kl", "recovered"]


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Summed cross-entropy (nats) of predicting tokens[:, 1:] from logits[:, :-1]."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None].long().to(logp.device)).sum()


def next_token_kl(clean_logits: Tensor, logits: Tensor) -> Tensor:
    """Summed KL(clean || other) over the predicting positions [:, :-1]."""
    p = F.log_softmax(clean_logits[:, :-1].float(), dim=-1)
    q = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return (p.exp() * (p - q)).sum()


@dataclass
class SpliceSpec:
    """One dictionary to splice (it reads and writes the sites its cfg names); `mean` is the mean
    activation at the site it writes, `hook_name_out` (for the mean ablation)."""

    dic: Dictionary
    mean: Tensor

    @property
    def hook_name_out(self) -> str:
        return str(self.dic.cfg.site_out)


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

    def evaluate(self, dic: Dictionary, mean: Tensor) -> dict[str, float]:
        """All spliced metrics of one dictionary (see the module docstring)."""
        return self.evaluate_many([SpliceSpec(dic, mean)])[0]

    def evaluate_many(self, specs: Sequence[SpliceSpec]) -> list[dict[str, float]]:
        """All spliced metrics of each dictionary in `specs`, in order."""
        sites = {s.hook_name_out: s.mean for s in specs}
        base = {site: {"clean": 0.0, "zero": 0.0, "mean": 0.0} for site in sites}
        sums = [{"ce": 0.0, "ce_err": 0.0, "kl": 0.0, "kl_err": 0.0, "diff": 0.0} for _ in specs]
        with torch.no_grad(), progress_bar(transient=True) as bar:
            task = bar.add_task("spliced CE/KL", total=len(self.batches), unit="batch", info="")
            for i, (tokens, keep) in enumerate(zip(self.batches, self.keeps, strict=True)):
                tokens = tokens.to(self.model.device)
                clean = self._run(tokens)
                ce_clean = next_token_ce(clean, tokens).item()
                for site, mean in sites.items():
                    zero = {site: lambda a, k=keep: where_kept(k, torch.zeros_like(a), a)}
                    ablate = {site: lambda a, k=keep, m=mean: where_kept(k, m.to(a.device).expand_as(a), a)}
                    base[site]["clean"] += ce_clean
                    base[site]["zero"] += next_token_ce(self._run(tokens, zero), tokens).item()
                    base[site]["mean"] += next_token_ce(self._run(tokens, ablate), tokens).item()
                for spec, acc in zip(specs, sums, strict=True):
                    for suffix, with_error in (("", False), ("_err", True))[: 2 if i < self.n_check else 1]:
                        edits = splice_edits(spec.dic, keep, add_error=with_error)
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
            b = {k: v / n for k, v in base[spec.hook_name_out].items()}
            ce = acc["ce"] / n
            results.append(
                {
                    "ce_loss_clean": b["clean"],
                    "ce_loss_zero_ablated": b["zero"],
                    "ce_loss_mean_ablated": b["mean"],
                    "ce_loss_spliced": ce,
                    "ce_loss_increase": ce - b["clean"],
                    "ce_loss_recovered": recovered(b["zero"], ce, b["clean"]),
                    "ce_loss_recovered_mean_ablation": recovered(b["mean"], ce, b["clean"]),
                    "kl_spliced": acc["kl"] / n,
                    "ce_loss_spliced_with_error": acc["ce_err"] / max(self.n_check_predictions, 1),
                    "kl_spliced_with_error": acc["kl_err"] / max(self.n_check_predictions, 1),
                    "splice_error_check_max_logit_diff": acc["diff"],
                    "splice_error_check_batches": self.n_check,
                    "n_predictions": n,
                }
            )
        return results


def recovered(ablated: float, spliced: float, clean: float) -> float:
    """(ablated - spliced) / (ablated - clean): 1 when splicing costs nothing, 0 when as bad as ablating."""
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else math.nan
