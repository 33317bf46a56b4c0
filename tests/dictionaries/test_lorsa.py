"""Lorsa (low-rank sparse attention): its forward pass against a per-head loop written from the
paper's formulas, TopK over heads, causality, rotary, gradients, save/load, and training and
evaluation on a tiny GPT-2's real attention layer through the sequence-window stream."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from monosemantic.config import DictionaryConfig, load_config
from monosemantic.dictionaries import build_dictionary, load_dictionary
from monosemantic.dictionaries.lorsa import Lorsa
from monosemantic.dictionaries.types import TrainStepState
from monosemantic.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SITE, SITE_OUT = "blocks.1.ln1.hook_normalized", "blocks.1.hook_attn_out"


def make(d_in=12, d_sae=24, k=5, n_qk_heads=3, d_qk_head=4, **extra) -> Lorsa:
    torch.manual_seed(0)
    cfg = DictionaryConfig(
        architecture="lorsa", d_sae=d_sae, k=k, n_qk_heads=n_qk_heads, d_qk_head=d_qk_head,
        site=SITE, site_out=SITE_OUT, **extra,
    )  # fmt: skip
    dic = build_dictionary(cfg, d_in, d_in)
    with torch.no_grad():  # non-zero biases, so the formula test covers them
        for p in (dic.b_Q, dic.b_K, dic.b_V, dic.b_D):
            p.normal_(0, 0.3)
    return dic


def reference(dic: Lorsa, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head outputs z [T, H] and y_hat [T, d] of one sequence, head by head, position by position."""
    T, H = x.shape[0], dic.d_sae
    group = H // dic.settings.n_qk_heads
    z = torch.zeros(T, H, dtype=torch.float64)
    x = x.double()
    for i in range(H):
        g = i // group
        q = x @ dic.W_Q[g].double() + dic.b_Q[g].double()
        k = x @ dic.W_K[g].double() + dic.b_K[g].double()
        v = x @ dic.W_V[i].double() + dic.b_V[i].double()
        for t in range(T):
            scores = torch.tensor(
                [float((q[t] @ k[s]).detach()) / math.sqrt(dic.settings.d_qk_head) for s in range(t + 1)]
            )
            w = scores.double().softmax(0)
            z[t, i] = (w * v[: t + 1]).sum()
    f = torch.zeros_like(z)
    for t in range(T):
        top = z[t].argsort(descending=True)[: dic.settings.k]
        f[t, top] = z[t, top].clamp_min(0)
    return z, f @ dic.W_O.double() + dic.b_D.double()


def test_forward_equals_the_per_head_formula():
    dic = make()
    x = torch.randn(2, 7, 12)
    f = dic.encode(x)
    y_hat = dic(x)
    for b in range(2):
        z_ref, y_ref = reference(dic, x[b])
        torch.testing.assert_close(dic.head_outputs(x[b]).double(), z_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y_hat[b].double(), y_ref, atol=1e-5, rtol=1e-5)
    # one sequence [T, d] gives the same as its row of a batch
    torch.testing.assert_close(dic.encode(x[1]), f[1], atol=1e-6, rtol=1e-6)


def test_topk_over_heads_per_token():
    dic = make(k=3)
    x = torch.randn(9, 12)
    z, f = dic.head_outputs(x), dic.encode(x)
    assert ((f > 0).sum(-1) <= 3).all() and (f > 0).sum() > 9
    for t in range(9):
        chosen = set(f[t].nonzero().flatten().tolist())
        assert chosen <= set(z[t].topk(3).indices.tolist())
        torch.testing.assert_close(f[t][list(chosen)], z[t][list(chosen)])


def test_causal_and_grouped_patterns():
    dic = make()
    x = torch.randn(8, 12)
    A = dic.patterns(x)
    assert A.shape == (3, 8, 8)
    assert A.triu(1).abs().max() < 1e-12
    torch.testing.assert_close(A.sum(-1), torch.ones(3, 8))
    keys, weights = dic.top_keys(x, head=13, position=6, n=3)  # head 13 is in group 13 // 8 = 1
    torch.testing.assert_close(weights, A[1, 6].sort(descending=True).values[:3])
    assert keys.tolist() == A[1, 6].argsort(descending=True)[:3].tolist() and (keys <= 6).all()
    y = dic(x)
    x2 = x.clone()
    x2[5:] = torch.randn(3, 12)  # later positions never change earlier outputs
    torch.testing.assert_close(dic(x2)[:5], y[:5])


def test_rotary_scores_depend_on_relative_position():
    from monosemantic.dictionaries.lorsa import rotate

    dic = make(rotary_base=100.0)
    a, b = torch.randn(12), torch.randn(12)
    x = torch.randn(10, 12)
    x[4], x[1] = a, b  # query a at 4 over key b at 1, and query a at 8 over key b at 5: same offset
    x[8], x[5] = a, b
    q = rotate(torch.einsum("td,gde->gte", x, dic.W_Q), 100.0, 4)
    k = rotate(torch.einsum("td,gde->gte", x, dic.W_K), 100.0, 4)
    s = q @ k.transpose(-1, -2)
    torch.testing.assert_close(s[:, 4, 1], s[:, 8, 5], atol=1e-5, rtol=1e-5)
    plain = make()
    assert not torch.allclose(dic.patterns(x), plain.patterns(x))


