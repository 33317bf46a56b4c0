"""The JSON API and the packaged viewer, through FastAPI's TestClient, on a real small store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from monosemantic.analyze.dashboard import ASSETS
from monosemantic.analyze.store import FeatureStore
from monosemantic.serve.app import create_app
from monosemantic.utils.errors import MonosemanticError

from .conftest import GRAPH


@pytest.fixture(scope="module")
def client(store_path):
    with TestClient(create_app(store_path)) as c:
        yield c


@pytest.fixture(scope="module")
def store(store_path):
    return FeatureStore(store_path)


def test_dictionaries(client, store):
    got = client.get("/api/dictionaries").json()
    assert [d["name"] for d in got] == ["toy-sae", "toy-transcoder"]
    assert [d["n_features"] for d in got] == [24, 24]
    assert [d["transcoder"] for d in got] == [False, True]
    assert client.get(f"/api/dictionaries/{got[1]['id']}").json()["hook_name_out"] == "blocks.0.hook_mlp_out"
    site = client.get("/api/site").json()
    assert site["meta"]["n_tokens"] == 480 and site["graphs"][0]["url"] == f"graphs/{site['graphs'][0]['id']}"


def test_feature_list_sorts_filters_and_pages(client, store):
    did = store.dictionary("toy-sae")["id"]
    every = client.get(f"/api/dictionaries/{did}/features").json()
    assert every["total"] == 24 and [r["idx"] for r in every["features"]] == list(range(24))
    dens = client.get(f"/api/dictionaries/{did}/features", params={"order": "density"}).json()["features"]
    assert [r["idx"] for r in dens] == [f["idx"] for f in store.list_features(did, "density")]
    assert all(a["density"] >= b["density"] for a, b in zip(dens[:-1], dens[1:], strict=True))
    by_max = client.get(f"/api/dictionaries/{did}/features", params={"order": "max", "limit": 5}).json()
    assert [r["max"] for r in by_max["features"]] == sorted(
        (r["max"] for r in every["features"]), reverse=True
    )[:5]
    word = next(r["explanation"].split("'")[1] for r in every["features"] if r["explanation"])
    hits = client.get(f"/api/dictionaries/{did}/features", params={"search": word}).json()
    want = store.list_features(did, search=word)
    assert hits["total"] == len(want) > 0 and [r["idx"] for r in hits["features"]] == [f["idx"] for f in want]
    page = client.get(f"/api/dictionaries/{did}/features", params={"offset": 20, "limit": 10}).json()
    assert [r["idx"] for r in page["features"]] == [20, 21, 22, 23] and page["total"] == 24
    row = every["features"][0]
    top = store.examples(did, 0, kind="top")
    assert row["tokens"][0] == top[0]["tokens"][top[0]["peak"]]  # peak tokens of the top examples


def test_feature_detail_has_examples(client, store):
    tc = store.dictionary("toy-transcoder")["id"]
    for idx in (0, 7):
        f = client.get(f"/api/dictionaries/{tc}/features/{idx}").json()
        want = store.feature(tc, idx)
        top = store.examples(tc, idx, kind="top")
        assert f["idx"] == idx and f["density"] == pytest.approx(want["density"], rel=1e-3)
        assert [e["t"] for e in f["top"]] == [e["tokens"] for e in top]
        assert [e["peak"] for e in f["top"]] == [e["peak"] for e in top]
        assert [t for t, _ in f["input_top"]] == [t["token"] for t in want["input_top"]]
        assert f["logit_top"] is None
        if want["histogram"]["counts"]:
            assert sum(f["histogram"]["counts"]) == sum(want["histogram"]["counts"])


def test_errors_are_http_errors_with_one_line(client, store):
    did = store.dictionary("toy-sae")["id"]
    bad = client.get(f"/api/dictionaries/{did}/features", params={"order": "colour"})
    assert bad.status_code == 400 and "density" in bad.json()["detail"]
    assert client.get("/api/dictionaries/99/features").status_code == 404
    missing = client.get(f"/api/dictionaries/{did}/features/500")
    assert missing.status_code == 404 and "\n" not in missing.json()["detail"]
    assert client.get("/api/graphs/99").status_code == 404
    assert client.get(f"/api/dictionaries/{did}/features", params={"limit": 0}).status_code == 422


def test_graphs(client):
    listed = client.get("/api/graphs").json()
    assert [(g["name"], g["prompt"]) for g in listed] == [("toy", "the cat sat")]
    assert client.get(f"/api/graphs/{listed[0]['id']}").json() == GRAPH
    page = client.get(f"/graphs/{listed[0]['id']}")
    assert page.status_code == 200 and "E_0_0" in page.text


def test_viewer_is_the_dashboard_in_live_mode(client):
    index = client.get("/")
    assert index.status_code == 200 and index.text == (ASSETS / "index.html").read_text()
    assert client.get("/app.js").text == (ASSETS / "app.js").read_text()
    assert client.get("/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/data/site.js").text.strip() == 'MONO.live("api");'


def test_missing_store(tmp_path):
    with pytest.raises(MonosemanticError, match="monosemantic analyze"):
        create_app(tmp_path / "nope.db")


def test_index_follows_store_updates(store_path, tmp_path):
    import shutil
    import time

    db = tmp_path / "features.db"
    shutil.copyfile(store_path, db)
    with TestClient(create_app(db)) as c:
        did = c.get("/api/dictionaries").json()[0]["id"]
        assert c.get(f"/api/dictionaries/{did}/features", params={"search": "marmalade"}).json()["total"] == 0
        time.sleep(0.01)  # a distinct file modification time
        FeatureStore(db).set_explanation(did, 5, "marmalade on toast", "human")
        hits = c.get(f"/api/dictionaries/{did}/features", params={"search": "marmalade"}).json()
        assert [r["idx"] for r in hits["features"]] == [5] and hits["features"][0][
            "explanation"
        ] == "marmalade on toast"
