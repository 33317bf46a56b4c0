"""The `Dictionary` base class: weights, encode/decode, the trainer's hooks, and the registry.

Every architecture is an `nn.Module` holding `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
`W_dec [d_sae, d_out]`, `b_dec [d_out]` (and `W_skip [d_in, d_out]` for skip transcoders), the
SAELens layout, so saving is a plain state-dict dump. An SAE is the case d_out == d_in with the
output site equal to the input site; a transcoder maps `hook_name` to `hook_name_out`.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from monosemantic.utils.errors import DataError, MonosemanticError

from .sparse_encoder import sparse_decode

if TYPE_CHECKING:
    from .sharding import Sharding

_REGISTRY: dict[str, type[Dictionary]] = {}


def register_dictionary(name: str):
    """Class decorator: make an architecture buildable and loadable by `name`."""

    def wrap(cls: type[Dictionary]) -> type[Dictionary]:
        cls.architecture = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def dictionary_class(name: str) -> type[Dictionary]:
    if name not in _REGISTRY:
        raise MonosemanticError(
            f"unknown dictionary architecture {name!r}; use one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


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
    l1_coefficient: float = 5.0
    l1_decoder_norm: bool = True
    l0_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.3
    jumprelu_init_threshold: float = 1.0
    jumprelu_init_density: float | None = None
    matryoshka_widths: list[int] | None = None
    aux_k: int | None = None
    aux_coefficient: float = 1 / 32
    decoder_init_norm: float = 1.0
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


class Dictionary(nn.Module, abc.ABC):
    """A sparse dictionary: `encode(x) -> f`, `decode(f, x) -> y_hat`, and its training loss."""

    architecture: ClassVar[str] = ""
    # Whether the recipe constrains decoder rows to unit norm (the trainer then calls
    # `remove_gradient_parallel_to_decoder_directions` before and `set_decoder_norm_to_unit_norm`
    # after each optimiser step).
    unit_norm_decoder: ClassVar[bool] = True
    # Set by the distributed trainer when rows or latents are split over ranks (TopK family).
    sharding: Sharding | None = None

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.d_out
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.W_skip = nn.Parameter(torch.zeros(d_in, d_out)) if cfg.skip else None
        self.reset_parameters()

    # ---- shapes and dtypes ------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def d_out(self) -> int:
        return self.cfg.d_out

    @property
    def is_transcoder(self) -> bool:
        return self.cfg.is_transcoder

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit directions scaled to `decoder_init_norm`; W_enc = W_dec^T when shapes allow."""
        w = torch.randn(self.d_sae, self.d_out)
        w *= self.cfg.decoder_init_norm / w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        if self.d_in == self.d_out:
            self.W_enc.copy_(w.T)
        else:
            e = torch.randn(self.d_in, self.d_sae)
            self.W_enc.copy_(e * (self.cfg.decoder_init_norm / e.norm(dim=0, keepdim=True)))

    def _check_input(self, x: Tensor, width: int, what: str = "input") -> Tensor:
        if x.shape[-1] != width:
            raise DataError(
                f"{what} has width {x.shape[-1]} but this dictionary expects {width} "
                f"(site {self.cfg.hook_name or '?'}); pass activations from the site it was trained on"
            )
        return (
            x.to(self.dtype) if x.dtype != self.dtype and not torch.is_autocast_enabled(x.device.type) else x
        )

    def _input(self, x: Tensor) -> Tensor:
        """The encoder input: x minus b_dec for SAEs (SAELens `apply_b_dec_to_input`)."""
        x = self._check_input(x, self.d_in)
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x: Tensor) -> Tensor:
        return self._input(x) @ self.W_enc + self.b_enc

    # ---- the model --------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Latent activations f [..., d_sae] (the inference-time activation function)."""

    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """y_hat = f W_dec + b_dec (+ x W_skip for skip transcoders, which need x)."""
        if f.shape[-1] != self.d_sae:
            raise DataError(f"latents have width {f.shape[-1]} but this dictionary has d_sae={self.d_sae}")
        out = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return self._add_skip(out, x)

    def decode_codes(self, codes: SparseCodes, x: Tensor | None = None, bias: bool = True) -> Tensor:
        """Decode sparse codes with one gather-and-sum (`embedding_bag`), never a dense matmul.

        bias=False gives the latents' contribution alone (no b_dec, no skip path), for AuxK.
        """
        W = self.W_dec
        vals = codes.vals
        if torch.is_autocast_enabled(W.device.type):
            dt = torch.get_autocast_dtype(W.device.type)
            W, vals = W.to(dt), vals.to(dt)
        out = sparse_decode(vals, W, codes.rows, codes.cols, codes.n_rows)
        if self.sharding is not None:  # this rank decoded its slice of the latents: sum them
            out = self.sharding.sum_partials(out)
        if not bias:
            return out
        return self._add_skip(out + self.b_dec, x)

    def _add_skip(self, out: Tensor, x: Tensor | None) -> Tensor:
        if self.W_skip is None:
            return out
        if x is None:
            raise MonosemanticError("a skip transcoder's decode needs the input x: call decode(f, x)")
        return out + self._check_input(x, self.d_in) @ self.W_skip

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), x)

    @abc.abstractmethod
    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        """Loss on a batch x [B, d_in] with target y [B, d_out] (y is x for an SAE)."""

    # ---- helpers shared by the losses -------------------------------------------------------
    @staticmethod
    def mse(y_hat: Tensor, y: Tensor) -> Tensor:
        """Squared error summed over features, averaged over rows (the SAELens convention)."""
        return (y_hat.float() - y.float()).pow(2).sum(-1).mean()

    def sparsity_coefficient(self, state: TrainStepState, default: float) -> float:
        coef = default if state.sparsity_coefficient is None else state.sparsity_coefficient
        return coef * state.sparsity_scale

    @staticmethod
    def l0(f: Tensor) -> Tensor:
        return (f > 0).float().sum(-1).mean()

    # ---- hooks for the trainer --------------------------------------------------------------
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self, rows_are_unit: bool = False) -> None:
        """Project out the radial part of W_dec.grad, so Adam moves rows along the unit sphere.

        rows_are_unit: the caller guarantees unit-norm rows (the trainer renormalises after every
        step), so the row norms need not be recomputed; the projection then works in place.
        """
        grad = self.W_dec.grad
        if grad is None:
            return
        W = self.W_dec
        if rows_are_unit:
            parallel = torch.linalg.vecdot(W, grad, dim=1)
            grad.addcmul_(W, parallel.unsqueeze(1), value=-1.0)
            return
        unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
        parallel = (grad * unit).sum(dim=1, keepdim=True)
        grad -= parallel * unit

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Rescale to unit-norm decoder rows without changing any output (ReLU-style latents).

        f_i = ReLU(z_i) is positively homogeneous, so scaling latent i's encoder column and bias
        by ||d_i|| and its decoder row by 1/||d_i|| is exact. Architectures whose latents are not
        (thresholds, gates) override this; TopK-style ones keep unit rows throughout.
        """
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_enc *= norms
        self.b_enc *= norms
        self.W_dec /= norms[:, None]

    @torch.no_grad()
    def initialize_b_dec(self, value: Tensor) -> None:
        """Set b_dec (the trainer passes the geometric median of the target activations)."""
        self.b_dec.copy_(value.to(self.b_dec))

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor) -> None:
        """Data-dependent initialisation on the first batches' inputs `x` (after `b_dec`); most
        architectures need none (JumpReLU may place its thresholds)."""

    @torch.no_grad()
    def fold_activation_scale(self, scale_in: float, scale_out: float | None = None) -> None:
        """Make a dictionary trained on (s_in x, s_out y) work on raw (x, y).

        Pre-activations are unchanged (W_enc absorbs s_in, b_dec on the input side absorbs it
        too), so thresholds stay valid; the output is divided by s_out.
        """
        s_out = scale_in if scale_out is None else scale_out
        if not self.cfg.is_transcoder and s_out != scale_in:
            raise MonosemanticError("an SAE has one activation scale; give scale_out only for transcoders")
        self.W_enc *= scale_in
        self.W_dec /= s_out
        self.b_dec /= s_out
        if self.W_skip is not None:
            self.W_skip *= scale_in / s_out
        self._fold_extra(scale_in, s_out)

    def _fold_extra(self, scale_in: float, scale_out: float) -> None:
        """Architecture-specific weights that depend on the scale (none by default)."""

    # ---- serialisation (SAELens tensor names) -----------------------------------------------
    def weights_for_saving(self) -> dict[str, Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict({k: v for k, v in tensors.items()}, strict=True)

    def extra_repr(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.k is not None else ""
        return f"{c.architecture}: d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.d_out}{k}, skip={c.skip}"
