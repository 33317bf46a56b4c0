"""The live endpoints on the shipped storyworld LM with real (random-weight) checkpoints: results
equal the library computing the same thing directly; jobs, queue limits and streaming behave."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.generate import Sampling, context_of, subject_forward
from monosemantic.lm.generate import generate as lm_generate
from monosemantic.lm.model import load_model
from monosemantic.server.app import create_app
from monosemantic.steering.edits import prompt_ids, steering_edits
from monosemantic.store.feature_store import FeatureStore

from .conftest import LIVE_SAE, LIVE_TC

TEXT = "Tom the dog found a red ball in the park. He"


def generate(model, ids, n, edits=None, sampling=Sampling(), samples=1):
    """What the server must produce: the library's generation loop, called directly."""
    eos, ctx = model.tokenizer.eos_token_id, context_of(model.hf.config)
    out = lm_generate(subject_forward(model, edits), ids, n, sampling, samples, eos, "stop", ctx)
    return out[0] if samples == 1 else out


@pytest.fixture(scope="module")
def live(live_store):
    path, cfg = live_store
    with TestClient(create_app(path, cfg), base_url="http://127.0.0.1:8765") as c:
        yield c


@pytest.fixture(scope="module")
def ids(live_store):
    store = FeatureStore(live_store[0])
    out = {d["name"]: (d["id"], d["path"]) for d in store.dictionaries()}
    store.close()
    return out


@pytest.fixture(scope="module")
def model():
    return load_model("storyworld", device="cpu")


def _wait(client: TestClient, job: int, timeout: float = 120) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = client.get(f"/api/jobs/{job}").json()
        if got["status"] in ("done", "failed"):
            return got
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish in {timeout} s: {got}")


def test_activations_match_the_dictionary_on_the_model(live, ids, model):
    did, path = ids[LIVE_SAE]
    got = live.post("/api/activations", json={"dictionary": did, "text": TEXT, "feature": 3, "top": 5})
    assert got.status_code == 200, got.text
    r = got.json()
    dic = load_dictionary(path, device="cpu")
    tok = prompt_ids(model, TEXT)
    with torch.no_grad():
        acts = model.run(tok[None], capture=[dic.cfg.hook_name]).activations[dic.cfg.hook_name][0]
        codes = dic.encode(acts)
    assert r["token_ids"] == tok.tolist() and r["bos"] and len(r["tokens"]) == len(tok)
    assert "".join(r["tokens"][1:]) == TEXT and r["features"][0] == []  # BOS is not encoded
    for t in range(1, len(tok)):
        want = codes[t].topk(5)
        assert [f["feature"] for f in r["features"][t]] == want.indices.tolist()
        assert [f["value"] for f in r["features"][t]] == pytest.approx(want.values.tolist(), abs=1e-3)
    assert r["activations"][1:] == pytest.approx(codes[1:, 3].tolist(), abs=1e-3) and r["activations"][0] == 0


def test_live_input_errors(live, ids):
    did, _ = ids[LIVE_SAE]
    post = lambda body: live.post("/api/activations", json=body)  # noqa: E731
    assert post({"dictionary": 999, "text": "hi"}).status_code == 422  # no such store id
    assert post({"dictionary": 2**70, "text": "hi"}).status_code == 422
    assert post({"dictionary": did, "text": "x" * 50_000}).status_code == 422
    bad = post({"dictionary": did, "text": "hi", "feature": 256})
    assert bad.status_code == 422 and "out of range" in bad.json()["detail"]
    assert post({"dictionary": "/etc/passwd", "text": "hi"}).status_code == 422  # never a path
    assert live.post("/api/steer", json={"dictionary": did, "feature": 0, "prompt": "a",
                                         "value": "nan"}).status_code == 422  # fmt: skip
    assert live.post("/api/steer", json={"dictionary": did, "feature": 0, "prompt": "a",
                                         "max_new_tokens": 10_000}).status_code == 422  # fmt: skip
    big = live.post("/api/activations", content=b"{" + b" " * (2 << 20) + b"}",
                    headers={"content-type": "application/json"})  # fmt: skip
    assert big.status_code == 413


