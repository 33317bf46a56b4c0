"""Spliced CE/KL against manual forward hooks on a plain transformers GPT-2."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from monosemantic.evaluation.spliced import SplicedEvaluator, SpliceSpec
from monosemantic.lm.model import load_model

from .conftest import make_topk

SITE = "blocks.0.hook_resid_post"


def _tokens(vocab: int, special: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, vocab, (3, 12), generator=g)
    t[t == special] = special + 1
    t[:, 0] = special  # BOS
    t[1, 6] = special  # an EOS inside the window
    return t


def _manual_ce(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """CE by hand: one softmax per predicted position, averaged."""
    total, n = 0.0, 0
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1] - 1):
            row = logits[b, t].double()
            total += -(row[tokens[b, t + 1]] - torch.logsumexp(row, 0)).item()
            n += 1
    return total / n


def _manual_kl(clean: torch.Tensor, other: torch.Tensor) -> float:
    p = torch.softmax(clean[:, :-1].double(), -1)
    q = torch.softmax(other[:, :-1].double(), -1)
    return (p * (p.log() - q.log())).sum(-1).mean().item()


def _hf_logits(hf, tokens, module=None, replace=None):
    """Logits of the plain HF model, optionally with a forward hook replacing `module`'s output."""
    handle = None
    if module is not None:

        def hook(mod, args, output):
            first = output[0] if isinstance(output, tuple) else output
            new = replace(first)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return hf(input_ids=tokens).logits
    finally:
        if handle is not None:
            handle.remove()


