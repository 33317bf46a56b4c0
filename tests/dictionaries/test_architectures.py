"""Every architecture's forward pass and gradients against a plain dense re-derivation.

The references below use dense masks and loops over rows/latents, never the library's helpers,
so the custom TopK autograd function, the embedding_bag decoder and the straight-through
estimators are each checked against an independent formula.
"""

from __future__ import annotations

import pytest
import torch

from monosemantic.dictionaries import TrainStepState

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
KINDS = ["sae", "transcoder", "skip"]


def leaf_params(dic) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().requires_grad_(True) for n, p in dic.named_parameters()}


def ref_in(dic, p, x):
    return x - p["b_dec"] if dic.cfg.apply_b_dec_to_input else x


def ref_out(dic, p, f, x, bias=True):
    out = f @ p["W_dec"]
    if bias:
        out = out + p["b_dec"]
    if dic.cfg.skip:
        out = out + x @ p["W_skip"]
    return out


def sq_err(a, b):
    return ((a - b) ** 2).sum(dim=1).mean()


def row_topk_mask(pre, k):
    mask = torch.zeros_like(pre, dtype=torch.bool)
    for b in range(pre.shape[0]):
        kth = sorted(pre[b].tolist(), reverse=True)[k - 1]
        mask[b] = pre[b] >= kth
    return mask


def batch_topk_mask(pre, n):
    kth = sorted(pre.flatten().tolist(), reverse=True)[n - 1]
    return pre >= kth


def aux_term(dic, p, pre, y, y_hat, dead):
    aux_k = dic.settings.aux_k
    n = min(aux_k, int(dead.sum()))
    masked = torch.where(dead, pre, torch.full_like(pre, -1e9))
    f_aux = pre * row_topk_mask(masked, n)  # raw pre-activations (SAELens), not ReLU
    residual = (y - y_hat).detach()
    scale = min(int(dead.sum()) / aux_k, 1.0)
    return dic.settings.aux_coefficient * scale * sq_err(f_aux @ p["W_dec"], residual)


def reference_loss(dic, p, x, y, dead):
    arch, cfg, skip = dic.cfg.architecture, dic.settings, dic.cfg.skip
    x_in = ref_in(dic, p, x)
    if arch == "gated":
        h = x_in @ p["W_enc"]
        gate = h + p["b_gate"]
        mag = h * torch.exp(p["r_mag"]) + p["b_mag"]
        f = (gate > 0).float() * torch.clamp(mag, min=0)
        y_hat = ref_out(dic, p, f, x)
        norms = torch.sqrt((p["W_dec"] ** 2).sum(dim=1))
        l1 = (torch.clamp(gate, min=0) * norms).sum(dim=1).mean()
        frozen = torch.clamp(gate, min=0) @ p["W_dec"].detach() + p["b_dec"].detach()
        if skip:
            frozen = frozen + x @ p["W_skip"].detach()
        return sq_err(y_hat, y) + cfg.l1_coefficient * l1 + sq_err(frozen, y), y_hat, f
    pre = x_in @ p["W_enc"] + p["b_enc"]
    if arch == "relu":
        f = torch.clamp(pre, min=0)
        y_hat = ref_out(dic, p, f, x)
        norms = torch.sqrt((p["W_dec"] ** 2).sum(dim=1))
        return sq_err(y_hat, y) + cfg.l1_coefficient * (f * norms).sum(dim=1).mean(), y_hat, f
    if arch == "topk":
        f = torch.clamp(pre, min=0) * row_topk_mask(pre.detach(), cfg.k)
    else:
        f = torch.clamp(pre, min=0) * batch_topk_mask(pre.detach(), cfg.k * x.shape[0])
    y_hat = ref_out(dic, p, f, x)
    if arch == "matryoshka":
        loss = 0
        for m in cfg.matryoshka_widths:
            prefix = f[:, :m] @ p["W_dec"][:m] + p["b_dec"]
            if skip:
                prefix = prefix + x @ p["W_skip"]
            loss = loss + sq_err(prefix, y)
    else:
        loss = sq_err(y_hat, y)
    if dead is not None:
        loss = loss + aux_term(dic, p, pre, y, y_hat, dead)
    return loss, y_hat, f