def test_gradients_reach_every_parameter():
    dic = make()
    x, y = torch.randn(3 * 6, 12), torch.randn(3 * 6, 12)
    dead = torch.zeros(24, dtype=torch.bool)
    dead[:10] = True
    out = dic.training_loss(x, y, TrainStepState(seq_len=6, dead_mask=dead))
    assert out.x_hat.shape == (18, 12) and out.f.shape == (18, 24) and "auxk" in out.terms
    out.loss.backward()
    for name, p in dic.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_save_load_round_trip(tmp_path):
    dic = make(rotary_base=1000.0)
    from monosemantic.dictionaries.io import save_dictionary

    save_dictionary(dic, tmp_path / "l", {"hook_name": SITE, "hook_name_out": SITE_OUT})
    cfg = json.loads((tmp_path / "l" / "cfg.json").read_text())
    assert cfg["architecture"] == "lorsa" and cfg["k"] == 5 and cfg["n_qk_heads"] == 3
    loaded = load_dictionary(tmp_path / "l")
    assert isinstance(loaded, Lorsa) and loaded.settings.rotary_base == pytest.approx(1000.0)
    x = torch.randn(2, 6, 12)
    torch.testing.assert_close(loaded(x), dic(x))
    assert str(loaded.cfg.site) == SITE and str(loaded.cfg.site_out) == SITE_OUT


def test_config_checks_in_one_line():
    with pytest.raises(ConfigError, match="divisible by n_qk_heads"):
        make(d_sae=25)
    with pytest.raises(ConfigError, match="k=30 is larger than d_sae=24"):
        make(k=30)


def test_fold_activation_scale_is_exact():
    dic = make()
    x = torch.randn(7, 12)
    expected = dic(3.0 * x) / 0.5
    dic.fold_activation_scale(3.0, 0.5)
    torch.testing.assert_close(dic(x), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    from monosemantic.activations.harvest import harvest
    from monosemantic.lm.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("lorsa")
    model = save_tiny_model("gpt2", root / "model")
    cache = harvest(load_config(REPO / "configs" / "lorsa.toml", [
        f"model.name={model}", "device=cpu", "data.context_size=16", "data.max_tokens=4096",
        f'sites.names=["{SITE}", "{SITE_OUT}"]', f"harvest.out={root / 'cache'}", "harvest.dtype=float32",
        "harvest.shard_sequences=64", "harvest.batch_size=16",
    ]))  # fmt: skip
    return root, model, cache


def lorsa_config(root: Path, cache: Path, *extra: str):
    return load_config(REPO / "configs" / "lorsa.toml", [
        "device=cpu", f"data.activations={cache}", f"dictionary.site={SITE}", f"dictionary.site_out={SITE_OUT}",
        "dictionary.d_sae=64", "dictionary.k=4", "dictionary.n_qk_heads=4", "dictionary.d_qk_head=8",
        f"train.out={root / 'train'}", "train.tokens=8192", "train.batch_size=128", "train.buffer_tokens=1024",
        "train.lr=0.01", "train.log_every=8", "train.checkpoint_every=1000", "train.dead_after_tokens=2048",
        f"evaluate.dictionary={root / 'train'}", f"evaluate.cache={cache}", f"evaluate.out={root / 'eval'}",
        "evaluate.max_sequences=32", *extra,
    ])  # fmt: skip


def test_sequence_stream_serves_whole_windows_in_order(tiny_cache):
    from monosemantic.activations.cache import ActivationCache
    from monosemantic.training.stream import open_stream

    root, _, cache = tiny_cache
    cfg = lorsa_config(root, cache)
    stream = open_stream(cfg, [SITE, SITE_OUT], sequences=True)
    assert stream.seq_len == 16
    batch = next(stream)
    c = ActivationCache(cache)
    stored = torch.cat([c.load_shard(i, [SITE])[SITE] for i in range(c.num_shards)]).float()
    for window in batch[SITE].reshape(-1, 16, stored.shape[-1]):
        assert (stored - window).abs().amax((1, 2)).min() < 1e-6  # one stored sequence, whole
    resumed = open_stream(cfg, [SITE, SITE_OUT], sequences=True)
    resumed.load_state_dict(stream.state_dict())  # kill -9 and resume: the same next windows
    after, again = next(stream), next(resumed)
    torch.testing.assert_close(after[SITE], again[SITE])
    with pytest.raises(ConfigError, match="multiple of the window length 16"):
        open_stream(lorsa_config(root, cache, "train.batch_size=100"), [SITE, SITE_OUT], sequences=True)


def test_training_reduces_fvu_and_evaluates_on_a_tiny_model(tiny_cache):
    from monosemantic.evaluation.run import evaluate
    from monosemantic.training.trainer import train

    root, model, cache = tiny_cache
    (folder,) = train(lorsa_config(root, cache))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["fvu"] < 0.8 * rows[0]["fvu"], rows
    dic = load_dictionary(folder)
    norms = dic.W_O.norm(dim=1)  # unit rows in training, divided by the output scale at export
    assert isinstance(dic, Lorsa) and (norms / norms[0] - 1).abs().max() < 1e-4

    (r,) = evaluate(lorsa_config(root, cache, f"model.name={model}"))
    assert 0.0 < r["fvu"] < 1.0 and r["l0"] == pytest.approx(4.0, abs=1e-6)
    assert r["ce_loss_spliced"] > 0 and r["kl_spliced"] >= 0
    assert r["splice_error_check_max_logit_diff"] < 1e-4  # the splice replaces exactly this site
    assert 0.0 <= r["dead_fraction"] <= 1.0


def test_a_run_cannot_mix_sequence_and_token_kinds(tiny_cache):
    from monosemantic.training.trainer import train

    root, _, cache = tiny_cache
    cfg = lorsa_config(root, cache, f"train.out={root / 'mixed'}")
    other = DictionaryConfig(architecture="topk", d_sae=32, k=4, site=SITE, site_out=SITE_OUT)
    mixed = cfg.model_copy(update={"dictionaries": [cfg.dictionary, other], "dictionary": None})
    with pytest.raises(ConfigError, match="train them from separate configs"):
        train(mixed)
