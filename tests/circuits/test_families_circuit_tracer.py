"""circuit-tracer side by side on a second family: a tiny random Gemma-2 with JumpReLU transcoders in
Gemma Scope's layout (reading ln2.hook_normalized), attributed by us and by circuit-tracer 0.5 in its
own venv (`make .venv-circuit-tracer/.stamp`; skipped without it): the same active features, and
edges equal to 1e-6 of the largest."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_families_gemma2_graph_equals_circuit_tracer(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.bench_circuit_tracer import _peer_python, gemma2_row

    peer = _peer_python()
    if peer is None:
        pytest.skip("circuit-tracer is not installed (make .venv-circuit-tracer/.stamp)")
    row = gemma2_row(peer, tmp_path, n_tok=8)
    assert "note" not in row, row  # the same active features on both sides
    assert row["active features"] > 0
    assert float(row["max edge diff (rel.)"]) < 1e-6, row
