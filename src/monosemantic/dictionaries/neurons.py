"""Neuron baseline: the MLP's own hidden units as a transcoder from `blocks.L.mlp.hook_in` to
`blocks.L.hook_mlp_out` (the comparison of Cunningham et al. 2023 and transcoder_circuits).

Nothing is learnt: `fit` copies layer L's MLP from the subject model, so W_enc/b_enc are its input
projection, W_dec/b_dec its output projection, and a latent is a neuron's activation
act(x W_enc + b_enc) with the MLP's own activation function (recorded in cfg.json's
`metadata.activation_function`). Without `k` the "dictionary" is the MLP exactly; with `k`, only
each token's k largest neuron activations are kept (GELU activations can be slightly negative:
those are dropped too). d_sae must equal the MLP width. GPT-2 and GPT-NeoX MLPs are supported
(gated MLPs, as in Llama, have no single neuron basis of this form).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from monosemantic.utils.errors import ConfigError

from .base import DictionaryMeta, LossOutput, TrainStepState, register_dictionary
from .fitted import FittedConfig
from .single_site import SingleSiteDictionary


@register_dictionary("neurons", FittedConfig)
class NeuronDictionary(SingleSiteDictionary):
    fitted: ClassVar[bool] = True
    unit_norm_decoder = False

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        self._act = None

    def _activation(self):
        if self._act is None:
            from transformers.activations import ACT2FN

            name = self.cfg.metadata.get("activation_function")
            if name is None:
                raise ConfigError(
                    "this neurons dictionary was never fitted (no metadata.activation_function)"
                )
            self._act = ACT2FN[name]
        return self._act

    def encode(self, x: Tensor) -> Tensor:
        f = self._activation()(self._check_input(x, self.d_in) @ self.W_enc + self.b_enc)
        if self.settings.k is None:
            return f
        top = f.topk(self.settings.k, dim=-1, sorted=False)
        return torch.zeros_like(f).scatter_(-1, top.indices, top.values.clamp_min(0))

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        with torch.no_grad():
            f = self.encode(x)
            y_hat = self.decode(f, x)
            mse = self.mse_per_token(y_hat, self._check_input(y, self.d_out, "target"))
        return LossOutput(mse, y_hat, f=f, terms={"mse_per_token": mse})

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        scale_in: float = 1.0,
        scale_out: float = 1.0,
        model_name: str | None = None,
    ) -> None:
        """Copy the MLP of the layer `hook_name` names, in the trainer's scaled space (x*scale_in -> y*scale_out)."""
        from monosemantic.lm.model import load_model

        site, site_out = self.cfg.site, self.cfg.site_out
        hooks = (site.hook, site_out.hook) if site is not None and not site.is_group else None
        layer = site.layer if hooks else None
        if hooks != ("mlp.hook_in", "hook_mlp_out") or site_out.is_group or site_out.layer != layer:
            raise ConfigError(
                "architecture 'neurons' maps blocks.L.mlp.hook_in to blocks.L.hook_mlp_out of one layer; "
                f"got site={self.cfg.hook_name!r}, site_out={self.cfg.hook_name_out!r}"
            )
        if model_name is None:
            raise ConfigError("architecture 'neurons' needs the subject model ([model].name) to copy its MLP")
        hf = load_model(model_name, dtype="float32", device="cpu").hf
        mtype = hf.config.model_type
        if mtype == "gpt2":
            mlp = hf.transformer.h[layer].mlp
            w_in, b_in = mlp.c_fc.weight, mlp.c_fc.bias  # Conv1D: [d_in, d_mlp]
            w_out, b_out = mlp.c_proj.weight, mlp.c_proj.bias  # [d_mlp, d_out]
            act = hf.config.activation_function
        elif mtype == "gpt_neox":
            mlp = hf.gpt_neox.layers[layer].mlp
            w_in, b_in = mlp.dense_h_to_4h.weight.T, mlp.dense_h_to_4h.bias  # Linear: [d_mlp, d_in]
            w_out, b_out = mlp.dense_4h_to_h.weight.T, mlp.dense_4h_to_h.bias
            act = hf.config.hidden_act
        else:
            raise ConfigError(f"architecture 'neurons' supports GPT-2 and GPT-NeoX MLPs, not {mtype!r}")
        if w_in.shape[1] != self.d_sae:
            raise ConfigError(
                f"the MLP of layer {layer} has {w_in.shape[1]} neurons; set d_sae = {w_in.shape[1]}"
            )
        # scaled space: pre = (x s_in)(W_in / s_in) + b_in, and y s_out = act(pre)(W_out s_out) + b_out s_out
        self.W_enc.copy_(w_in / scale_in)
        self.b_enc.copy_(b_in)
        self.W_dec.copy_(w_out * scale_out)
        self.b_dec.copy_(b_out * scale_out)
        self.cfg.metadata["activation_function"] = act
        self._act = None

    # The activation's name travels with the weights in trainer state (resume), and in cfg.json's
    # metadata in a saved checkpoint (not in the safetensors file, which holds tensors only).
    def get_extra_state(self) -> dict[str, str | None]:
        return {"activation_function": self.cfg.metadata.get("activation_function")}

    def set_extra_state(self, state: dict[str, str | None]) -> None:
        if state and state.get("activation_function"):
            self.cfg.metadata["activation_function"] = state["activation_function"]
            self._act = None

    def weights_for_saving(self) -> dict[str, Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k != "_extra_state"}

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict({**tensors, "_extra_state": self.get_extra_state()}, strict=True)

    # a copied MLP is not moved or renormalised by the trainer's hooks
    def set_decoder_norm_to_unit_norm(self) -> None:
        pass

    def initialize_b_dec(self, value: Tensor) -> None:
        pass

    def fold_decoder_norm(self) -> None:
        """Neuron activations are not positively homogeneous (GELU): the rows keep their norms."""
