"""`SingleSiteDictionary`: one site in, one site out, in the SAELens weight layout.

Every single-site kind holds `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`,
`b_dec [d_out]` (and `W_skip [d_in, d_out]` for skip transcoders), so saving is a plain state-dict
dump. An SAE is the case d_out == d_in with the output site equal to the input site; a transcoder
maps `hook_name` to `hook_name_out`. Kinds override `encode` and `training_loss`, and where they
hold more per-latent tensors, the resampling and folding hooks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from monosemantic.utils.errors import DataError, MonosemanticError

from .base import Dictionary, reconstruction_scale
from .sparse_encoder import sparse_decode
from .types import DictionaryMeta, SparseCodes


class SingleSiteDictionary(Dictionary):
    can_resample = True

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.d_out
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.W_skip = nn.Parameter(torch.zeros(d_in, d_out)) if cfg.skip else None
        self.reset_parameters()

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
        init_norm = self.settings.decoder_init_norm or self.default_decoder_init_norm(self.cfg)
        w *= init_norm / w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        if self.d_in == self.d_out:
            self.W_enc.copy_(w.T)
        else:
            e = torch.randn(self.d_in, self.d_sae)
            self.W_enc.copy_(e * (init_norm / e.norm(dim=0, keepdim=True)))

    def _input(self, x: Tensor) -> Tensor:
        """The encoder input: x minus b_dec for SAEs (SAELens `apply_b_dec_to_input`)."""
        x = self._check_input(x, self.d_in)
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x: Tensor) -> Tensor:
        return self._input(x) @ self.W_enc + self.b_enc

    # ---- the model --------------------------------------------------------------------------
    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """y_hat = f W_dec + b_dec (+ x W_skip for skip transcoders, which need x)."""
        if f.shape[-1] != self.d_sae:
            raise DataError(f"latents have width {f.shape[-1]} but this dictionary has d_sae={self.d_sae}")
        out = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return self._add_skip(out, x)

    @torch.no_grad()
    def encoder_scale_from_data(self, x: Tensor, y: Tensor | None = None) -> float:
        """The factor on the encoder side (weights and biases: the same latents fire) that makes
        the latents' part of the reconstruction of `y` (the targets of the rows of `x`; `x` itself
        when None) the right size, by least squares; 1 when it already is, or when that part is
        unrelated to `y` (`reconstruction_scale`)."""
        y = x if y is None else y[: len(x)].to(x)
        f = self.encode(x)
        part = f.to(self.W_dec.dtype) @ self.W_dec
        scale = reconstruction_scale(part, y - (self.decode(f, x) - part))
        return scale if math.isfinite(scale) else 1.0

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

    def site_decoders(self) -> Tensor:
        return self.W_dec[:, None, :]

    def site_encoders(self) -> Tensor:
        return self.W_enc

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[n, d_in]: the linear map from the encoder input to latents `idx`'s pre-activations."""
        return self.W_enc[:, idx].T

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
        self.b_dec.copy_(value.to(self.b_dec))

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

    # ---- dead latents -------------------------------------------------------------------------
    def latent_parameters(self) -> dict[str, int]:
        axes = {"W_enc": 1, "W_dec": 0, "b_enc": 0}
        return {n: a for n, a in axes.items() if isinstance(getattr(self, n, None), nn.Parameter)}

    @torch.no_grad()
    def reset_latents(self, idx: Tensor, enc: Tensor, dec: Tensor) -> None:
        """Re-point latents `idx` (resampling): encoder columns `enc` [n, d_in], decoder rows
        `dec` [n, d_out], biases zero. Architectures with more per-latent tensors extend this."""
        self.W_dec[idx] = dec.to(self.W_dec.dtype)
        self.W_enc[:, idx] = enc.T.to(self.W_enc.dtype)
        self.b_enc[idx] = 0.0

    def extra_repr(self) -> str:
        c = self.cfg
        return f"{'-'.join(self.settings.name_parts())}: d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.d_out}, skip={c.skip}"
