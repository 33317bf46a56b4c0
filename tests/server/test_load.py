"""The load test, small: 50 concurrent browsing clients against a real `monosemantic serve` while
live jobs (tracing, steering) keep its worker busy; not one error. The full 200-client run with
latencies is `python -m benchmarks.bench_serve` (docs/benchmarks.md: "Serving under load")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~15 s on 2 shared cores: a server, a model load and 250 requests
def test_50_browsing_clients_while_live_jobs_run(live_store):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_serve", "--clients", "50", "--rounds", "1", "--db", str(live_store[0])],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["requests"] == 50 * 5
    assert res["errors"] == 0 and res["live errors"] == 0, res["first errors"]
    assert res["live jobs"] >= 1 and res["live busy %"] > 50  # browsing really overlapped live work
