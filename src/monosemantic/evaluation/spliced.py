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

CE is mean nats per predicted token, KL is KL(clean || spliced) of the next-token distributions
averaged over the same predictions. Two conventions (`evaluate.ce_convention`, named in every
result as `ce_convention`):
- "monosemantic" (default): every prediction of the stored sequences counts (position t predicts
  token t+1, T-1 per sequence, special tokens included), and the splice and both ablations replace
  only non-special positions;
- "saelens" (SAELens 6 `run_evals`, `get_recons_loss`): only predictions made at non-special
  positions count (KL also at the last position, which predicts nothing CE can score), and the
  zero/mean ablations replace every position (the splice still replaces the non-special ones).
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

__all__ = [
    "CONVENTIONS", "Edit", "SplicedEvaluator", "SpliceSpec", "ce_per_sequence", "kl_per_sequence",
    "next_token_ce", "next_token_kl", "recovered",
]  # fmt: skip
CONVENTIONS = ("monosemantic", "saelens")


def ce_per_sequence(logits: Tensor, tokens: Tensor, counted: Tensor | None = None) -> Tensor:
    """Summed cross-entropy (nats) of predicting tokens[:, 1:] from logits[:, :-1], per sequence
    [B] (`counted` [B, T-1]: which predictions count; None: all)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    ce = -logp.gather(-1, tokens[:, 1:, None].long().to(logp.device))[..., 0]
    return (ce if counted is None else ce * counted.to(ce.device)).sum(-1)


def kl_per_sequence(clean_logits: Tensor, logits: Tensor, counted: Tensor | None = None) -> Tensor:
    """Summed KL(clean || other) per sequence [B]: over the predicting positions [:, :-1], or with
    `counted` [B, T] over every position it marks (SAELens counts the last position's KL too)."""
    upto = logits.shape[1] if counted is not None and counted.shape[1] == logits.shape[1] else -1
    p = F.log_softmax(clean_logits[:, :upto].float(), dim=-1)
    q = F.log_softmax(logits[:, :upto].float(), dim=-1)
    kl = (p.exp() * (p - q)).sum(-1)
    return (kl if counted is None else kl * counted.to(kl.device)).sum(-1)


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Summed cross-entropy (nats) of predicting tokens[:, 1:] from logits[:, :-1]."""
    return ce_per_sequence(logits, tokens).sum()


def next_token_kl(clean_logits: Tensor, logits: Tensor) -> Tensor:
    """Summed KL(clean || other) over the predicting positions [:, :-1]."""
    return kl_per_sequence(clean_logits, logits).sum()


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
        convention: str = "monosemantic",
    ) -> None:
        """`error_check_batches`: run the spliced+error check on only the first N batches (None: all);
        `convention`: "monosemantic" or "saelens" (see the module docstring)."""
        if convention not in CONVENTIONS:
            raise ValueError(f"CE/KL convention {convention!r} is not one of {', '.join(CONVENTIONS)}")
        self.convention = convention
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
        """All spliced metrics of each dictionary in `specs`, in order; each result also carries
        `per_sequence` sums (clean, zero, mean, spliced CE and spliced KL, predictions counted) for
        bootstrap intervals, popped before metrics.json is written."""
        sites = {s.hook_name_out: s.mean for s in specs}
        base: dict[str, dict[str, list[Tensor]]] = {s: {"zero": [], "mean": []} for s in sites}
        rows: dict[str, list[Tensor]] = {"clean": [], "n": [], "n_kl": []}
        sums = [{"ce": [], "kl": [], "ce_err": 0.0, "kl_err": 0.0, "diff": 0.0} for _ in specs]
        with torch.no_grad(), progress_bar(transient=True) as bar:
            task = bar.add_task("spliced CE/KL", total=len(self.batches), unit="batch", info="")
            for i, (tokens, keep) in enumerate(zip(self.batches, self.keeps, strict=True)):
                tokens = tokens.to(self.model.device)
                counted, counted_kl, ablated = self.conventions(tokens, keep)
                clean = self._run(tokens)
                rows["clean"].append(ce_per_sequence(clean, tokens, counted).double().cpu())
                rows["n"].append(self._counted(tokens, counted))
                rows["n_kl"].append(self._counted(tokens, counted_kl))
                for site, mean in sites.items():
                    zero = {site: lambda a, k=ablated: where_kept(k, torch.zeros_like(a), a)}
                    ablate = {
                        site: lambda a, k=ablated, m=mean: where_kept(k, m.to(a.device).expand_as(a), a)
                    }
                    for name, edit in (("zero", zero), ("mean", ablate)):
                        ce = ce_per_sequence(self._run(tokens, edit), tokens, counted)
                        base[site][name].append(ce.double().cpu())
                for spec, acc in zip(specs, sums, strict=True):
                    self._splice(
                        spec, acc, tokens, keep, clean, (counted, counted_kl), check=i < self.n_check
                    )
                bar.advance(task)
        n_seq, n_kl = torch.cat(rows["n"]), torch.cat(rows["n_kl"])
        n, n_check = float(n_seq.sum()), max(float(n_seq[: self._check_rows()].sum()), 1.0)
        n_check_kl = max(float(n_kl[: self._check_rows()].sum()), 1.0)
        clean = torch.cat(rows["clean"])
        results = []
        for spec, acc in zip(specs, sums, strict=True):
            per_seq = {
                "n": n_seq,
                "n_kl": n_kl,
                "clean": clean,
                "zero": torch.cat(base[spec.hook_name_out]["zero"]),
                "mean": torch.cat(base[spec.hook_name_out]["mean"]),
                "spliced": torch.cat(acc["ce"]),
                "kl": torch.cat(acc["kl"]),
            }
            b = {k: float(per_seq[k].sum()) / n for k in ("clean", "zero", "mean")}
            ce = float(per_seq["spliced"].sum()) / n
            results.append(
                {
                    "ce_loss_clean": b["clean"],
                    "ce_loss_zero_ablated": b["zero"],
                    "ce_loss_mean_ablated": b["mean"],
                    "ce_loss_spliced": ce,
                    "ce_loss_increase": ce - b["clean"],
                    "ce_loss_zero_ablation_increase": b["zero"] - b["clean"],
                    "ce_loss_recovered": recovered(b["zero"], ce, b["clean"]),
                    "ce_loss_recovered_mean_ablation": recovered(b["mean"], ce, b["clean"]),
                    "kl_spliced": float(per_seq["kl"].sum()) / float(n_kl.sum()),
                    "ce_loss_spliced_with_error": acc["ce_err"] / n_check,
                    "kl_spliced_with_error": acc["kl_err"] / n_check_kl,
                    "splice_error_check_max_logit_diff": acc["diff"],
                    "splice_error_check_batches": self.n_check,
                    "n_predictions": int(n),
                    "ce_convention": self.convention,
                    "per_sequence": per_seq,
                }
            )
        return results

    def _splice(
        self, spec: SpliceSpec, acc: dict, tokens: Tensor, keep: Tensor, clean: Tensor,
        counted: tuple[Tensor | None, Tensor | None], check: bool,
    ) -> None:  # fmt: skip
        """One dictionary on one batch: spliced CE/KL per sequence, and the spliced+error check."""
        for with_error in (False, True)[: 2 if check else 1]:
            edits = splice_edits(spec.dic, keep, add_error=with_error)
            logits = self._run(tokens, edits)
            ce = ce_per_sequence(logits, tokens, counted[0]).double().cpu()
            kl = kl_per_sequence(clean, logits, counted[1]).double().cpu()
            if with_error:
                acc["ce_err"] += float(ce.sum())
                acc["kl_err"] += float(kl.sum())
                acc["diff"] = max(acc["diff"], (logits.float() - clean.float()).abs().max().item())
            else:
                acc["ce"].append(ce)
                acc["kl"].append(kl)

    def conventions(self, tokens: Tensor, keep: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(which next-token predictions count for CE [B, T-1], which positions count for KL, which
        positions the ablations replace) under `self.convention` (see the module docstring)."""
        if self.convention == "saelens":  # SAELens evals.py: mask[:, :-1] for CE, mask for KL
            keep = keep.to(tokens.device)
            return keep[:, :-1], keep, torch.ones_like(keep, dtype=torch.bool)
        return None, None, keep

    @staticmethod
    def _counted(tokens: Tensor, counted: Tensor | None) -> Tensor:
        if counted is None:
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.float64)
        return counted.double().sum(-1).cpu()

    def _check_rows(self) -> int:
        return sum(b.shape[0] for b in self.batches[: self.n_check])


def recovered(ablated: float, spliced: float, clean: float) -> float:
    """CE loss recovered against an ablation: 1 when the splice costs nothing, 0 when it is as bad."""
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else math.nan
