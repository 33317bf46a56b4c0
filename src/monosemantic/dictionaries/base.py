"""The `Dictionary` contract every dictionary kind meets, and the registry of kinds by name.

A kind is one module: a `Dictionary` subclass and its config class (a `DictionaryConfig` subclass
holding the kind's own keys), registered together with `@register_dictionary(name, Config)`
(SAELens's pattern). Single-site kinds (SAEs, transcoders, the baselines) build on
`SingleSiteDictionary` (`single_site.py`, the SAELens weight layout); kinds that read or write
several sites (CLTs, crosscoders) on `MultiSiteDictionary` (`multi_site.py`). Either way the rest
of the pipeline asks the dictionary, never its name: which sites it reads and writes (`sites_in`,
`sites_out`), whether it can be spliced causally (`causal`, `encode_site`, `decode_site`), where its
latents live (`home_sites`, `decoder_norms`), and the trainer's facts below.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from monosemantic.config.dictionary import DictionaryConfig, register_config
from monosemantic.config.site import Site
from monosemantic.utils.errors import ConfigError, DataError, MonosemanticError

from .types import DictionaryMeta, LossOutput, Penalty, SparseCodes, TrainStepState

__all__ = ["Dictionary", "DictionaryMeta", "LossOutput", "Penalty", "SparseCodes", "TrainStepState",
           "default_aux_k", "dictionary_class", "firing_quantile", "register_dictionary",
           "start_density"]  # fmt: skip

if TYPE_CHECKING:
    from .sharding import Sharding

_REGISTRY: dict[str, type[Dictionary]] = {}


def register_dictionary(name: str, config: type[DictionaryConfig]):
    """Class decorator: make a kind buildable and loadable by `name`, with `config` its config class
    (the keys of `[dictionary]` it takes). A name can be registered once."""

    def wrap(cls: type[Dictionary]) -> type[Dictionary]:
        if name in _REGISTRY:
            raise MonosemanticError(
                f"dictionary architecture {name!r} is already registered by {_REGISTRY[name].__module__}; "
                "choose another name"
            )
        cls.architecture = name
        cls.Config = config
        _REGISTRY[name] = cls
        register_config(name, config)
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


def reconstruction_scale(part: Tensor, target: Tensor, min_cosine: float = 0.1) -> float:
    """The factor a minimising ||target - a * part||^2 over rows: how much larger the latents'
    contribution to a reconstruction should be (1 when it is already the right size). 1 also when
    the two are nearly unrelated (cosine below `min_cosine`, as for a transcoder whose random
    decoder has nothing to do with its target yet): a fit to noise would only shrink the encoder."""
    part, target = part.detach().double().flatten(), target.detach().double().flatten()
    dot, norm = part @ target, part.norm() * target.norm()
    if not bool(norm > 0) or float(dot / norm) < min_cosine:
        return 1.0
    return float(dot / (part @ part))


def start_density(target_l0: float | None, d_sae: int) -> float | None:
    """The firing rate each latent starts at when a run asks for `target_l0`: L0 starts at the
    target, every latent alive (None without a target)."""
    return None if target_l0 is None else min(target_l0 / d_sae, 0.5)


def default_aux_k(d_in: int, n_latents: int) -> int:
    """AuxK's dead latents per token: half the width an encoder reads (Gao et al.: about
    d_model / 2), at most its latents."""
    return min(max(d_in // 2, 1), n_latents)


class Dictionary(nn.Module, abc.ABC):
    """A sparse dictionary: `encode(x) -> f`, `decode(f, x) -> y_hat`, its training loss, and what the
    pipeline must know about it (class attributes below, and the site methods)."""

    architecture: ClassVar[str] = ""
    Config: ClassVar[type[DictionaryConfig]] = DictionaryConfig
    # Reads or writes several sites, concatenated (CLT, crosscoder): x is [..., sum of site widths].
    multi_site: ClassVar[bool] = False
    # Its outputs at a site depend only on inputs at that site's layer or earlier, so it can be spliced
    # into a forward pass (`encode_site` / `decode_site`); an acausal crosscoder cannot.
    causal: ClassVar[bool] = True
    # Whether the recipe constrains decoder rows to unit norm (the trainer then calls
    # `remove_gradient_parallel_to_decoder_directions` before and `set_decoder_norm_to_unit_norm`
    # after each optimiser step). Instances may decide (a ReLU SAE from `l1_decoder_norm`).
    unit_norm_decoder: bool = True
    # Fitted from the first batches in one pass (baselines): the trainer takes no gradient step.
    fitted: ClassVar[bool] = False
    # Its latents can be re-pointed at badly reconstructed inputs (`train.dead_latents = "resample"`).
    can_resample: ClassVar[bool] = False
    # Its latents can be split over ranks (`train.parallel = "features"`, dictionaries/sharding.py).
    shardable: ClassVar[bool] = False
    # Has no scale-dependent hyper-parameter (one-site TopK / BatchTopK): unless
    # `train.normalize_activations` says otherwise, a run of only these scales its inputs to mean
    # norm 2, not sqrt(d) (`Trainer.input_norm`).
    scale_free: ClassVar[bool] = False
    # Trains at a constant learning rate unless `train.lr_decay` says otherwise (one-site TopK /
    # BatchTopK: decaying cost planted toy directions, benchmarks/bench_toy_recovery.py).
    constant_lr: ClassVar[bool] = False
    # The penalty whose coefficient the target-L0 controller tunes; None for TopK-style rules.
    penalty: Penalty | None = None
    # The fraction of that coefficient the controller starts from (`training/l0_control.py`;
    # the rule's `Activation.controller_start`, or the architecture's own).
    controller_start: float = 0.01
    # Its latents need whole sequences (attention over positions, Lorsa): the trainer serves windows
    # of consecutive positions in order (rows of whole windows, `TrainStepState.seq_len`), not
    # shuffled token rows, and `encode` takes x [..., T, d_in].
    sequence_level: ClassVar[bool] = False
    # The SAELens 6 architecture that runs this dictionary at inference (default: our name).
    saelens_name: ClassVar[str | None] = None
    # Set by the distributed trainer when rows or latents are split over ranks (TopK family).
    sharding: Sharding | None = None

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__()
        self.cfg = cfg

    # ---- configuration: from a [dictionary] section to a DictionaryMeta -------------------------
    @classmethod
    def resolve(cls, cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> DictionaryMeta:
        """The meta of a dictionary for `cfg` on d_in-wide inputs (d_out-wide outputs for a
        transcoder), before any weight exists; `configure` fills the architecture's defaults."""
        d_out = d_in if d_out is None else d_out
        is_transcoder = d_out != d_in or (cfg.site_out is not None and cfg.site_out != cfg.site)
        meta = DictionaryMeta(
            architecture=cfg.architecture,
            d_in=d_in,
            d_sae=cls.width(cfg, d_in),
            d_out=d_out,
            hook_name=cfg.site,
            hook_name_out=cfg.site_out if is_transcoder else None,
            skip=cfg.skip,
            apply_b_dec_to_input=not is_transcoder,
            settings=cfg.model_copy(deep=True),
        )
        cls.configure(meta)
        return meta

    @staticmethod
    def width(cfg: DictionaryConfig, d_in: int) -> int:
        if cfg.d_sae is not None:
            return cfg.d_sae
        if cfg.expansion is not None:
            return cfg.expansion * d_in
        raise ConfigError("[dictionary] needs d_sae or expansion (d_sae = expansion x d_in); set one of them")

    @classmethod
    def default_decoder_init_norm(cls, meta: DictionaryMeta) -> float:
        """Initial decoder row norm: 1, or 0.1 where rows are free (no unit-norm constraint)."""
        return 1.0

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        """Fill this architecture's defaults into `meta.settings` and reject settings that do not fit
        the shapes (ConfigError, one line). Called once when a dictionary is built from a config."""
        if meta.settings.decoder_init_norm is None and "decoder_init_norm" not in cls.Config.REFUSED:
            meta.settings.fill(decoder_init_norm=cls.default_decoder_init_norm(meta))

    @classmethod
    def sparse_training(cls, cfg: DictionaryConfig) -> bool:
        """Whether a training step costs k-sparse work (a TopK-family selection), for `plan`."""
        return False

    @property
    def settings(self) -> DictionaryConfig:
        """The architecture's own settings (its config class, defaults resolved)."""
        return self.cfg.settings

    def penalty_coefficient(self) -> float:
        """The configured sparsity coefficient (before warm-up and the L0 controller)."""
        if self.penalty is None:
            raise MonosemanticError(f"architecture {self.architecture!r} has no sparsity penalty")
        return float(getattr(self.settings, self.penalty.field))

    @classmethod
    def inference_form(cls) -> str:
        """The SAELens name of the rule that runs it at inference ("standard" for ReLU; BatchTopK and
        Matryoshka run as "jumprelu" with their learned thresholds)."""
        return cls.saelens_name or cls.architecture

    @classmethod
    def saelens_architecture(cls, meta: DictionaryMeta) -> str:
        """The SAELens 6 architecture name that runs this dictionary at inference."""
        inference = cls.inference_form()
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

    def saved_cfg(self) -> dict[str, Any]:
        """cfg.json keys of this kind's own layout, merged over the SAELens keys (a CLT's layers)."""
        return {}

    # ---- shapes, dtypes and sites ------------------------------------------------------------
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
        return self.b_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.b_dec.device

    @property
    def k(self) -> int | None:
        """Latents kept per token where the kind fixes it (TopK family; a baseline's optional k)."""
        return getattr(self.settings, "k", None)

    @property
    def sites_in(self) -> list[Site]:
        """The concrete sites it reads, in the order its input concatenates them ([] if unknown)."""
        site = self.cfg.site
        return [] if site is None else site.sites()

    @property
    def sites_out(self) -> list[Site]:
        """The concrete sites it writes (an SAE writes the site it reads)."""
        site = self.cfg.site_out
        return [] if site is None else site.sites()

    @property
    def n_sites(self) -> int:
        """Input sites (and output sites: kinds write as many sites as they read)."""
        return 1

    @property
    def d_site_in(self) -> int:
        return self.d_in // self.n_sites

    @property
    def d_site_out(self) -> int:
        return self.d_out // self.n_sites

    def home_sites(self) -> Tensor | None:
        """[d_sae]: the input site each latent reads (a CLT latent its layer's), or None when every
        latent reads every site (a crosscoder)."""
        return torch.zeros(self.d_sae, dtype=torch.long)

    def latents_at(self, i: int) -> slice:
        """The latents homed at input site i, in the dictionary's own numbering."""
        return slice(None)

    def decoder_norms(self) -> Tensor:
        """[d_sae, n_sites]: each latent's decoder norm at each output site."""
        return self.site_decoders().norm(dim=-1)

    @abc.abstractmethod
    def site_decoders(self) -> Tensor:
        """[d_sae, n_sites, d_site_out]: each latent's decoder row at each output site (0 where it
        does not write)."""

    @abc.abstractmethod
    def site_encoders(self) -> Tensor | None:
        """[d_site_in, d_sae]: each latent's encoder direction on the site it reads, or None when
        latents read several sites."""

    def encode_site(self, i: int, x: Tensor) -> Tensor:
        """The latents homed at input site i from that site's activations (a causal splice)."""
        if i != 0:
            raise MonosemanticError(f"{self.architecture} reads one site, not site {i}")
        return self.encode(x)

    def decode_site(self, j: int, fs: list[Tensor], x: Tensor | None = None) -> Tensor:
        """Output site j from the latents fs[s] of input sites s <= j (`x`: site j's input, for skips)."""
        if j != 0:
            raise MonosemanticError(f"{self.architecture} writes one site, not site {j}")
        return self.decode(fs[0], x)

    def _check_input(self, x: Tensor, width: int, what: str = "input") -> Tensor:
        if x.shape[-1] != width:
            raise DataError(
                f"{what} has width {x.shape[-1]} but this dictionary expects {width} "
                f"(site {self.cfg.hook_name or '?'}); pass activations from the site it was trained on"
            )
        return (
            x.to(self.dtype) if x.dtype != self.dtype and not torch.is_autocast_enabled(x.device.type) else x
        )

    # ---- the model --------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Latent activations f [..., d_sae] (the inference-time activation function)."""

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """`encode(x)` [n, d_in] as int32 (row, feature) coordinates and values grouped by row,
        without the dense [n, d_sae] output, where the rule allows it cheaply (TopK); else None."""
        return None

    def attended_keys(
        self, x: Tensor, latents: Tensor, positions: Tensor, n: int
    ) -> tuple[Tensor, Tensor] | None:
        """Where latents look: for one window x [T, d_in] and m (latent, query position) pairs, the
        n key positions each attends to most and their attention weights ([m, n] each; weight 0
        past the query), for kinds whose latents attend over positions (Lorsa); else None."""
        return None

    @abc.abstractmethod
    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """y_hat [..., d_out] from latents f (and the input x, for skip transcoders)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), x)

    @abc.abstractmethod
    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        """Loss on a batch x [B, d_in] with target y [B, d_out] (y is x for an SAE)."""

    @abc.abstractmethod
    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[n, d_in]: the linear map from the encoder input to latents `idx`'s pre-activations
        (what attribution differentiates through)."""

    # ---- helpers shared by the losses -------------------------------------------------------
    @staticmethod
    def mse_per_token(y_hat: Tensor, y: Tensor) -> Tensor:
        """Squared error summed over features, averaged over rows: the training loss's term (the SAELens
        convention), logged as `mse_per_token`, the name metrics.json gives the same quantity; `mse`
        is per element everywhere (metrics.json)."""
        return (y_hat.float() - y.float()).pow(2).sum(-1).mean()

    def sparsity_coefficient(self, state: TrainStepState, default: float) -> float:
        coef = default if state.sparsity_coefficient is None else state.sparsity_coefficient
        return coef * state.sparsity_scale

    @staticmethod
    def l0(f: Tensor) -> Tensor:
        return (f > 0).float().sum(-1).mean()

    # ---- hooks for the trainer (no-ops where a kind needs none) --------------------------------
    @abc.abstractmethod
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Unit decoder rows (over every site a latent writes)."""

    @abc.abstractmethod
    def remove_gradient_parallel_to_decoder_directions(self, rows_are_unit: bool = False) -> None:
        """Project out the radial part of the decoder gradient, so Adam moves rows along the sphere."""

    @abc.abstractmethod
    def fold_decoder_norm(self) -> None:
        """Rescale to unit-norm decoder rows without changing any output."""

    @abc.abstractmethod
    def initialize_b_dec(self, value: Tensor) -> None:
        """Set b_dec (the trainer passes the geometric median of the target activations)."""

    @torch.no_grad()
    def initialize_from_data(
        self, x: Tensor, target_l0: float | None = None, y: Tensor | None = None
    ) -> None:
        """Data-dependent initialisation on the first batches' inputs `x` and targets `y` (after
        `b_dec`), knowing the run's `target_l0` if it has one; most architectures need none
        (JumpReLU places its thresholds so that it starts at the target)."""

    @abc.abstractmethod
    def fold_activation_scale(
        self, scale_in: float | Tensor, scale_out: float | Tensor | None = None
    ) -> None:
        """Make a dictionary trained on (s_in x, s_out y) work on raw (x, y) (per-site scales
        [sum of widths] for a multi-site kind)."""

    def latent_parameters(self) -> dict[str, int]:
        """Trainable tensors indexed by latent, with the axis that indexes latents (for resampling
        and resetting optimiser moments)."""
        return {}

    def latent_state(self) -> dict[str, int]:
        """Every state tensor indexed by latent (parameters and buffers such as a running
        threshold), with its latent axis: what feature-sharded training splits and gathers."""
        return self.latent_parameters()

    def reset_latents(self, idx: Tensor, enc: Tensor, dec: Tensor) -> None:
        """Re-point latents `idx` (resampling): encoder columns `enc` [n, d_in], decoder rows `dec`."""
        raise MonosemanticError(
            f"{self.architecture} dictionaries cannot resample latents; use dead_latents='auxk'"
        )

    # ---- serialisation -----------------------------------------------------------------------
    def weights_for_saving(self) -> dict[str, Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict(dict(tensors), strict=True)