def target_for(dic, x):
    if not dic.is_transcoder:
        return x
    return torch.tanh(x[:, : dic.d_out] * 0.7) + 0.1


CASES = [
    (arch, kind, dead)
    for arch in ["relu", "topk", "batchtopk", "gated", "matryoshka"]
    for kind in KINDS
    for dead in ([False, True] if arch in ("topk", "batchtopk", "matryoshka") else [False])
]


@pytest.mark.parametrize(("arch", "kind", "with_dead"), CASES)
def test_forward_and_gradients_match_dense_reference(make_dic, x16, arch, kind, with_dead):
    dic = make_dic(arch, kind, matryoshka_widths=[6, 20, 48] if arch == "matryoshka" else None)
    y = target_for(dic, x16)
    dead = (torch.arange(dic.d_sae) % 3 == 0) if with_dead else None
    p = leaf_params(dic)
    ref_loss, ref_hat, ref_f = reference_loss(dic, p, x16, y, dead)
    ref_loss.backward()

    out = dic.training_loss(x16, y, TrainStepState(dead_mask=dead))
    out.loss.backward()
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.x_hat, ref_hat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.f, ref_f.detach(), rtol=1e-5, atol=1e-5)
    assert out.l0.item() == pytest.approx((ref_f > 0).float().sum(1).mean().item())
    assert torch.equal(out.fired, (ref_f > 0).any(0))
    for name, param in dic.named_parameters():
        torch.testing.assert_close(
            param.grad, p[name].grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )
    if with_dead:
        assert "auxk" in out.terms and out.terms["auxk"] > 0


def test_topk_encode_matches_rowwise_loop(make_dic, x16):
    dic = make_dic("topk")
    f = dic.encode(x16)
    for b in range(x16.shape[0]):
        pre = [(x16[b] - dic.b_dec) @ dic.W_enc[:, j] + dic.b_enc[j] for j in range(dic.d_sae)]
        order = sorted(range(dic.d_sae), key=lambda j: -pre[j].item())[: dic.settings.k]
        for j in range(dic.d_sae):
            want = max(pre[j].item(), 0.0) if j in order else 0.0
            assert f[b, j].item() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_jumprelu_forward_and_straight_through_gradients(make_dic, x16, kind):
    eps = 0.3
    dic = make_dic("jumprelu", kind, jumprelu_bandwidth=eps, l0_coefficient=0.7)
    y = target_for(dic, x16)
    out = dic.training_loss(x16, y)
    out.loss.backward()

    x_in = x16 - dic.b_dec.detach() if dic.cfg.apply_b_dec_to_input else x16
    z = (x_in @ dic.W_enc + dic.b_enc).detach()
    theta = dic.log_threshold.detach().exp()
    f = (z * (z > theta)).requires_grad_(True)
    y_hat = f @ dic.W_dec.detach() + dic.b_dec.detach()
    if dic.cfg.skip:
        y_hat = y_hat + x16 @ dic.W_skip.detach()
    mse = ((y_hat - y) ** 2).sum(1).mean()
    (g_f,) = torch.autograd.grad(mse, f)
    torch.testing.assert_close(out.f, f.detach())
    l0 = (z > theta).float().sum(1).mean()
    torch.testing.assert_close(out.loss, mse + 0.7 * l0, rtol=1e-5, atol=1e-5)

    B = x16.shape[0]
    for i in range(dic.d_sae):
        g_theta = 0.0
        for b in range(B):
            inside = abs((z[b, i] - theta[i]).item() / eps) < 0.5
            if inside:
                g_theta += g_f[b, i].item() * -(theta[i].item() / eps)  # activation's pseudo-derivative
                g_theta += 0.7 / B * -(1.0 / eps)  # the L0's pseudo-derivative
        want = g_theta * theta[i].item()  # chain rule through theta = exp(log_threshold)
        assert dic.log_threshold.grad[i].item() == pytest.approx(want, rel=1e-4, abs=1e-5)
    # z receives the activation's gradient dL/df * H(z - theta) plus the L0's pseudo-derivative
    # +(lambda / B)(1 / eps) K((z - theta) / eps) (the encoder sees the sparsity penalty).
    inside = (((z - theta) / eps).abs() < 0.5).float()
    g_z = g_f * (z > theta) + 0.7 / B / eps * inside
    torch.testing.assert_close(dic.W_enc.grad, x_in.T @ g_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dic.b_enc.grad, g_z.sum(0), rtol=1e-4, atol=1e-5)


