"""The plain data around a dictionary: what it is built from (`DictionaryMeta`, saved in
cfg.json), what the trainer tells its loss (`TrainStepState`) and what the loss returns
(`LossOutput`, with `SparseCodes` for TopK-style latents)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Penalty:
    """A sparsity penalty's coefficient: its `DictionaryMeta` field, sweep-name prefix and default."""

    field: str
    short: str
    default: float


@dataclass
class DictionaryMeta:
    """Shapes, sites and the hyperparameters the forward pass and loss need (saved in cfg.json)."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: int
    k: int | None = None
    hook_name: str | None = None
    hook_name_out: str | None = None
    skip: bool = False
    apply_b_dec_to_input: bool = True
    l1_coefficient: float | None = None  # None: the architecture's `penalty.default`
    l1_decoder_norm: bool = True
    l0_coefficient: float | None = None
    jumprelu_bandwidth: float = 0.3
    jumprelu_init_threshold: float = 1.0
    jumprelu_init_density: float | None = None
    matryoshka_widths: list[int] | None = None
    aux_k: int | None = None
    aux_coefficient: float = 1 / 32
    decoder_init_norm: float | None = None  # None: the architecture's `default_decoder_init_norm`
    options: dict[str, Any] = field(default_factory=dict)  # architecture-owned fields (`Options`)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transcoder(self) -> bool:
        return self.d_out != self.d_in or (
            self.hook_name_out is not None and self.hook_name_out != self.hook_name
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DictionaryMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainStepState:
    """What the trainer tells the loss at each step.

    sparsity_scale: warm-up multiplier on the sparsity penalty (0 -> 1 over the first steps).
    sparsity_coefficient: overrides the configured L1/L0 coefficient (the target-L0 controller).
    dead_mask: bool [d_sae], latents that have not fired for a while; drives the AuxK loss.
    """

    sparsity_scale: float = 1.0
    sparsity_coefficient: float | None = None
    dead_mask: Tensor | None = None


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
