"""The attribution memory estimate `plan` prints and `circuit` checks before it runs."""

import pytest

from monosemantic.config import load_config
from monosemantic.training.attribution_memory import active_per_token, attribution_memory
from monosemantic.training.plan import plan, plan_lines


def test_estimate_by_hand():
    """Two dictionaries with 2 active latents per token on 10 tokens, every row computed."""
    est = attribution_memory(10, 8, 2, 2, [2, 2], max_feature_nodes=100, max_n_logits=3, batch_size=4)
    F = 10 * 4
    rows, cols, N = F + 3 + 1, F + 3 * 10, F + 3 * 10 + 3
    assert (est.active_features, est.rows, est.nodes) == (F, rows, N)
    edge = rows * cols * 4
    patterns = 2 * 2 * 10 * 10 * 4
    assert est.assembly - est.attribution == N * N * 4 + rows * N * 4 - (
        5 * 4 * 10 * 8 * 2 * 4 + 2 * 3 * 4 * 10 * 8 * 4
    )
    assert est.attribution > edge + patterns and est.peak == max(est.attribution, est.assembly, est.pruning)
    assert est.heads == 0 and attribution_memory(10, 8, 2, 2, [2, 2], heads=True).heads > 0


def test_estimate_grows_with_the_prompt_and_caps_rows():
    small = attribution_memory(1024, 128, 4, 4, [16] * 4)
    big = attribution_memory(4096, 128, 4, 4, [16] * 4)
    assert big.rows == small.rows == 4096 + 11  # max_feature_nodes caps the rows
    assert 3.5 < big.peak / small.peak < 8  # the edge matrix's columns and the patterns grow
    assert big.peak < 16 * 2**30  # the demo's transcoders on 4,096 tokens fit in 16 GB
    assert attribution_memory(4096, 128, 4, 4, [16] * 4, max_feature_nodes=512).peak < big.peak


def test_active_per_token_from_cfg():
    assert active_per_token({"k": 16}) == 16
    assert active_per_token({"metadata": {"monosemantic": {"k": 8}}}) == 8
    assert active_per_token({"metadata": {"training": {"final_metrics": {"l0": 23.5}}}, "d_sae": 100}) == 23.5
    assert active_per_token({"d_sae": 1000}) == pytest.approx(10.0)


def test_plan_prints_the_circuit_estimate():
    cfg = load_config("configs/demo.toml")
    lines = plan_lines(plan(cfg, circuit_tokens=4096))
    i = next(
        i for i, line in enumerate(lines) if line.startswith("circuit (attribution of a 4,096-token prompt")
    )
    assert "4 dictionaries" in lines[i]  # the trained transcoders, not the fitted neurons baseline
    assert "262,144" in lines[i + 1]
    text = "\n".join(lines[i:])
    assert "computing rows" in text and "peak with the model" in text and "GiB" in text
    default = plan_lines(plan(cfg))
    assert any("128-token prompt" in line for line in default)
