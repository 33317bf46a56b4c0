"""The `Dictionary` base class: weights, encode/decode, the trainer's hooks, and the registry.

Every architecture is an `nn.Module` holding `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
`W_dec [d_sae, d_out]`, `b_dec [d_out]` (and `W_skip [d_in, d_out]` for skip transcoders), the
SAELens layout, so saving is a plain state-dict dump. An SAE is the case d_out == d_in with the
output site equal to the input site; a transcoder maps `hook_name` to `hook_name_out`.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from monosemantic.utils.errors import ConfigError, DataError, MonosemanticError

from .sparse_encoder import sparse_decode
from .types import DictionaryMeta, LossOutput, Penalty, SparseCodes, TrainStepState

__all__ = ["Dictionary", "DictionaryMeta", "LossOutput", "Penalty", "SparseCodes", "TrainStepState",
           "dictionary_class", "firing_quantile", "register_dictionary", "start_density"]  # fmt: skip

if TYPE_CHECKING:
    from .sharding import Sharding

_REGISTRY: dict[str, type[Dictionary]] = {}


def register_dictionary(name: str):
    """Class decorator: make an architecture buildable and loadable by `name`.

    Importing the module that defines the class registers it; a name can be registered once.
    """

    def wrap(cls: type[Dictionary]) -> type[Dictionary]:
        if name in _REGISTRY:
            raise MonosemanticError(
                f"dictionary architecture {name!r} is already registered by {_REGISTRY[name].__module__}; "
                "choose another name"
            )
        cls.architecture = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def dictionary_class(name: str) -> type[Dictionary]:
    if name not in _REGISTRY:
        raise MonosemanticError(
            f"dictionary.architecture {name!r} is unknown; use one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


@torch.no_grad()
def firing_quantile(z: Tensor, p: float) -> Tensor:
    """[m]: for each column of pre-activations z [n, m], the value a fraction p of rows exceed
    (the (1 - p) quantile): a threshold there makes the latent fire on p of the tokens."""
    n = z.shape[0]
    return z.kthvalue(min(max(1, math.ceil((1 - p) * n)), n), dim=0).values


def start_density(target_l0: float | None, d_sae: int) -> float | None:
    """The firing rate each latent starts at when a run asks for `target_l0`: L0 starts at the
    target, every latent alive (None without a target)."""
    return None if target_l0 is None else min(target_l0 / d_sae, 0.5)


def default_aux_k(d_in: int, n_latents: int) -> int:
    """AuxK's dead latents per token: half the width an encoder reads (Gao et al.: about
    d_model / 2), at most its latents."""
    return min(max(d_in // 2, 1), n_latents)


class Dictionary(nn.Module, abc.ABC):
    """A sparse dictionary: `encode(x) -> f`, `decode(f, x) -> y_hat`, and its training loss.

    An architecture is one subclass in one file, registered with `@register_dictionary(name)`.
    Besides `encode` and `training_loss` it declares, as class attributes, what the rest of the
    pipeline must know about it: whether it needs `k`, its sparsity `penalty`, its SAELens name,
    its own config fields (`Options`), and it may override `configure` (defaults and checks),
    `latent_parameters`/`reset_latents` (dead-latent resampling), `latent_state` (what feature-sharded
    training splits, buffers included) and `encoder_dirs` (circuits).
    """

    architecture: ClassVar[str] = ""
    # Whether the recipe constrains decoder rows to unit norm (the trainer then calls
    # `remove_gradient_parallel_to_decoder_directions` before and `set_decoder_norm_to_unit_norm`
    # after each optimiser step).
    unit_norm_decoder: ClassVar[bool] = True
    # Exactly `k` latents per token (TopK family): `k` is required and named in sweep folders.
    uses_k: ClassVar[bool] = False
    # Fitted from the first batches in one pass (baselines): the trainer takes no gradient step.
    fitted: ClassVar[bool] = False
    # Its latents can be split over ranks (`train.parallel = "features"`, dictionaries/sharding.py).
    shardable: ClassVar[bool] = False
    # The penalty whose coefficient the target-L0 controller tunes; None for TopK-style rules.
    penalty: ClassVar[Penalty | None] = None
    # The SAELens 6 architecture that runs this dictionary at inference (default: our name).
    saelens_name: ClassVar[str | None] = None
    # Architecture-owned config fields, given in `[dictionary.options]` (a pydantic model).
    Options: ClassVar[type[BaseModel] | None] = None
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

    # ---- configuration: defaults and checks, before any weight exists ------------------------
    @classmethod
    def default_decoder_init_norm(cls, meta: DictionaryMeta) -> float:
        """Initial decoder row norm: 1, or 0.1 where rows are free (no unit-norm constraint)."""
        return 1.0

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        """Fill this architecture's defaults into `meta` and reject inconsistent settings
        (ConfigError, one line). Called once when a dictionary is built from a config."""
        name = cls.architecture
        if cls.uses_k:
            if meta.k is None:
                raise ConfigError(
                    f"architecture {name!r} needs k (active latents per token); set dictionary.k"
                )
            if meta.k > meta.d_sae:
                raise ConfigError(f"k={meta.k} is larger than d_sae={meta.d_sae}; choose k <= d_sae")
        if meta.aux_k is not None and meta.aux_k > meta.d_sae:
            raise ConfigError(f"aux_k={meta.aux_k} is larger than d_sae={meta.d_sae}; choose aux_k <= d_sae")
        if meta.aux_k is None:
            meta.aux_k = default_aux_k(meta.d_in, meta.d_sae)
        if cls.penalty is not None and getattr(meta, cls.penalty.field) is None:
            setattr(meta, cls.penalty.field, cls.penalty.default)
        if meta.decoder_init_norm is None:
            meta.decoder_init_norm = cls.default_decoder_init_norm(meta)
        if cls.Options is None:
            if meta.options:
                raise ConfigError(
                    f"architecture {name!r} has no options; remove {sorted(meta.options)} from dictionary.options"
                )
            return
        try:
            meta.options = cls.Options.model_validate(meta.options).model_dump()
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"dictionary.options.{where} ({name}): {err['msg']}") from None

    def option(self, key: str) -> Any:
        """An architecture-owned setting from `[dictionary.options]` (defaults filled by `configure`)."""
        if self.Options is None:
            raise MonosemanticError(f"architecture {self.architecture!r} has no options")
        return self.cfg.options.get(key, self.Options.model_fields[key].default)

    def penalty_coefficient(self) -> float:
        """The configured sparsity coefficient (before warm-up and the L0 controller)."""
        if self.penalty is None:
            raise MonosemanticError(f"architecture {self.architecture!r} has no sparsity penalty")
        value = getattr(self.cfg, self.penalty.field)
        return self.penalty.default if value is None else float(value)

    @classmethod
    def saelens_architecture(cls, meta: DictionaryMeta) -> str:
        """The SAELens 6 architecture name that runs this dictionary at inference."""
        inference = cls.saelens_name or cls.architecture
        if not (meta.is_transcoder or meta.skip):
            return inference
        if inference in ("standard", "jumprelu"):
            base = "transcoder" if inference == "standard" else "jumprelu_transcoder"
            return base.replace("transcoder", "skip_transcoder") if meta.skip else base
        return f"{inference}_skip_transcoder" if meta.skip else f"{inference}_transcoder"

    @classmethod
    def saelens_fields(cls, meta: DictionaryMeta) -> dict[str, Any]:
        """Extra top-level cfg.json keys SAELens needs for this architecture (TopK: `k`)."""
        return {}

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
        init_norm = self.cfg.decoder_init_norm or self.default_decoder_init_norm(self.cfg)
        w *= init_norm / w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        if self.d_in == self.d_out:
            self.W_enc.copy_(w.T)
        else:
            e = torch.randn(self.d_in, self.d_sae)
            self.W_enc.copy_(e * (init_norm / e.norm(dim=0, keepdim=True)))

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

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """`encode(x)` [n, d_in] as int32 (row, feature) coordinates and values grouped by row,
        without the dense [n, d_sae] output, where the rule allows it cheaply (TopK); else None."""
        return None

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
    def initialize_from_data(self, x: Tensor, target_l0: float | None = None) -> None:
        """Data-dependent initialisation on the first batches' inputs `x` (after `b_dec`), knowing
        the run's `target_l0` if it has one; most architectures need none (JumpReLU places its
        thresholds so that it starts at the target)."""

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

    # ---- dead latents and circuits -----------------------------------------------------------
    def latent_parameters(self) -> dict[str, int]:
        """Trainable tensors indexed by latent, with the axis that indexes latents (for resampling
        and resetting optimiser moments)."""
        axes = {"W_enc": 1, "W_dec": 0, "b_enc": 0}
        return {n: a for n, a in axes.items() if isinstance(getattr(self, n, None), nn.Parameter)}

    def latent_state(self) -> dict[str, int]:
        """Every state tensor indexed by latent (parameters and buffers such as a running
        threshold), with its latent axis: what feature-sharded training splits and gathers."""
        return self.latent_parameters()

    @torch.no_grad()
    def reset_latents(self, idx: Tensor, enc: Tensor, dec: Tensor) -> None:
        """Re-point latents `idx` (resampling): encoder columns `enc` [n, d_in], decoder rows
        `dec` [n, d_out], biases zero. Architectures with more per-latent tensors extend this."""
        self.W_dec[idx] = dec.to(self.W_dec.dtype)
        self.W_enc[:, idx] = enc.T.to(self.W_enc.dtype)
        self.b_enc[idx] = 0.0

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[n, d_in]: the linear map from the encoder input to latents `idx`'s pre-activations
        (what attribution differentiates through)."""
        return self.W_enc[:, idx].T

    # ---- serialisation (SAELens tensor names) -----------------------------------------------
    def weights_for_saving(self) -> dict[str, Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict({k: v for k, v in tensors.items()}, strict=True)

    def extra_repr(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.k is not None else ""
        return f"{c.architecture}: d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.d_out}{k}, skip={c.skip}"
