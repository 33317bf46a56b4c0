"""`MultiSiteDictionary`: one dictionary over several sites, read and written concatenated.

A multi-site kind (a cross-layer transcoder, an acausal crosscoder) reads the sites its
`hook_name` lists (`blocks.{0,1,2}.mlp.hook_in`: one per layer, or `{a,b}:blocks.2.hook_X`: one
per model) as one input x = [x_0 | ... | x_{L-1}] and writes those of `hook_name_out` the same
way. Its config names the kind (`architecture = "clt"`) and the activation rule it applies
(`activation = "jumprelu"`, a shared object from `activations.py`), whose keys it then takes and
no others. This base holds the bookkeeping the kinds share: the sites and their widths, per-site
activation scales, the decoder-norm hooks and the rule's state on save and load.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.config.site import Site
from monosemantic.utils.errors import ConfigError, MonosemanticError

from .activations import ACTIVATIONS, Activation, JumpReLUSettings, ReLUSettings, TopKSettings
from .base import Dictionary, DictionaryMeta, TrainStepState, default_aux_k
from .topk import check_k

_RULE_KEYS = {name: set(a.Settings.model_fields) for name, a in ACTIVATIONS.items()}
_ALL_RULE_KEYS = set().union(*_RULE_KEYS.values())


class MultiSiteConfig(ReLUSettings, JumpReLUSettings, TopKSettings, DictionaryConfig):
    """Every activation rule's keys; a section takes those of its `activation` only."""

    REFUSED = frozenset({"skip"})

    activation: Literal["relu", "jumprelu", "topk", "batchtopk"] | None = Field(
        None,  # required: checked below with one line
        description="clt / crosscoder: the activation rule applied to each layer's latents (clt) or to the "
        "one latent space (crosscoder): relu (decoder-norm-weighted L1) | jumprelu (L0) | topk | batchtopk.",
    )

    @classmethod
    def applicable(cls, data: dict[str, Any]) -> set[str]:
        rule = data.get("activation")
        return super().applicable(data) - (_ALL_RULE_KEYS - _RULE_KEYS.get(rule, _ALL_RULE_KEYS))

    @property
    def rule(self) -> type[Activation]:
        return ACTIVATIONS[self.activation]

    @model_validator(mode="after")
    def _check_rule(self) -> MultiSiteConfig:
        if self.activation is None:
            raise ValueError(
                f"architecture {self.architecture!r} needs activation = relu | jumprelu | topk | batchtopk"
            )
        stray = sorted(
            k
            for k in (self.model_fields_set & _ALL_RULE_KEYS) - _RULE_KEYS[self.activation]
            if self.differs(k)
        )
        if stray:
            raise ValueError(
                f"{stray[0]} does not apply to a {self.architecture} with activation {self.activation!r}; remove it"
            )
        if self.rule.selects and self.k is None:
            raise ValueError(
                f"a {self.activation} {self.architecture} needs k (per layer for a clt); set dictionary.k"
            )
        if self.target_l0 is not None and self.rule.penalty is None:
            raise ValueError(
                f"target_l0 does not apply to a {self.architecture} with activation {self.activation!r} "
                "(it has no sparsity penalty); set k instead"
            )
        return self

    def check_sites(self, *sites: Site) -> None:
        site = sites[0] if sites else None
        if site is not None and not site.is_group:
            raise ValueError(
                f"architecture {self.architecture!r} reads several sites: give site as blocks.*.hook_NAME "
                f"(or blocks.{{0,1}}.hook_NAME), not {str(site)!r}"
            )

    def name_parts(self) -> list[str]:
        """Named by its rule, as before `architecture = "clt"` existed (`tc-blocks.all.mlp.hook_in-topk-k16`)."""
        return [self.activation] + ([f"k{self.k}"] if self.rule.selects else [])


