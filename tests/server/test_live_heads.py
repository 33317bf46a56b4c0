"""Tracing with head loadings and any target through the API, and QK terms on demand for a stored graph."""

from __future__ import annotations

import sqlite3
import time

import pytest
import torch
from fastapi.testclient import TestClient

from monosemantic.circuits.qk import qk_terms
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.model import load_model
from monosemantic.server.app import create_app
from monosemantic.store.feature_store import FeatureStore

from .conftest import LIVE_TC

TEXT = "Tom the dog found a red ball in the park. He"


@pytest.fixture(scope="module")
def live(live_store):
    path, cfg = live_store
    with TestClient(create_app(path, cfg), base_url="http://127.0.0.1:8765") as c:
        yield c


def _trace(client: TestClient, body: dict, timeout: float = 120) -> dict:
    r = client.post("/api/circuits", json=body)
    assert r.status_code == 202, r.text
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = client.get(f"/api/jobs/{r.json()['job']}").json()
        if got["status"] in ("done", "failed"):
            return got
        time.sleep(0.2)
    raise AssertionError("the trace did not finish")


def test_trace_with_heads_and_qk_on_demand(live, live_store):
    done = _trace(live, {"prompt": TEXT, "heads": True, "target": "token", "target_token": " He"})
    assert done["status"] == "done", done
    gid = done["result"]["graph_id"]
    g = live.get(f"/api/graphs/{gid}").json()
    assert g["metadata"]["targets"][0]["kind"] == "logit" and g["links"]
    for link in g["links"]:
        assert abs(sum(h["weight"] for h in link["heads"]) + link["no_hop"] - link["weight"]) < 1e-4 * (
            1 + abs(link["weight"])
        )
    store = FeatureStore(live_store[0])
    tc = next(d for d in store.dictionaries() if d["name"] == LIVE_TC)
    store.close()
    assert g["metadata"]["store_dictionaries"] == [tc["id"]]
    # a pair the graph did not store: computed on the live worker, equal to the library's
    n = len(g["metadata"]["prompt_tokens"])
    pair = (1, 2, n - 1, 3)
    r = live.get(
        f"/api/graphs/{gid}/qk", params=dict(zip(("layer", "head", "query", "key"), pair, strict=True))
    )
    assert r.status_code == 200, r.text
    got = r.json()
    model = load_model("storyworld", device="cpu")
    rm = ReplacementModel(model, [load_dictionary(tc["path"], device="cpu")])
    (want,) = qk_terms(rm, rm.setup(rm.tokenize(TEXT)), [pair])
    assert got["score"] == pytest.approx(want.score, rel=1e-5, abs=1e-6)
    assert got["pairs"][0]["term"] == pytest.approx(
        float(want.terms.flatten()[want.terms.abs().argmax()]), rel=1e-5
    )
    with sqlite3.connect(live_store[0]) as db:  # stored beside the graph for the next viewer
        assert db.execute("SELECT COUNT(*) FROM graph_qk WHERE graph_id = ?", (gid,)).fetchone()[0] == 1
    again = live.get(
        f"/api/graphs/{gid}/qk", params=dict(zip(("layer", "head", "query", "key"), pair, strict=True))
    )
    assert again.json() == got
    bad = live.get(f"/api/graphs/{gid}/qk", params={"layer": 1, "head": 0, "query": 2, "key": 5})
    assert bad.status_code == 422 and "cannot attend" in bad.json()["detail"]


def test_direction_target_through_the_api(live):
    v = torch.randn(128, generator=torch.Generator().manual_seed(0)).tolist()
    done = _trace(
        live,
        {"prompt": TEXT, "target": "direction", "direction": v, "target_layer": 1, "target_position": -3},
    )
    assert done["status"] == "done", done
    g = live.get(f"/api/graphs/{done['result']['graph_id']}").json()
    t = g["metadata"]["targets"][0]
    assert t["kind"] == "direction" and t["site"] == "blocks.1.hook_resid_post"
    assert t["pos"] == len(g["metadata"]["prompt_tokens"]) - 3
    failed = _trace(live, {"prompt": TEXT, "target": "direction", "direction": v})
    assert failed["status"] == "failed" and "target_layer" in failed["error"]
    short = _trace(live, {"prompt": TEXT, "target": "direction", "direction": v[:5], "target_layer": 0})
    assert short["status"] == "failed" and "entries" in short["error"]
    r = live.post("/api/circuits", json={"prompt": TEXT, "target": "direction", "direction": [1.0, "nan"]})
    assert r.status_code == 422 and "direction" in r.text  # NaN is not a number to the strict body
    assert live.post("/api/circuits", json={"prompt": TEXT, "target_feature": "1_2"}).status_code == 422