def _train(dic, data, steps=150, lr=0.01):
    opt = torch.optim.Adam(dic.parameters(), lr=lr)
    for step in range(steps):
        batch = data[(step * 128) % len(data) :][:128]
        out = dic.training_loss(batch, batch)
        opt.zero_grad()
        out.loss.backward()
        if dic.unit_norm_decoder:
            dic.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        if dic.unit_norm_decoder:
            dic.set_decoder_norm_to_unit_norm()
    with torch.no_grad():
        return (dic.encode(data) > 0).float().sum(1).mean().item()


def test_jumprelu_l0_responds_to_coefficient(make_dic):
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(32, 16, generator=gen), dim=1)
    codes = (torch.rand(2048, 32, generator=gen) < 0.1) * torch.rand(2048, 32, generator=gen) * 3
    data = codes @ dirs
    l0s = {}
    for coef in (0.001, 0.3):
        dic = make_dic(
            "jumprelu", d_sae=48, jumprelu_bandwidth=0.1, jumprelu_init_threshold=0.1, l0_coefficient=coef
        )
        l0s[coef] = _train(dic, data)
    assert l0s[0.3] < 0.75 * l0s[0.001], l0s


def test_batchtopk_threshold_tracks_min_activation_and_converts(make_dic, x16):
    dic = make_dic("batchtopk")
    dic.threshold.zero_()
    dic.threshold_updates.zero_()
    out = dic.training_loss(x16, x16)
    first = out.codes.vals[out.codes.vals > 0].min()
    assert dic.threshold[0].item() == pytest.approx(first.item())
    assert torch.all(dic.threshold == dic.threshold[0])
    # the training rule and the inference rule agree on L0 roughly once the threshold is set
    f_train = dic.encode_batch_topk(x16)
    assert f_train.count_nonzero() == dic.settings.k * x16.shape[0]
    jump = dic.to_jumprelu()
    assert jump.cfg.architecture == "jumprelu"
    torch.testing.assert_close(jump.encode(x16), dic.encode(x16))
    pre = (x16 - dic.b_dec) @ dic.W_enc + dic.b_enc
    want = torch.where(pre > dic.threshold, pre.clamp(min=0), torch.zeros_like(pre))
    torch.testing.assert_close(dic.encode(x16), want.detach())


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_modules_and_autocast_are_dtype_clean(make_dic, x16, arch):
    dic = make_dic(arch).to(torch.bfloat16)
    dead = torch.arange(dic.d_sae) % 4 == 0
    out = dic.training_loss(x16, x16, TrainStepState(dead_mask=dead))
    out.loss.backward()
    assert out.x_hat.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(p.grad is None or p.grad.dtype == torch.bfloat16 for p in dic.parameters())
    assert dic.encode(x16).dtype == torch.bfloat16

    dic32 = make_dic(arch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dic32.training_loss(x16, x16, TrainStepState(dead_mask=dead))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in dic32.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_and_forward_consistent(make_dic, x16, arch):
    for kind in KINDS:
        dic = make_dic(arch, kind)
        f = dic.encode(x16)
        assert f.shape == (24, dic.d_sae) and (f >= 0).all()
        torch.testing.assert_close(dic(x16), dic.decode(f, x16))
        y3 = dic(x16.reshape(4, 6, 16))
        torch.testing.assert_close(y3.reshape(24, -1), dic(x16), rtol=1e-5, atol=1e-5)


def test_decoder_helpers(make_dic, x16):
    dic = make_dic("topk")
    out = dic.training_loss(x16, x16)
    out.loss.backward()
    dic.remove_gradient_parallel_to_decoder_directions()
    radial = (dic.W_dec.grad * dic.W_dec).sum(1)
    assert radial.abs().max() < 1e-5
    dic.set_decoder_norm_to_unit_norm()
    torch.testing.assert_close(dic.W_dec.norm(dim=1), torch.ones(dic.d_sae))
    dic.initialize_b_dec(torch.full((16,), 0.5))
    assert torch.all(dic.b_dec == 0.5)


def test_initialisation_ties_encoder_to_decoder(make_dic):
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary

    topk = build_dictionary(DictionaryConfig(architecture="topk", expansion=4, k=3), 8)
    assert topk.d_sae == 32
    torch.testing.assert_close(topk.W_enc, topk.W_dec.T)
    torch.testing.assert_close(topk.W_dec.norm(dim=1), torch.ones(32))
    relu = build_dictionary(DictionaryConfig(architecture="relu", d_sae=32), 8)
    torch.testing.assert_close(relu.W_dec.norm(dim=1), torch.full((32,), 0.1))
    assert relu.unit_norm_decoder is False
    relu_unit = build_dictionary(DictionaryConfig(architecture="relu", d_sae=32, l1_decoder_norm=False), 8)
    assert relu_unit.unit_norm_decoder is True


def test_projection_fast_path_for_unit_rows(make_dic, x16):
    dic = make_dic("topk")
    dic.set_decoder_norm_to_unit_norm()
    dic.training_loss(x16, x16).loss.backward()
    grad = dic.W_dec.grad.clone()
    dic.remove_gradient_parallel_to_decoder_directions()
    slow, dic.W_dec.grad = dic.W_dec.grad.clone(), grad
    dic.remove_gradient_parallel_to_decoder_directions(rows_are_unit=True)
    torch.testing.assert_close(dic.W_dec.grad, slow, rtol=1e-5, atol=1e-6)


def test_jumprelu_initialisation_is_scale_free(make_dic):
    """Encoder columns at unit norm (pre-activations of order 1 on inputs of norm sqrt(d_in)),
    decoder rows small and free, so dense early firing does not swamp the reconstruction."""
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary

    jump = build_dictionary(DictionaryConfig(architecture="jumprelu", d_sae=32), 8)
    torch.testing.assert_close(jump.W_enc.norm(dim=0), torch.ones(32))
    torch.testing.assert_close(jump.W_dec.norm(dim=1), torch.full((32,), 0.1))
    torch.testing.assert_close(jump.W_enc / jump.W_enc.norm(dim=0), (jump.W_dec / 0.1).T)
    torch.testing.assert_close(jump.threshold, torch.ones(32))
    assert jump.unit_norm_decoder is False


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "gated"])
@pytest.mark.parametrize("kind", KINDS)
def test_fold_decoder_norm_keeps_outputs(make_dic, x16, arch, kind):
    """Export folds free decoder norms into the latents: unit rows, identical reconstructions."""
    dic = make_dic(arch, kind)
    with torch.no_grad():
        dic.W_dec.mul_(torch.rand(dic.d_sae, 1) * 3 + 0.2)
        before, f_before = dic(x16), dic.encode(x16)
        dic.fold_decoder_norm()
        torch.testing.assert_close(dic.W_dec.norm(dim=1), torch.ones(dic.d_sae))
        torch.testing.assert_close(dic(x16), before, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dic.encode(x16) > 0, f_before > 0)


@pytest.mark.parametrize("seed", range(12))
def test_batch_topk_selection_is_exact(seed):
    """The two-stage BatchTopK selection (row candidates, then global) equals a full sort,
    including the fallback when one row holds more winners than it has candidates."""
    from monosemantic.dictionaries.sparse_encoder import topk_batch

    gen = torch.Generator().manual_seed(seed)
    n_rows, width = 3 + seed * 3, 20 + seed * 11
    pre = torch.randn(n_rows, width, generator=gen)
    if seed % 3 == 0:
        pre[0] += 6  # a busy row
    n = 2 * n_rows if seed % 2 else (seed * 37) % (n_rows * width) + 1
    rows, cols = topk_batch(pre, n)
    kth = sorted(pre.flatten().tolist(), reverse=True)[n - 1]
    chosen = torch.zeros_like(pre, dtype=torch.bool)
    chosen[rows, cols] = True
    assert len(rows) == n and torch.equal(chosen, pre >= kth)
    assert bool((rows[1:] >= rows[:-1]).all())