def reconstruct(dic, x):
    """The reference reconstruction a manual hook applies: decode(encode(x)) in the dictionary's dtype."""
    x = x.to(dic.dtype)
    return dic.decode(dic.encode(x), x)


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    model = load_model(str(tiny_gpt2), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    special = model.tokenizer.eos_token_id
    tokens = _tokens(len(model.tokenizer), special)
    keep = tokens != special
    return model, hf, tokens, keep


def test_sae_splice_matches_manual_hook(setup):
    model, hf, tokens, keep = setup
    dic = make_topk(model.d_model, 64, 6, SITE)
    ev = SplicedEvaluator(model, [tokens[:2], tokens[2:]], [keep[:2], keep[2:]])
    mean = torch.randn(model.d_model, generator=torch.Generator().manual_seed(9))
    got = ev.evaluate(dic, mean)

    block = hf.transformer.h[0]
    clean = _hf_logits(hf, tokens)
    spliced = _hf_logits(hf, tokens, block, lambda h: torch.where(keep[..., None], reconstruct(dic, h), h))
    zero = _hf_logits(hf, tokens, block, lambda h: torch.where(keep[..., None], torch.zeros_like(h), h))
    meaned = _hf_logits(hf, tokens, block, lambda h: torch.where(keep[..., None], mean.expand_as(h), h))
    ce_clean, ce_spliced = _manual_ce(clean, tokens), _manual_ce(spliced, tokens)
    ce_zero, ce_mean = _manual_ce(zero, tokens), _manual_ce(meaned, tokens)

    assert got["n_predictions"] == 3 * 11
    assert got["ce_loss_clean"] == pytest.approx(ce_clean, rel=1e-5)
    assert got["ce_loss_spliced"] == pytest.approx(ce_spliced, rel=1e-5)
    assert got["ce_loss_zero_ablated"] == pytest.approx(ce_zero, rel=1e-5)
    assert got["ce_loss_mean_ablated"] == pytest.approx(ce_mean, rel=1e-5)
    assert got["ce_loss_spliced"] != pytest.approx(ce_clean, rel=1e-4)  # the splice does something
    # a ratio of CE differences: its tolerance is the CEs' (rel 1e-5, batched vs one pass, any torch or
    # thread count) divided by the denominator gap, not a relative tolerance on a ratio that may be ~0
    tol = 2e-5 * max(ce_zero, ce_mean, ce_spliced) / min(abs(ce_zero - ce_clean), abs(ce_mean - ce_clean))
    assert got["ce_loss_recovered"] == pytest.approx((ce_zero - ce_spliced) / (ce_zero - ce_clean), abs=tol)
    assert got["ce_loss_recovered_mean_ablation"] == pytest.approx(
        (ce_mean - ce_spliced) / (ce_mean - ce_clean), abs=tol
    )
    assert got["kl_spliced"] == pytest.approx(_manual_kl(clean, spliced), rel=1e-4, abs=1e-7)
    assert got["kl_spliced"] > 0
    # with the error term added back, the spliced model is the clean model, exactly
    assert got["splice_error_check_max_logit_diff"] == 0.0
    assert got["ce_loss_spliced_with_error"] == got["ce_loss_clean"]
    assert got["kl_spliced_with_error"] == pytest.approx(0.0, abs=1e-9)


def test_transcoder_replaces_the_mlp(setup):
    model, hf, tokens, keep = setup
    tc = make_topk(model.d_model, 48, 5, "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out", seed=1)
    assert tc.is_transcoder
    ev = SplicedEvaluator(model, [tokens], [keep])
    got = ev.evaluate(tc, torch.zeros(model.d_model))

    block = hf.transformer.h[0]
    seen = {}
    grab = block.ln_2.register_forward_hook(lambda m, a, out: seen.__setitem__("x", out))
    try:
        spliced = _hf_logits(
            hf, tokens, block.mlp, lambda out: torch.where(keep[..., None], reconstruct(tc, seen["x"]), out)
        )
    finally:
        grab.remove()
    zero = _hf_logits(
        hf, tokens, block.mlp, lambda out: torch.where(keep[..., None], torch.zeros_like(out), out)
    )
    assert got["ce_loss_spliced"] == pytest.approx(_manual_ce(spliced, tokens), rel=1e-5)
    assert got["ce_loss_zero_ablated"] == pytest.approx(_manual_ce(zero, tokens), rel=1e-5)
    assert got["ce_loss_zero_ablated"] == got["ce_loss_mean_ablated"]  # the mean given was zero
    assert got["splice_error_check_max_logit_diff"] == 0.0
    assert got["ce_loss_spliced_with_error"] == got["ce_loss_clean"]
    assert math.isfinite(got["ce_loss_recovered"])


def test_evaluate_many_equals_one_at_a_time(setup):
    model, _, tokens, keep = setup
    sae = make_topk(model.d_model, 64, 6, SITE, seed=2)
    tc = make_topk(model.d_model, 48, 5, "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out", seed=3)
    mean = torch.full((model.d_model,), 0.5)
    specs = [
        SpliceSpec(sae, mean),
        SpliceSpec(tc, mean),
    ]
    batches, keeps = [tokens[:1], tokens[1:]], [keep[:1], keep[1:]]
    together = SplicedEvaluator(model, batches, keeps).evaluate_many(specs)
    for spec, joint in zip(specs, together, strict=True):
        alone = SplicedEvaluator(model, batches, keeps).evaluate(spec.dic, spec.mean)
        per_joint, per_alone = joint.pop("per_sequence"), alone.pop("per_sequence")
        assert joint.pop("ce_convention") == alone.pop("ce_convention") == "monosemantic"
        assert joint == pytest.approx(alone, rel=1e-12)
        for key, rows in per_joint.items():  # per-sequence sums: one per sequence, summing to the means
            assert rows.shape == (3,) and torch.allclose(rows, per_alone[key], rtol=1e-12)
        assert float(per_joint["spliced"].sum()) / float(per_joint["n"].sum()) == pytest.approx(
            joint["ce_loss_spliced"], rel=1e-12
        )
    assert together[0]["ce_loss_spliced"] != together[1]["ce_loss_spliced"]


def test_error_check_on_first_batches_only(setup):
    model, _, tokens, keep = setup
    sae = make_topk(model.d_model, 64, 6, SITE, seed=5)
    mean = torch.zeros(model.d_model)
    batches, keeps = [tokens[:1], tokens[1:2], tokens[2:]], [keep[:1], keep[1:2], keep[2:]]
    full = SplicedEvaluator(model, batches, keeps).evaluate(sae, mean)
    part = SplicedEvaluator(model, batches, keeps, error_check_batches=1).evaluate(sae, mean)
    first = SplicedEvaluator(model, batches[:1], keeps[:1]).evaluate(sae, mean)
    assert full["splice_error_check_batches"] == 3 and part["splice_error_check_batches"] == 1
    assert part["ce_loss_spliced"] == pytest.approx(full["ce_loss_spliced"], rel=1e-12)
    assert part["ce_loss_spliced_with_error"] == pytest.approx(first["ce_loss_clean"], rel=1e-12)
    assert part["splice_error_check_max_logit_diff"] == 0.0
