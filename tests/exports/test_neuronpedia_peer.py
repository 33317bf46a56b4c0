"""Our Neuronpedia export read by Neuronpedia's own Python client (`neuronpedia` from PyPI, in
`.venv-neuronpedia`; `make test` installs it): `FeatureRequest.get` against a local server gives back
our activations, density and explanations, and its `upload_batch` posts them (with our logits)
unchanged. The same check is the Neuronpedia rows of `benchmarks/bench_conformance.py`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from benchmarks.neuronpedia_conformance import neuronpedia_rows, peer_python

from monosemantic.config import load_config
from monosemantic.exports.neuronpedia import write_neuronpedia
from monosemantic.store.feature_store import FeatureStore

pytestmark = pytest.mark.skipif(
    peer_python() is None, reason="no .venv-neuronpedia (make .venv-neuronpedia/.stamp installs it)"
)


@pytest.fixture(scope="module")
def export(analysis: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test world's analysis, explained offline, exported for Neuronpedia."""
    from monosemantic.explanation.run import explain

    root = tmp_path_factory.mktemp("np-peer")
    shutil.copyfile(analysis, root / "features.db")
    explain(load_config(None, [f'explain.db="{root / "features.db"}"']))
    return write_neuronpedia(FeatureStore(root / "features.db"), root / "np", model_id="storyworld-tiny")


def test_neuronpedia_client_loads_and_uploads_our_export(export: Path, tmp_path: Path):
    rows, versions = neuronpedia_rows(export, tmp_path)
    assert versions == {"neuronpedia": "1.2.1"}
    assert [r["result"] for r in rows] == ["pass", "pass"], rows
    assert all(r["features"] >= 6 and r["activations"] > 0 for r in rows)  # two sources, several each
    assert all(float(r["max |Δvalue|"]) <= 1e-5 for r in rows)


def test_the_check_sees_a_changed_value(export: Path, tmp_path: Path):
    """The comparison reads what the client returns: values changed by 1e-3 in the served JSON fail."""
    changed = tmp_path / "np"
    shutil.copytree(export, changed)
    batch = changed / "0-res-mono" / "batch-0.json"
    feats = json.loads(batch.read_text())
    for f in feats:
        for a in f["activations"][:1]:
            a["values"][0] += 1e-3
    batch.write_text(json.dumps(feats))
    rows, _ = neuronpedia_rows(export, tmp_path, served_from=changed)
    assert all(r["result"].startswith("FAIL: ") for r in rows), rows
    assert all("activation values differ" in r["result"] for r in rows), rows
