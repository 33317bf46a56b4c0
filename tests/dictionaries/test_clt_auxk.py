"""AuxK for TopK / BatchTopK cross-layer transcoders and crosscoders: dead latents (per layer's
encoder for a CLT) reconstruct the residual of every output layer they write to."""

import pytest
import torch
import torch.nn.functional as F

from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.base import TrainStepState
from monosemantic.utils.errors import ConfigError

L, D, N, K = 3, 8, 12, 3
SITE_IN, SITE_OUT = "blocks.{0,1,2}.mlp.hook_in", "blocks.{0,1,2}.hook_mlp_out"


def make(activation: str = "topk", crosscoder: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    c = DictionaryConfig(
        architecture="crosscoder" if crosscoder else "clt",
        activation=activation,
        d_sae=N,
        k=K,
        site=SITE_IN,
        site_out=None if crosscoder else SITE_OUT,
        **kw,
    )
    dic = build_dictionary(c, L * D, L * D)
    with torch.no_grad():
        dic.b_dec.normal_(0, 0.3)
    return dic


def batch(seed: int = 1, rows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, L * D, generator=g), torch.randn(rows, L * D, generator=g)


def dead_mask(d_sae: int, idx: list[int]) -> torch.Tensor:
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[idx] = True
    return dead


def grads(dic) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in dic.named_parameters()}


def test_aux_k_defaults_per_layer_and_is_checked():
    clt, cc = make(), make(crosscoder=True)
    assert clt.settings.aux_k == D // 2  # half of one layer's input width, per layer like k
    assert cc.settings.aux_k == N  # half of L*D = 12, capped at the latents
    assert make(aux_k=2).settings.aux_k == 2 and make(aux_coefficient=0.5).settings.aux_coefficient == 0.5
    with pytest.raises(ConfigError, match="aux_k=13 is larger than d_sae"):
        make(aux_k=13)


