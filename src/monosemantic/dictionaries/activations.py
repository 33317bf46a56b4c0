"""Activation rules as small shared objects (circuit-tracer's pattern): ReLU, JumpReLU, TopK, BatchTopK.

A dictionary holds one (`self.activation`) and asks it, instead of branching on a name:
- `act(z, module, i)`: the inference rule on pre-activations z, reading its per-latent state from the
  dictionary (`i` picks layer i's slice of a CLT's [L, n] state; None the whole);
- `train(z, module)`: the training rule of a dense rule and its L0 term (JumpReLU's straight-through
  estimators; None for ReLU, whose L1 the dictionary weights by its decoder norms);
- `select(pre, k, sharding)` and `observe(...)`: the TopK family's exact selection and BatchTopK's
  running threshold;
- `fold(module, norms)`: keep outputs when decoder norms are folded into the latents;
- `saved(...)` / `loaded(...)`: its state under the SAELens names (`threshold`).

Each rule owns its config keys (`Settings`, a mixin of an architecture's config class), so a CLT with
`activation = "jumprelu"` takes JumpReLU's keys and refuses TopK's `k`. The JumpReLU estimator
functions live here too, shared by the JumpReLU SAE, CLTs and crosscoders.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from monosemantic.config.base import Section
from monosemantic.config.ranges import Count

from .sparse_encoder import topk_batch, topk_rows
from .types import Penalty

if TYPE_CHECKING:
    from .sharding import Sharding

# The running BatchTopK threshold becomes an exponential moving average with this rate after 1/rate steps.
THRESHOLD_RATE = 0.01


# ---- config keys, one mixin per rule ------------------------------------------------------------
class ReLUSettings(Section):
    l1_coefficient: float = Field(
        5.0,
        ge=0,
        description="L1 penalty (relu, gated, clt/crosscoder with relu); weighted by decoder norms.",
    )


class JumpReLUSettings(Section):
    l0_coefficient: float = Field(
        1.0, ge=0, description="L0 penalty (jumprelu, clt/crosscoder with jumprelu)."
    )
    jumprelu_bandwidth: float = Field(
        0.3,
        gt=0,
        description="Straight-through estimator kernel width, in pre-activation units (order 1 when "
        "train.normalize_activations scales inputs to norm sqrt(d_in)).",
    )
    jumprelu_init_threshold: float = Field(
        1.0,
        gt=0,
        description="Initial threshold, in the same units (~1 standard deviation of a pre-activation).",
    )


class TopKSettings(Section):
    k: Count | None = Field(
        None, description="Active latents per token (topk, batchtopk, matryoshka; per layer for a clt)."
    )
    aux_k: Count | None = Field(
        None,
        description="Dead latents per token used by the AuxK loss (TopK family; default d_in/2; for a "
        "cross-layer transcoder per layer, like k, default half a layer's width).",
    )
    aux_coefficient: float = Field(1 / 32, ge=0, description="Weight of the AuxK loss (0 turns it off).")


L1 = Penalty("l1_coefficient", "l1c")
L0 = Penalty("l0_coefficient", "l0c")


# ---- the JumpReLU straight-through estimators (Rajamanoharan et al. 2024) --------------------------
def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        # The extra z > 0 only matters for loaded checkpoints with thresholds <= 0.
        return z * ((z > theta) & (z > 0)).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_z = ((z > theta) & (z > 0)).to(grad.dtype) * grad
        grad_theta = -(theta / eps) * _rectangle((z - theta) / eps) * grad
        return grad_z, grad_theta.reshape(-1, theta.shape[-1]).sum(0), None


class _StepFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        kernel = (1.0 / eps) * _rectangle((z - theta) / eps) * grad
        return kernel, -kernel.reshape(-1, theta.shape[-1]).sum(0), None


def jumprelu(z: Tensor, theta: Tensor, eps: float) -> Tensor:
    """z H(z - theta), with the pseudo-derivative -(theta/eps) K((z - theta)/eps) for theta."""
    return _JumpReLUFn.apply(z, theta.to(z.dtype), eps)


def step(z: Tensor, theta: Tensor, eps: float) -> Tensor:
    """H(z - theta), with the pseudo-derivative (1/eps) K for z and its negative for theta."""
    return _StepFn.apply(z, theta.to(z.dtype), eps)


# ---- BatchTopK's selection and threshold, shared by SAEs, CLTs and crosscoders ---------------------
def select_batch(pre: Tensor, k: int, sharding: Sharding | None) -> tuple[Tensor, Tensor]:
    """BatchTopK's selection: the k * B largest entries of the batch; with rows or latents split
    over ranks, of the whole mesh's batch."""
    return topk_batch(pre, k * pre.shape[0]) if sharding is None else sharding.topk_batch(pre, k)


