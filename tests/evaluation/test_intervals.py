"""Intervals: bootstrap over sequences, Student t over seeds, wins only outside intervals; and the
ill-conditioning flag on CE recovered."""

from __future__ import annotations

import math

import pytest
import torch

from monosemantic.evaluation.compare import markdown_table, row, verdicts
from monosemantic.evaluation.conditioning import FLAG, flag_conditioning
from monosemantic.evaluation.intervals import aggregate_seeds, decide, seed_interval
from monosemantic.evaluation.metrics import ReconstructionMetrics
from monosemantic.evaluation.report import cell
from monosemantic.evaluation.seeds import seed_groups, table_rows


def test_seed_interval_is_the_student_t_interval():
    mean, (lo, hi) = seed_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027, s = 1, n = 3
    assert mean == 2.0 and hi - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert lo == pytest.approx(2 * mean - hi)
    assert seed_interval([5.0]) == (5.0, None)


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_more_sequences():
    torch.manual_seed(0)
    widths = []
    for n_seq in (8, 64):
        m = ReconstructionMetrics(d_sae=4, d_out=6)
        y = torch.randn(n_seq, 10, 6)
        y_hat = y + 0.3 * torch.randn_like(y)
        f = torch.relu(torch.randn(n_seq, 10, 4))
        m.update(y, y_hat, f)
        point, ci = m.compute(), m.intervals(seed=0)
        for key in ("fvu", "l0", "cosine_similarity", "mse"):
            assert ci[key][0] <= point[key] <= ci[key][1], key
        widths.append(ci["fvu"][1] - ci["fvu"][0])
    assert widths[1] < widths[0] / 1.8  # ~ 1/sqrt(n)


def test_decide_calls_a_win_only_outside_the_intervals():
    a = {"name": "a", "fvu": 0.10, "ci95": {"fvu": [0.09, 0.11]}}
    b = {"name": "b", "fvu": 0.12, "ci95": {"fvu": [0.105, 0.135]}}
    c = {"name": "c", "fvu": 0.20, "ci95": {"fvu": [0.18, 0.22]}}
    assert "no win" in decide([a, b], "fvu")
    assert "a wins" in decide([a, c], "fvu")
    assert decide([a], "fvu") is None


def test_seed_groups_aggregate_and_compare_prints_intervals_and_flags():
    results = [
        {"name": f"t-seed{s}", "seed": s, "seed_group": "t", "hook_name": "h", "l0": 16.0, "fvu": v,
         "ce_loss_zero_ablated": 3.02, "ce_loss_clean": 3.0, "ce_loss_spliced": 3.001, "ce_loss_recovered": 0.95}
        for s, v in enumerate([0.10, 0.11, 0.12])
    ] + [{"name": "solo", "hook_name": "h", "l0": 16.0, "fvu": 0.3, "ci95": {"fvu": [0.28, 0.32]}}]  # fmt: skip
    for r in results:
        flag_conditioning(r, 0.1)
    assert results[0]["ce_loss_recovered_reliable"] is False
    assert results[0]["ce_loss_zero_ablation_increase"] == pytest.approx(0.02)
    groups = seed_groups(results)
    g = groups["t"]
    assert g["n_seeds"] == 3 and g["fvu"] == pytest.approx(0.11) and g["ce_loss_recovered_reliable"] is False
    assert g["ci95"]["fvu"][0] < 0.10 and g["ci95"]["fvu"][1] > 0.12
    rows = table_rows(results, groups)
    assert [r["name"] for r in rows] == ["t", "solo"]
    assert cell(rows[0], "ce_loss_recovered", "{:.1%}") == FLAG  # the flag, not 95.0%
    assert "±" in cell(rows[0], "fvu", "{:.4f}")
    table = markdown_table([row(r) for r in rows])
    assert "0.1100 [" in table and FLAG in table and "95.0" not in table
    assert any("fvu: t wins" in line for line in verdicts([row(r) for r in rows]))
    assert aggregate_seeds(results[:3])["seeds"] == [0, 1, 2]