def test_steer_side_by_side_and_streamed(live, ids, model):
    did, path = ids[LIVE_SAE]
    body = {"dictionary": did, "feature": 7, "prompt": "Lily went to", "mode": "add", "value": 60.0,
            "max_new_tokens": 8}  # fmt: skip
    r = live.post("/api/steer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    dic = load_dictionary(path, device="cpu")
    tok = prompt_ids(model, "Lily went to")
    plain = generate(model, tok, 8)
    steered = generate(model, tok, 8, lambda s: steering_edits(dic, 7, "add", 60.0, skip_first=s == 0))
    assert out["plain_ids"] == plain.tolist() and out["steered_ids"] == steered.tolist()
    assert out["plain_ids"] != out["steered_ids"]
    with live.stream("POST", "/api/steer", json={**body, "stream": True}) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    final = events[-1]
    text = {w: "".join(e["text"] for e in events[1:-1] if e["which"] == w) for w in ("plain", "steered")}
    assert final["plain_ids"] == out["plain_ids"] and final["steered_ids"] == out["steered_ids"]
    assert text["plain"] == model.tokenizer.decode(out["plain_ids"]) and text["steered"] == out["steered"]


def test_steering_evaluation_in_units_of_max_activation(live, ids, model):
    """`4x` is 4 x the feature's max activation in the store (feature 7: 1 + 7 % 5 = 3); every
    arm holds `samples` generations, the same the library gives, with concept rate and fluency."""
    did, path = ids[LIVE_SAE]
    body = {"dictionary": did, "feature": 7, "prompt": "Lily went to", "values": ["4x", 2.5], "samples": 3,
            "temperature": 1.0, "top_p": 0.9, "seed": 5, "max_new_tokens": 6, "words": ["the"]}  # fmt: skip
    r = live.post("/api/steer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [a["label"] for a in out["arms"]] == ["plain", "4x (12)", "2.5"]
    assert out["arms"][1]["value"] == pytest.approx(12.0) and out["arms"][1]["multiple"] == 4
    assert out["max_activation"] == pytest.approx(3.0) and out["concept"] == ["the"]
    dic = load_dictionary(path, device="cpu")
    tok = prompt_ids(model, "Lily went to")
    s = Sampling(1.0, 0.9, 5)
    plain = generate(model, tok, 6, None, s, 3)
    steered = generate(model, tok, 6, lambda p: steering_edits(dic, 7, "add", 12.0, skip_first=p == 0), s, 3)
    assert out["arms"][0]["texts"] == [model.tokenizer.decode(x.tolist()) for x in plain]
    assert out["arms"][1]["texts"] == [model.tokenizer.decode(x.tolist()) for x in steered]
    for a in out["arms"]:
        assert 0 <= a["concept_rate"] <= 1 and (a["loss"] is None or a["loss"] > 0)
    with_the = sum(
        re.search(r"(?<!\w)the(?!\w)", t, re.IGNORECASE) is not None for t in out["arms"][0]["texts"]
    )
    assert out["arms"][0]["concept_rate"] == pytest.approx(with_the / 3)
    bad = live.post("/api/steer", json={**body, "values": ["four"]})
    assert bad.status_code == 422 and "not a number" in bad.text
    never = live.post("/api/steer", json={**body, "feature": 0, "values": ["4x"]})  # max activation 1: fine
    assert never.status_code == 200
    assert live.post("/api/steer", json={**body, "samples": 1000}).status_code == 422


def test_trace_a_prompt_as_a_job(live, ids):
    before = {g["id"] for g in live.get("/api/graphs").json()}
    r = live.post("/api/circuits", json={"prompt": "Tom the dog found a ball. He"})
    assert r.status_code == 202, r.text
    done = _wait(live, r.json()["job"])
    assert done["status"] == "done", done
    gid = done["result"]["graph_id"]
    graphs = live.get("/api/graphs").json()
    assert {g["id"] for g in graphs} - before == {gid}
    g = live.get(f"/api/graphs/{gid}").json()
    assert g["metadata"]["prompt"].endswith("He") or g["metadata"]["slug"].startswith("tom-the-dog")
    assert any(
        n.get("feature_type") == "cross layer transcoder" or n["node_id"].startswith("1_") for n in g["nodes"]
    )
    assert live.get(f"/graphs/{gid}").status_code == 200
    bad = live.post("/api/circuits", json={"prompt": "hi", "dictionaries": [ids[LIVE_SAE][0], 12345]})
    assert _wait(live, bad.json()["job"])["status"] == "failed"


@pytest.fixture(scope="module")
def graph(live_store):
    """A graph traced by the server with every node kept (the random transcoder's features would
    otherwise prune away behind its error nodes), and a client on the same store."""
    path, cfg = live_store
    cfg = cfg.model_copy(deep=True)
    cfg.circuit.node_threshold = cfg.circuit.edge_threshold = 1.0
    with TestClient(create_app(path, cfg), base_url="http://127.0.0.1:8765") as client:
        r = client.post("/api/circuits", json={"prompt": "Lily the cat went to the beach. She"})
        done = _wait(client, r.json()["job"])
        assert done["status"] == "done", done
        gid = done["result"]["graph_id"]
        yield client, gid, client.get(f"/api/graphs/{gid}").json()


def test_intervene_on_graph_nodes_equals_the_library(ids, model, graph):
    """Ablating, clamping and scaling a node of a stored graph gives the top next tokens the
    library's `intervene` gives on the same checkpoints, on the free and the frozen model."""
    from monosemantic.circuits.interventions import Intervention, intervene
    from monosemantic.circuits.replacement import ReplacementModel

    live, gid, g = graph
    feats = [n for n in g["nodes"] if n.get("feature_index") is not None and "error" not in n["feature_type"]]
    node = max(feats, key=lambda n: abs(n["activation"]))
    rm = ReplacementModel(model, [load_dictionary(ids[LIVE_TC][1], device="cpu")], [LIVE_TC])
    prompt = g["metadata"]["prompt"]
    for model_kind, mode, value in (("free", "ablate", 0.0), ("frozen", "ablate", 0.0), ("free", "scale", 3.0),
                                    ("free", "set", 20.0)):  # fmt: skip
        body = {"interventions": [{"node_id": node["node_id"], "mode": mode, "value": value}], "model": model_kind,
                "top": 5}  # fmt: skip
        r = live.post(f"/api/graphs/{gid}/intervene", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        iv = Intervention(node["dictionary"], node["feature_index"], mode, value, [node["ctx_idx"]])
        clean, edited = intervene(rm, prompt, [iv], freeze_attention=model_kind == "frozen")
        want = torch.softmax(edited[-1].double(), -1).topk(5)
        assert [t["id"] for t in out["intervened"]] == want.indices.tolist()
        assert [t["prob"] for t in out["intervened"]] == pytest.approx(want.values.tolist(), abs=1e-5)
        base = torch.softmax(clean[-1].double(), -1).topk(5)
        assert [t["id"] for t in out["original"]] == base.indices.tolist()
        assert out["model"] == model_kind and ("frozen" in out["label"]) == (model_kind == "frozen")
        assert out["kl"] > 1e-8  # the node is active: every edit here moves the distribution
        assert out["targets"] and out["targets"][0]["clean_prob"] == pytest.approx(
            float(torch.softmax(clean[-1].double(), -1)[out["targets"][0]["token_id"]]), abs=1e-5
        )
    same = live.post(f"/api/graphs/{gid}/intervene", json={"interventions": [
        {"node_id": node["node_id"], "mode": "scale", "value": 1.0}]}).json()  # fmt: skip
    assert same["kl"] == pytest.approx(0.0, abs=1e-9) and same["original"] == same["intervened"]


def test_intervene_input_errors(graph):
    live, gid, g = graph
    err = next(n for n in g["nodes"] if "error" in n["feature_type"])
    post = lambda b, i=gid: live.post(f"/api/graphs/{i}/intervene", json=b)  # noqa: E731
    bad = post({"interventions": [{"node_id": err["node_id"]}]})
    assert bad.status_code == 422 and "only feature nodes" in bad.json()["detail"]
    assert "no node" in post({"interventions": [{"node_id": "9_9_9"}]}).json()["detail"]
    assert post({"interventions": [{"node_id": "x"}]}, 99_999).status_code == 404
    assert post({"interventions": []}).status_code == 422
    assert post({"interventions": [{"node_id": "x", "value": "nan"}]}).status_code == 422
    assert post({"interventions": [{"node_id": "x"}], "model": "hot"}).status_code == 422


def test_full_queue_answers_429_with_retry_after(live, ids):
    worker = live.app.state.worker
    release = threading.Event()
    blocker, _ = worker.submit("block", lambda job: release.wait(30))
    try:
        while blocker.status != "running":
            time.sleep(0.01)
        for _ in range(live.app.state.cfg.serve.queue_size):
            worker.submit("wait", lambda job: None)
        r = live.post("/api/activations", json={"dictionary": ids[LIVE_SAE][0], "text": "hi"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert live.get("/api/dictionaries").status_code == 200  # browsing is unaffected
    finally:
        release.set()
    time.sleep(0.2)
    assert (
        live.post("/api/activations", json={"dictionary": ids[LIVE_SAE][0], "text": "hi"}).status_code == 200
    )


def test_search_every_dictionary(live, ids):
    hits = live.get("/api/search", params={"q": "dragons"}).json()["results"]
    assert {(h["dictionary"], h["idx"]) for h in hits} == {  # feature 0 is dead (density 0): hidden
        (n, i) for n in (LIVE_SAE, LIVE_TC) for i in range(50, 256, 50)
    }
    hits = live.get("/api/search", params={"q": "dragons", "dead": True}).json()["results"]
    assert {(h["dictionary"], h["idx"]) for h in hits} == {
        (n, i) for n in (LIVE_SAE, LIVE_TC) for i in range(0, 256, 50)
    }
    assert [h["idx"] for h in live.get("/api/search", params={"q": "tok170"}).json()["results"]] == [170, 170]
    assert live.get("/api/search", params={"q": 'feature NEAR( "AND *'}).status_code == 200
    assert live.get("/api/search", params={"q": "x" * 50_000}).status_code == 422