@torch.no_grad()
def smallest_selected(vals: Tensor, sharding: Sharding | None) -> Tensor:
    """The running threshold's sample: the smallest positive selected activation of the whole
    batch, every rank's rows and latents included (one process: this batch); inf if none."""
    positive = vals[vals > 0]
    smallest = positive.min().float() if positive.numel() else vals.new_tensor(torch.inf).float()
    return smallest if sharding is None else sharding.global_min(smallest.reshape(1))[0]


def _at(t: Tensor, i: int | None) -> Tensor:
    return t if i is None else t[i]


# ---- the rules ----------------------------------------------------------------------------------
class Activation(abc.ABC):
    """An activation rule (see the module docstring). Subclasses set the class attributes."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[Section]] = Section
    # The penalty whose coefficient the target-L0 controller tunes; None for the TopK family.
    penalty: ClassVar[Penalty | None] = None
    # The fraction of that coefficient the controller starts from: below the equilibrium measured on
    # the shipped LM at the demo's and the reference run's budgets (benchmarks/bench_target_l0.py).
    controller_start: ClassVar[float] = 0.01
    # Chooses exactly k latents (TopK family): sparse codes in training, AuxK, unit-norm decoder rows.
    selects: ClassVar[bool] = False
    # The initial decoder norm where the config leaves it unset: small for free rows.
    decoder_init_norm: ClassVar[float] = 0.1
    # At inference each latent is a function of its own pre-activation (a threshold or none), so a
    # format without a per-token selection (circuit-tracer's CLTs) can run it; TopK is not.
    elementwise: ClassVar[bool] = True

    def __init__(self, settings: Section) -> None:
        self.settings = settings

    @property
    def unit_norm_decoder(self) -> bool:
        return self.selects

    @property
    def keys(self) -> set[str]:
        return set(self.Settings.model_fields)

    def add_state(self, module: nn.Module, shape: tuple[int, ...]) -> None:
        """Register this rule's per-latent tensors on `module` (shape [n] or [L, n])."""
        return None  # ReLU and TopK keep none

    @abc.abstractmethod
    def __call__(self, z: Tensor, module: nn.Module, i: int | None = None) -> Tensor:
        """The inference rule on pre-activations `z` (layer i's state of a CLT when i is given)."""

    def train(self, z: Tensor, module: nn.Module) -> tuple[Tensor, Tensor | None]:
        """Latents for the loss of a dense rule, and its L0 term (None where the penalty is not L0)."""
        return self(z, module), None

    @torch.no_grad()
    def fold(self, module: nn.Module, norms: Tensor) -> None:
        """Decoder rows are divided by `norms` and encoder columns multiplied: keep the same outputs."""
        return None  # nothing to rescale without a threshold

    def saved(self, module: nn.Module) -> dict[str, Tensor]:
        return {}

    def loaded(self, tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
        """The module's state entries for this rule from saved tensors (popped from `tensors`)."""
        return {}


class ReLU(Activation):
    name = "relu"
    Settings = ReLUSettings
    penalty = L1
    controller_start = 0.3

    def __call__(self, z: Tensor, module: nn.Module, i: int | None = None) -> Tensor:
        return F.relu(z)


class JumpReLU(Activation):
    """f = z H(z - theta), theta = exp(log_threshold) per latent, with an L0 penalty."""

    name = "jumprelu"
    Settings = JumpReLUSettings
    penalty = L0
    controller_start = 0.025

    def add_state(self, module: nn.Module, shape: tuple[int, ...]) -> None:
        module.log_threshold = nn.Parameter(
            torch.full(shape, math.log(self.settings.jumprelu_init_threshold))
        )

    def __call__(self, z: Tensor, module: nn.Module, i: int | None = None) -> Tensor:
        return jumprelu(z, _at(module.log_threshold, i).exp(), self.settings.jumprelu_bandwidth)

    def train(self, z: Tensor, module: nn.Module) -> tuple[Tensor, Tensor | None]:
        """z [B, m] against the whole state flattened to [m] (a CLT trains every layer at once)."""
        theta, eps = module.log_threshold.exp().flatten(), self.settings.jumprelu_bandwidth
        return jumprelu(z, theta, eps), step(z, theta, eps).float().sum(-1).mean()

    @torch.no_grad()
    def fold(self, module: nn.Module, norms: Tensor) -> None:
        module.log_threshold += norms.log().to(module.log_threshold.dtype)

    def saved(self, module: nn.Module) -> dict[str, Tensor]:
        return {"threshold": module.log_threshold.detach().exp()}

    def loaded(self, tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
        return {"log_threshold": tensors.pop("threshold").float().clamp_min(1e-30).log().to(dtype)}


class TopK(Activation):
    """Exactly k latents per row: ReLU(TopK(z))."""

    name = "topk"
    Settings = TopKSettings
    selects = True
    decoder_init_norm = 1.0
    elementwise = False

    @property
    def k(self) -> int:
        return int(self.settings.k)

    def __call__(self, z: Tensor, module: nn.Module, i: int | None = None) -> Tensor:
        top = z.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(z).scatter_(-1, top.indices, F.relu(top.values))

    def select(self, pre: Tensor, sharding: Sharding | None) -> tuple[Tensor, Tensor]:
        """Coordinates of each row's k largest pre-activations (over every latent slice when sharded)."""
        return topk_rows(pre, self.k) if sharding is None else sharding.topk_rows(pre, self.k)

    def observe(self, module: nn.Module, vals: Tensor, i: int | None = None) -> bool:
        """Bookkeeping on the selected (ReLU'd) activations of a training step (none for TopK);
        True when it updated something."""
        return False

    def count(self, module: nn.Module) -> None:
        """Count one step of `observe` updates (BatchTopK's running-mean rate)."""


class BatchTopK(TopK):
    """The k*B largest activations of the batch in training; at inference a JumpReLU with the running
    mean of the smallest selected activation as threshold (Bussmann et al. 2024)."""

    name = "batchtopk"
    elementwise = True  # a JumpReLU with its learned threshold at inference

    def add_state(self, module: nn.Module, shape: tuple[int, ...]) -> None:
        module.register_buffer("threshold", torch.zeros(shape))
        module.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def __call__(self, z: Tensor, module: nn.Module, i: int | None = None) -> Tensor:
        return F.relu(z) * (z > _at(module.threshold, i).to(z.dtype))

    def select(self, pre: Tensor, sharding: Sharding | None) -> tuple[Tensor, Tensor]:
        return select_batch(pre, self.k, sharding)

    @torch.no_grad()
    def observe(self, module: nn.Module, vals: Tensor, i: int | None = None) -> bool:
        """Move the threshold (layer i's of a CLT) toward this batch's smallest selected activation;
        the caller counts steps in `threshold_updates`. False when nothing was selected."""
        if not module.training:
            return False
        smallest = smallest_selected(vals, module.sharding)  # over every rank's rows (parallel='data')
        if not torch.isfinite(smallest):
            return False
        rate = max(1.0 / float(module.threshold_updates + 1), THRESHOLD_RATE)
        _at(module.threshold, i).mul_(1 - rate).add_(rate * smallest)
        return True

    @torch.no_grad()
    def count(self, module: nn.Module) -> None:
        module.threshold_updates += 1

    @torch.no_grad()
    def fold(self, module: nn.Module, norms: Tensor) -> None:
        module.threshold *= norms.to(module.threshold.dtype)

    def saved(self, module: nn.Module) -> dict[str, Tensor]:
        return {"threshold": module.threshold.detach().clone()}

    def loaded(self, tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
        return {"threshold": tensors.pop("threshold"), "threshold_updates": torch.tensor(1, dtype=torch.long)}


ACTIVATIONS: dict[str, type[Activation]] = {a.name: a for a in (ReLU, JumpReLU, TopK, BatchTopK)}
