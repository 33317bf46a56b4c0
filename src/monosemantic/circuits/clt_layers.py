"""A cross-layer transcoder as the replacement model sees it: one spliced view per layer.

View i reads blocks.L_i.mlp.hook_in with layer i's encoder and replaces blocks.L_i.hook_mlp_out by
b_dec_i + sum_{j <= i} f_j W_dec_j[:, i - j], i.e. its output has several *sources* (the views of
layers j <= i with their decoder blocks), where a per-layer transcoder has one (itself, W_dec).
Graph nodes are per view: node id `{layer}_{latent within the layer}_{pos}`, as circuit-tracer
numbers CLT features.
"""

from __future__ import annotations

from torch import Tensor, nn

from monosemantic.dictionaries.base import Dictionary, DictionaryMeta
from monosemantic.utils.errors import MonosemanticError


class CLTLayer(nn.Module):
    """Layer-index `i` of a CLT: its encoder, its latents, and its decoder bias."""

    def __init__(self, clt: nn.Module, i: int) -> None:
        super().__init__()
        self.clt, self.i = clt, i
        self.cfg = DictionaryMeta(
            architecture=clt.architecture,
            d_in=clt.d_layer_in,
            d_sae=clt.n_per_layer,
            d_out=clt.d_layer_out,
            hook_name=str(clt.sites_in[i]),
            hook_name_out=str(clt.sites_out[i]),
            apply_b_dec_to_input=False,
            settings=clt.settings,
        )
        self.W_skip = None

    @property
    def W_enc(self) -> Tensor:  # [d_in, n]
        return self.clt.W_enc[self.i]

    @property
    def b_dec(self) -> Tensor:  # [d_out]
        return self.clt.b_dec[self.i]

    def encode(self, x: Tensor) -> Tensor:
        return self.clt.encode_site(self.i, x)

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[n, d_in]: layer i's encoder columns of latents `idx` (pre-activations are linear in x)."""
        return self.W_enc[:, idx].T

    def decoder_from(self, j: int) -> Tensor:
        """[n, d_out]: how the latents of layer-index j (<= i) write to this layer's output."""
        return self.clt.decoder(j, self.i)


def layer_views(dic: Dictionary) -> list[CLTLayer] | None:
    """One view per site for a multi-site dictionary (a cross-layer transcoder); None for a
    single-site one."""
    if not dic.multi_site:
        return None
    if not dic.causal:
        raise MonosemanticError(
            f"a {dic.architecture} reads later layers to encode earlier ones, so it cannot be spliced "
            "into a causal replacement model; trace circuits with transcoders or a cross-layer transcoder"
        )
    return [CLTLayer(dic, i) for i in range(dic.n_sites)]


def feature_offset(view: nn.Module) -> int:
    """Where a view's latents start in its dictionary's own numbering (0 for single-site ones)."""
    return view.i * view.cfg.d_sae if isinstance(view, CLTLayer) else 0


def same_clt(a: nn.Module, b: nn.Module) -> bool:
    return isinstance(a, CLTLayer) and isinstance(b, CLTLayer) and a.clt is b.clt