class MultiSiteDictionary(Dictionary):
    multi_site = True
    # A CLT has d_sae latents per layer (each layer's encoder its own); a crosscoder d_sae in all.
    latents_per_site: ClassVar[bool] = True

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        self.activation: Activation = cfg.settings.rule(cfg.settings)
        self.penalty = self.activation.penalty  # what the target-L0 controller tunes
        self.controller_start = self.activation.controller_start
        self.unit_norm_decoder = self.activation.unit_norm_decoder
        self.W_skip = None
        L = self.n_layers
        if L == 0 or cfg.d_in % L or cfg.d_out % L or (self.latents_per_site and cfg.d_sae % L):
            raise MonosemanticError(
                f"{cfg.architecture} widths d_in={cfg.d_in}, d_out={cfg.d_out}, d_sae={cfg.d_sae} must split "
                f"over its {L} sites"
            )

    # ---- configuration ------------------------------------------------------------------------
    @classmethod
    def resolve(cls, cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> DictionaryMeta:
        """d_in/d_out: the concatenated widths of the sites (`site` a stream key listing them, or a
        glob with `layers`); d_sae, expansion, k and aux_k count per layer for a CLT."""
        site, site_out = cfg.input_site, cfg.output_site
        if site is None:
            raise ConfigError(f"architecture {cfg.architecture!r} needs site, like blocks.*.mlp.hook_in")
        if site.is_glob and cfg.layers:
            site, site_out = site.with_layers(cfg.layers), site_out and site_out.with_layers(cfg.layers)
        if site.is_glob:
            raise ConfigError(
                f"site {site}: list its layers (dictionary.layers) before building the dictionary"
            )
        L, d_out = len(site.sites()), d_in if d_out is None else d_out
        if d_in % L or d_out % L:
            raise ConfigError(f"{site}: widths {d_in}/{d_out} do not split over its {L} sites")
        n = cls.width(cfg, d_in // L)
        meta = DictionaryMeta(
            architecture=cfg.architecture,
            d_in=d_in,
            d_sae=n * L if cls.latents_per_site else n,
            d_out=d_out,
            hook_name=str(site),
            hook_name_out=str(site_out or site),
            apply_b_dec_to_input=False,
            settings=cfg.model_copy(deep=True),
        )
        cls.configure(meta)
        return meta

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        s = meta.settings
        L = len(meta.site.sites())
        n = meta.d_sae // L if cls.latents_per_site else meta.d_sae
        check_k(meta, n, f" ({n}, per layer for a clt)" if cls.latents_per_site else "")
        if s.decoder_init_norm is None:  # TopK-style rules hold unit decoders; free rows start small
            s.fill(decoder_init_norm=s.rule.decoder_init_norm)
        if s.rule.selects and s.aux_k is None:  # AuxK picks aux_k dead latents per encoder
            s.fill(aux_k=default_aux_k(meta.d_in // L if cls.latents_per_site else meta.d_in, n))

    @classmethod
    def sparse_training(cls, cfg: DictionaryConfig) -> bool:
        return cfg.rule.selects

    # ---- sites and shapes ---------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """The layer of each site it reads (a model pair lists its layer twice)."""
        return self.cfg.site.layer_list()

    @property
    def n_layers(self) -> int:
        return len(self.cfg.site.sites())

    @property
    def n_sites(self) -> int:
        return self.n_layers

    @property
    def n_per_layer(self) -> int:
        """Latents each site's encoder has (a crosscoder's one space: all of them)."""
        return self.cfg.d_sae // self.n_layers if self.latents_per_site else self.cfg.d_sae

    @property
    def d_layer_in(self) -> int:
        return self.cfg.d_in // self.n_layers

    @property
    def d_layer_out(self) -> int:
        return self.cfg.d_out // self.n_layers

    @property
    def dtype(self) -> torch.dtype:
        return self.b_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.b_enc.device

    def _split(self, x: Tensor, width: int, what: str) -> Tensor:
        """[..., L*width] -> [..., L, width]."""
        x = self._check_input(x, width * self.n_layers, what)
        return x.view(*x.shape[:-1], self.n_layers, width)

    def _layer_scales(self, scale: float | Tensor, width: int) -> Tensor:
        """[L]: one scale per site, from a float or the trainer's per-site [L*width] vector."""
        if torch.is_tensor(scale):
            return scale.detach().float().cpu().view(self.n_layers, width)[:, 0].to(self.device, self.dtype)
        return torch.full((self.n_layers,), float(scale), device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def decoder_norm_share(self, layers_a: list[int], training_scale: bool = False) -> Tensor:
        """[n]: the fraction of each latent's decoder norm on the layer-indices `layers_a` (model
        diffing: 1 = only model A, 0 = only model B, 0.5 = shared). Norms are those of the saved,
        raw-scale decoders, or with `training_scale` of the decoders in the scale training saw
        (each layer's block times its `metadata.training.activation_scale`, which puts every layer
        or model at the same mean input norm): use that when the sites' norms differ."""
        norms = self.decoder_norms()
        if training_scale:
            norms = norms * self.training_scales().to(norms)
        return norms[:, layers_a].sum(1) / norms.sum(1).clamp_min(1e-12)

    def training_scales(self) -> Tensor:
        """[L]: the input scale each layer had in training (1 where none was recorded)."""
        scale = ((self.cfg.metadata or {}).get("training") or {}).get("activation_scale", 1.0)
        return torch.as_tensor(scale, dtype=torch.float32).expand(self.n_layers).clone()

    # ---- training -----------------------------------------------------------------------------
    def _penalised(
        self, mse: Tensor, l1: Tensor | None, l0: Tensor | None, state: TrainStepState
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its logged terms: mse plus the rule's penalty (decoder-norm weighted L1 for
        relu, the L0 count for jumprelu, none for the TopK rules)."""
        loss, terms = mse, {"mse_per_token": mse.detach()}
        if l1 is not None:
            loss = loss + self.sparsity_coefficient(state, self.settings.l1_coefficient) * l1
            terms["l1"] = l1.detach()
        elif l0 is not None:
            loss = loss + self.sparsity_coefficient(state, self.settings.l0_coefficient) * l0
            terms["l0"] = l0.detach()
        return loss, terms

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self._scale_decoders(1.0 / self.concat_decoder_norms().clamp_min(1e-8))

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Unit concatenated decoder norms with the same outputs (pre-activations scale by the norm)."""
        norms = self.concat_decoder_norms().clamp_min(1e-8)
        self._scale_encoders(norms)
        self.activation.fold(self, norms)
        self._scale_decoders(1.0 / norms)

    @torch.no_grad()
    def initialize_b_dec(self, value: Tensor) -> None:
        self.b_dec.copy_(value.to(self.b_dec).view_as(self.b_dec))

    # ---- serialisation ------------------------------------------------------------------------
    def _rule_weights(self) -> dict[str, Tensor]:
        return self.activation.saved(self)

    def _rule_state(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.activation.loaded(tensors, self.b_enc.dtype)

    def saved_cfg(self) -> dict[str, Any]:
        """cfg.json keys that say which sites it reads and writes (merged over the SAELens keys)."""
        c = self.cfg
        return {
            "activation_function": self.settings.activation,
            "n_layers": self.n_layers,
            "layers": self.layers,
            "d_in": self.d_layer_in,
            "d_out": self.d_layer_out,
            "d_sae": c.d_sae,
            "hook_names": [str(s) for s in self.sites_in],
            "hook_names_out": [str(s) for s in self.sites_out],
        }

    def extra_repr(self) -> str:
        k = self.settings.k
        per = "/layer" if self.latents_per_site else ""
        return (
            f"{self.architecture}[{self.settings.activation}]: layers={self.layers}, d_in={self.d_layer_in}, "
            f"n={self.n_per_layer}{per}, d_out={self.d_layer_out}"
            + (f", k={k}{per}" if self.activation.selects else "")
        )
