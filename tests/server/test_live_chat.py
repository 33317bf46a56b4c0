"""Chat prompts in the live API (activations, steering, tracing) on the shipped storyworld LM with
a chat template from `data.chat_template`: the ids are those `corpus.chat_prompt.chat_prompt` renders,
results equal the library computed on them directly, and every result marks the turns."""

from __future__ import annotations

import json
import time

import pytest
import torch
from chat_world import TEMPLATE
from fastapi.testclient import TestClient

from monosemantic.corpus.chat_prompt import chat_prompt
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.generate import Sampling, context_of, subject_forward
from monosemantic.lm.generate import generate as lm_generate
from monosemantic.lm.model import load_model
from monosemantic.server.app import create_app
from monosemantic.steering.edits import steering_edits
from monosemantic.store.feature_store import FeatureStore

from .conftest import LIVE_SAE

CHAT = "system: You tell short stories.\nuser: Where did Lily go?"
MESSAGES = [
    {"role": "system", "content": "You tell short stories."},
    {"role": "user", "content": "Where did Lily go?"},
]


def generate(model, ids, n, edits=None):
    """One greedy continuation (new tokens) through the library's generation loop, as the server runs it."""
    forward = subject_forward(model, edits)
    eos = model.tokenizer.eos_token_id
    return lm_generate(forward, ids, n, Sampling(), 1, eos, "stop", context_of(model.hf.config))[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "chat.jinja"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture(scope="module")
def live(live_store, template):
    path, cfg = live_store
    cfg = cfg.model_copy(deep=True)
    cfg.data.chat_template = template
    with TestClient(create_app(path, cfg), base_url="http://127.0.0.1:8765") as c:
        yield c


@pytest.fixture(scope="module")
def sae(live_store):
    store = FeatureStore(live_store[0])
    row = next(d for d in store.dictionaries() if d["name"] == LIVE_SAE)
    store.close()
    return row["id"], row["path"]


@pytest.fixture(scope="module")
def model():
    return load_model("storyworld", device="cpu")


def test_activations_of_a_chat_prompt(live, sae, model, template):
    did, path = sae
    r = live.post("/api/activations", json={"dictionary": did, "chat": CHAT, "feature": 3})
    assert r.status_code == 200, r.text
    r = r.json()
    ids, _ = chat_prompt(model.tokenizer, MESSAGES, template)
    assert r["token_ids"] == ids and [t["role"] for t in r["turns"]] == ["other", "system", "user", "other"]
    user = next(t for t in r["turns"] if t["role"] == "user")
    assert "".join(r["tokens"][user["start"] : user["end"]]).startswith("<start_of_turn>user")
    dic = load_dictionary(path, device="cpu")
    with torch.no_grad():
        acts = model.run(torch.tensor(ids)[None], capture=[dic.cfg.hook_name]).activations[dic.cfg.hook_name][
            0
        ]
        codes = dic.encode(acts)
    assert r["activations"][1:] == pytest.approx(codes[1:, 3].tolist(), abs=1e-3)
    listed = live.post("/api/activations", json={"dictionary": did, "chat": MESSAGES}).json()  # the list form
    assert listed["token_ids"] == ids and listed["turns"] == r["turns"]


def test_steer_a_chat_prompt(live, sae, model, template):
    did, path = sae
    body = {"dictionary": did, "feature": 7, "chat": MESSAGES, "value": 60.0, "max_new_tokens": 6}
    r = live.post("/api/steer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    ids = torch.tensor(chat_prompt(model.tokenizer, MESSAGES, template)[0])
    dic = load_dictionary(path, device="cpu")
    steered = generate(model, ids, 6, lambda s: steering_edits(dic, 7, "add", 60.0, skip_first=s == 0))
    assert out["plain_ids"] == generate(model, ids, 6).tolist() and out["steered_ids"] == steered.tolist()
    assert out["chat"] == MESSAGES and len(out["prompt_tokens"]) == len(ids)
    assert out["turns"][-1] == {"role": "other", "start": out["turns"][-1]["start"], "end": len(ids)}
    assert out["prompt"].endswith("<start_of_turn>model\n")


def test_trace_a_chat_prompt_marks_its_turns(live):
    r = live.post("/api/circuits", json={"chat": CHAT})
    assert r.status_code == 202, r.text
    t0 = time.time()
    while (job := live.get(f"/api/jobs/{r.json()['job']}").json())["status"] not in ("done", "failed"):
        assert time.time() - t0 < 300, job
        time.sleep(0.2)
    assert job["status"] == "done", job
    g = live.get(f"/api/graphs/{job['result']['graph_id']}").json()
    assert [t["role"] for t in g["metadata"]["turns"]] == ["other", "system", "user", "other"]
    assert g["metadata"]["chat"] == MESSAGES


def test_chat_input_errors(live, sae, tmp_path):
    did, _ = sae
    post = lambda body: live.post("/api/activations", json={"dictionary": did, **body})  # noqa: E731
    assert post({"text": "hi", "chat": CHAT}).status_code == 422  # one of them
    assert post({}).status_code == 422
    assert post({"chat": [{"role": "narrator", "content": "hi"}]}).status_code == 422
    bad = post({"chat": "no role here"})
    assert bad.status_code == 422 and "has no role" in bad.json()["detail"]
    saved = tmp_path / "chat.json"  # a request's chat is the conversation itself, never a file to read
    saved.write_text(json.dumps(MESSAGES))
    assert post({"chat": str(saved)}).status_code == 422
    assert post({"chat": "user: " + "x" * 50_000}).status_code == 422  # serve.max_text_chars