def test_clt_auxk_matches_dense_reference():
    """Loss and every gradient equal a dense formulation: per layer, the aux_k largest dead
    pre-activations decode into that layer and every later one, against the detached residual."""
    clt = make(aux_k=2)
    x, y = batch()
    dead = dead_mask(L * N, [0, 1, 5, 7, N + 3, 2 * N + 1, 2 * N + 2, 2 * N + 9])  # 4 / 1 / 3 dead per layer
    out = clt.training_loss(x, y, TrainStepState(dead_mask=dead))
    out.loss.backward()
    sparse_grads = grads(clt)
    clt.zero_grad()

    B = x.shape[0]
    z = torch.einsum("bld,ldn->bln", x.view(B, L, D), clt.W_enc) + clt.b_enc  # [B, L, N]
    top = z.topk(K, dim=-1)
    f = torch.zeros_like(z).scatter(-1, top.indices, F.relu(top.values))
    masked = z.masked_fill(~dead.view(L, N), -torch.inf)
    aux_f = torch.zeros_like(z)
    for s in range(L):
        m = min(2, int(dead.view(L, N)[s].sum()))
        t = masked[:, s].topk(m, dim=-1)
        aux_f[:, s] = torch.zeros_like(z[:, s]).scatter(-1, t.indices, t.values)  # raw, no ReLU

    def decode(acts: torch.Tensor) -> torch.Tensor:
        return sum(
            F.pad(torch.einsum("bn,nld->bld", acts[:, s], clt.W_dec[s]), (0, 0, s, 0)) for s in range(L)
        ).flatten(1)

    y_hat = decode(f) + clt.b_dec.flatten()
    mse = (y_hat - y).pow(2).sum(-1).mean()
    scale = min(8 / (L * 2), 1.0)
    auxk = scale * (decode(aux_f) - (y - y_hat).detach()).pow(2).sum(-1).mean()
    (mse + clt.settings.aux_coefficient * auxk).backward()
    assert abs(out.terms["auxk"].item() - auxk.item()) < 1e-4 * auxk.item()
    assert abs(out.terms["mse_per_token"].item() - mse.item()) < 1e-4 * mse.item()
    for n, p in clt.named_parameters():
        assert torch.allclose(sparse_grads[n], p.grad, atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_clt_dead_latents_get_gradient_only_from_auxk(activation):
    """Latents the main rule never selects (K others per layer always win; their own
    pre-activations are negative, as a dead latent's are) get no gradient unless the dead mask
    names them; then their encoder column, bias and decoder rows to every later layer move."""
    clt = make(activation)
    silent = {0: [2, 4], 1: [0]}  # layer -> latents forced silent
    with torch.no_grad():
        clt.b_enc[:, N - K :] = 50.0  # the main selection, every token
        for s, idx in silent.items():
            clt.b_enc[s, idx] = -20.0
    x, y = batch()
    dead = dead_mask(L * N, [s * N + j for s, idx in silent.items() for j in idx])
    for mask in (None, dead):
        clt.zero_grad()
        out = clt.training_loss(x, y, TrainStepState(dead_mask=mask))
        assert ("auxk" in out.terms) == (mask is not None)
        out.loss.backward()
        for s, idx in silent.items():
            enc = clt.W_enc.grad[s][:, idx].abs().amax().item()
            bias = clt.b_enc.grad[s, idx].abs().amax().item()
            dec = clt.W_dec[s].grad[idx].abs().amax(dim=(0, 2))  # per output layer >= s
            if mask is None:
                assert enc < 1e-12 and bias < 1e-12 and float(dec.max()) < 1e-12
            else:
                assert enc > 1e-4 and bias > 1e-4 and bool((dec > 1e-4).all()), (s, dec)
    # the other latents of the dead ones' layers still train on the main loss
    assert clt.W_enc.grad[0][:, N - 1].abs().amax().item() > 1e-4


def test_no_auxk_when_nothing_is_dead_or_coefficient_zero():
    x, y = batch()
    clt = make()
    out = clt.training_loss(x, y, TrainStepState(dead_mask=torch.zeros(L * N, dtype=torch.bool)))
    assert "auxk" not in out.terms
    off = make(aux_coefficient=0.0)
    out = off.training_loss(x, y, TrainStepState(dead_mask=dead_mask(L * N, [0])))
    assert "auxk" not in out.terms


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_crosscoder_auxk_reaches_dead_latents_in_every_layer(activation):
    cc = make(activation, crosscoder=True, aux_k=2)
    with torch.no_grad():
        cc.b_enc[N - K :] = 50.0
        cc.b_enc[[3, 8]] = -20.0  # never selected, negative pre-activations
    x, _ = batch()
    dead = dead_mask(N, [3, 8, 10])
    for mask in (None, dead):
        cc.zero_grad()
        out = cc.training_loss(x, x, TrainStepState(dead_mask=mask))
        out.loss.backward()
        dec = cc.W_dec.grad[[3, 8]].abs().amax(-1)  # [2, L]
        enc = cc.W_enc.grad[:, :, [3, 8]].abs().amax().item()
        if mask is None:
            assert "auxk" not in out.terms and float(dec.max()) < 1e-12 and enc < 1e-12
        else:
            assert out.terms["auxk"].item() > 0 and bool((dec > 1e-4).all()) and enc > 1e-4
    # the value: the 2 largest dead pre-activations per token decode (no bias) against the residual
    z = cc.pre_acts(x).detach()
    t = z.masked_fill(~dead, -torch.inf).topk(2, dim=-1)
    aux_f = torch.zeros_like(z).scatter(-1, t.indices, t.values)
    resid = x - out.x_hat.detach()
    want = (torch.einsum("bn,nld->bld", aux_f, cc.W_dec.detach()).flatten(1) - resid).pow(2).sum(-1).mean()
    assert abs(out.terms["auxk"].item() - want.item()) < 1e-4 * want.item()
