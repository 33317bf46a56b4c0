"""The plain data around a dictionary: what it is (`DictionaryMeta`, saved in cfg.json), what the trainer tells its loss (`TrainStepState`) and what the loss returns
(`LossOutput`, with `SparseCodes` for TopK-style latents)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from monosemantic.config.dictionary import DictionaryConfig, architecture_config
from monosemantic.config.site import Site


@dataclass(frozen=True)
class Penalty:
    """A sparsity penalty: the config key of its coefficient and the prefix naming it in sweep folders."""

    field: str
    short: str


# cfg.json's `metadata.monosemantic` keys that are not the architecture's settings
GENERIC = (
    "architecture",
    "d_in",
    "d_sae",
    "d_out",
    "hook_name",
    "hook_name_out",
    "skip",
    "apply_b_dec_to_input",
)
# keys older versions wrote there that are derived now (a multi-site dictionary's sites come from its hook_name)
DERIVED = ("layers", "hook_names", "hook_names_out", "activation_function", "options", "metadata")


@dataclass
class DictionaryMeta:
    """What a built dictionary is: its architecture, shapes, the sites it reads (`hook_name`) and
    writes (`hook_name_out`, None for an SAE), and its architecture's settings (`settings`, the
    architecture's config with every default resolved). Saved flat in cfg.json's
    `metadata.monosemantic`. A multi-site dictionary's widths are its sites' concatenated widths
    and its hook_name a site group (`blocks.{0,1}.mlp.hook_in`)."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: int
    hook_name: str | None = None
    hook_name_out: str | None = None
    skip: bool = False
    apply_b_dec_to_input: bool = True
    settings: DictionaryConfig | None = None  # None: the architecture's defaults
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = architecture_config(self.architecture).from_saved(
                {"architecture": self.architecture}
            )

    @property
    def is_transcoder(self) -> bool:
        return self.d_out != self.d_in or (
            self.hook_name_out is not None and self.hook_name_out != self.hook_name
        )

    @property
    def site(self) -> Site | None:
        """The site (or site group) it reads, parsed."""
        return Site.parse(self.hook_name) if self.hook_name is not None else None

    @property
    def site_out(self) -> Site | None:
        """The site it writes; for an SAE the one it reads."""
        name = self.hook_name_out if self.hook_name_out is not None else self.hook_name
        return Site.parse(name) if name is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The flat record of cfg.json's `metadata.monosemantic`: the generic keys, then the settings
        that describe the architecture (not where or under which name a run trained it)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in GENERIC}
        run_keys = {
            "architecture",
            "d_sae",
            "expansion",
            "site",
            "site_out",
            "layers",
            "skip",
            "name",
            "target_l0",
        }
        out |= {k: v for k, v in self.settings.model_dump(mode="json").items() if k not in run_keys}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DictionaryMeta:
        """From a flat record, as this or any earlier version wrote it (settings of other
        architectures, which older versions wrote for every dictionary, are ignored)."""
        settings = architecture_config(d["architecture"]).from_saved(
            {k: v for k, v in d.items() if k not in GENERIC[1:] and k not in DERIVED}
        )
        return cls(**{k: d[k] for k in GENERIC if k in d}, settings=settings)


@dataclass
class TrainStepState:
    """What the trainer tells the loss at each step.

    sparsity_scale: warm-up multiplier on the sparsity penalty (0 -> 1 over the first steps).
    sparsity_coefficient: overrides the configured L1/L0 coefficient (the target-L0 controller).
    dead_mask: bool [d_sae], latents that have not fired for a while; drives the AuxK loss.
    seq_len: for sequence-level kinds (Lorsa), the window length T: the batch's rows are whole
        windows of T consecutive positions, in order.
    """

    sparsity_scale: float = 1.0
    sparsity_coefficient: float | None = None
    dead_mask: Tensor | None = None
    seq_len: int | None = None


@dataclass
class SparseCodes:
    """Latent activations as coordinates: (rows[i], cols[i]) holds vals[i]; rows are sorted.

    TopK-style dictionaries never build the dense [B, d_sae] activation matrix while training;
    `offsets` (start of each row's run) feeds `F.embedding_bag` directly.
    """

    rows: Tensor
    cols: Tensor
    vals: Tensor
    n_rows: int
    d_sae: int

    @property
    def offsets(self) -> Tensor:
        counts = torch.bincount(self.rows, minlength=self.n_rows)
        return torch.cumsum(counts, 0) - counts

    def dense(self) -> Tensor:
        f = self.vals.new_zeros(self.n_rows, self.d_sae)
        return f.index_put_((self.rows, self.cols), self.vals, accumulate=True)

    def masked(self, keep: Tensor) -> SparseCodes:
        return SparseCodes(self.rows[keep], self.cols[keep], self.vals[keep], self.n_rows, self.d_sae)


class LossOutput:
    """The result of `training_loss`: loss, reconstruction, latents and the logged loss terms.

    `f` is the dense [B, d_sae] activation matrix; for sparse architectures it is built only on
    first access, so the trainer should prefer `fired` (which latents fired) and `l0`.
    """

    def __init__(
        self,
        loss: Tensor,
        x_hat: Tensor,
        f: Tensor | None = None,
        terms: dict[str, Tensor] | None = None,
        codes: SparseCodes | None = None,
    ) -> None:
        if f is None and codes is None:
            raise ValueError("LossOutput needs f or codes")
        self.loss, self.x_hat, self.terms = loss, x_hat, terms or {}
        self._f, self.codes = f, codes

    @property
    def f(self) -> Tensor:
        if self._f is None:
            self._f = self.codes.dense()
        return self._f

    @property
    def fired(self) -> Tensor:
        """bool [d_sae]: latents with a positive activation somewhere in the batch."""
        if self.codes is not None:
            c = self.codes
            out = torch.zeros(c.d_sae, dtype=torch.bool, device=c.vals.device)
            out[c.cols[c.vals > 0]] = True
            return out
        return (self._f > 0).flatten(0, -2).any(0)

    @property
    def l0(self) -> Tensor:
        """Mean number of positive latents per row."""
        if self.codes is not None:
            return (self.codes.vals > 0).sum().float() / max(self.codes.n_rows, 1)
        return (self._f > 0).float().sum(-1).mean()
