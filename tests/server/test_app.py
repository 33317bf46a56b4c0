"""The JSON API and the packaged viewer, through FastAPI's TestClient, on a real small store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from monosemantic.exports.dashboard import ASSETS
from monosemantic.server.app import create_app
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import MonosemanticError

from .conftest import GRAPH


@pytest.fixture(scope="module")
def client(store_path):
    with TestClient(create_app(store_path), base_url="http://127.0.0.1:8765") as c:
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
    assert site["n_graphs"] == 1


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
    site_js = client.get("/data/site.js").text
    assert site_js.startswith('MONO.live("api");') and 'href = "live"' in site_js
    assert client.get("/live").text == (ASSETS / "live.html").read_text()
    assert client.get("/live.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/features.db").status_code == 404  # only the viewer's own files


def test_missing_store(tmp_path):
    with pytest.raises(MonosemanticError, match="monosemantic analyze"):
        create_app(tmp_path / "nope.db")


def test_index_follows_store_updates(store_path, tmp_path):
    import shutil
    import time

    db = tmp_path / "features.db"
    shutil.copyfile(store_path, db)
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:
        did = c.get("/api/dictionaries").json()[0]["id"]
        assert c.get(f"/api/dictionaries/{did}/features", params={"search": "marmalade"}).json()["total"] == 0
        time.sleep(0.01)  # a distinct file modification time
        FeatureStore(db).set_explanation(did, 5, "marmalade on toast", "human")
        hits = c.get(f"/api/dictionaries/{did}/features", params={"search": "marmalade"}).json()
        assert [r["idx"] for r in hits["features"]] == [5] and hits["features"][0][
            "explanation"
        ] == "marmalade on toast"


def test_no_500_on_huge_numbers_or_strings(client, store):
    did = store.dictionary("toy-sae")["id"]
    for url, params in [
        (f"/api/dictionaries/{did}/features", {"limit": 2**70}),
        (f"/api/dictionaries/{did}/features", {"offset": 2**64}),
        (f"/api/dictionaries/{did}/features", {"search": "x" * 50_000}),
        (f"/api/dictionaries/{did}/features", {"min_density": "nan"}),
        (f"/api/dictionaries/{did}/features/{2**70}", {}),
        (f"/api/dictionaries/{2**63}", {}),
        (f"/api/graphs/{2**70}", {}),
        (f"/graphs/{2**70}", {}),
        ("/api/search", {"q": "x" * 50_000}),
        ("/api/search", {"q": ""}),
    ]:
        r = client.get(url, params=params)
        assert r.status_code == 422, (url, params, r.status_code)
    biggest = client.get(f"/api/dictionaries/{did}/features/{2**31 - 1}")
    assert biggest.status_code == 404


def test_search_wildcards_are_literal(client, store):
    did = store.dictionary("toy-sae")["id"]
    count = lambda q: client.get(f"/api/dictionaries/{did}/features", params={"search": q}).json()["total"]  # noqa: E731
    assert count("%") == count("_") == 0  # no explanation or token holds these characters
    assert count("'") == store.count_features(did, search="'") > 0  # an ordinary character still matches


def test_annotations_are_stored_in_the_store(store_path, tmp_path):
    import shutil

    db = tmp_path / "features.db"
    shutil.copyfile(store_path, db)
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:
        gid = c.get("/api/graphs").json()[0]["id"]
        did = c.get("/api/dictionaries").json()[0]["id"]
        assert c.get("/api/annotations").json() == []
        assert (
            c.post(
                "/api/annotations", json={"target": "graph", "key": str(gid), "text": "induction"}
            ).status_code
            == 200
        )
        assert (
            c.post(
                "/api/annotations", json={"target": "feature", "key": f"{did}/3", "text": "dogs"}
            ).status_code
            == 200
        )
        assert (
            c.post(
                "/api/annotations", json={"target": "feature", "key": f"{did}/999", "text": "x"}
            ).status_code
            == 404
        )
        assert (
            c.post("/api/annotations", json={"target": "feature", "key": "a/b/c", "text": "x"}).status_code
            == 422
        )
        assert c.post("/api/annotations", json={"target": "node", "key": "1", "text": "x"}).status_code == 422
        notes = c.get("/api/annotations", params={"target": "feature"}).json()
        assert [(n["key"], n["text"]) for n in notes] == [(f"{did}/3", "dogs")]
    with FeatureStore(db) as s:  # the note is in the file, the rest untouched
        assert [r["text"] for r in s._rows("SELECT text FROM annotations ORDER BY id")] == [
            "induction",
            "dogs",
        ]
        assert len(s.graphs()) == 1


def test_follows_a_replaced_store(store_path, tmp_path):
    import shutil

    db = tmp_path / "features.db"
    shutil.copyfile(store_path, db)
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:
        assert [d["name"] for d in c.get("/api/dictionaries").json()] == ["toy-sae", "toy-transcoder"]
        with FeatureStore.fresh(db) as fresh:  # what `analyze` does: a new file renamed over the old
            fresh.add_dictionary("rebuilt", d_sae=2)
            fresh.upsert_features(1, [{"idx": 0, "explanation": "new analysis", "density": 0.1},
                                      {"idx": 1, "density": 0.2}])  # fmt: skip
        assert [d["name"] for d in c.get("/api/dictionaries").json()] == ["rebuilt"]
        rows = c.get("/api/dictionaries/1/features").json()
        assert rows["total"] == 2 and rows["features"][0]["explanation"] == "new analysis"
        assert c.get("/api/graphs").json() == []
        assert c.get("/api/search", params={"q": "analysis"}).json()["results"][0]["dictionary"] == "rebuilt"
        broken = tmp_path / "broken.db"
        broken.write_bytes(b"not a database" * 100)
        broken.replace(db)  # a broken file renamed over the store: 503, then recovery when fixed
        assert c.get("/api/dictionaries").status_code == 503
        shutil.copyfile(store_path, tmp_path / "again.db")
        (tmp_path / "again.db").replace(db)
        assert len(c.get("/api/dictionaries").json()) == 2


def test_locked_store_answers_503_quickly(store_path, tmp_path):
    import shutil
    import sqlite3
    import time

    db = tmp_path / "features.db"
    shutil.copyfile(store_path, db)
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/dictionaries").status_code == 200
        writer = sqlite3.connect(db, isolation_level=None)
        writer.execute("BEGIN EXCLUSIVE")
        try:
            t0 = time.perf_counter()
            r = c.get("/api/dictionaries")
            took = time.perf_counter() - t0
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        assert r.status_code == 503 and "locked" in r.json()["detail"] and r.headers["Retry-After"] == "1"
        assert took < 5.0  # serve.busy_timeout_s = 0.5, not SQLite's 30 s
        assert c.get("/api/dictionaries").status_code == 200


def test_token_required_off_localhost(store_path):
    from monosemantic.config import Config
    from monosemantic.server.auth import check_bind
    from monosemantic.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="serve.token"):
        check_bind("0.0.0.0", None)
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "s" * 16)
    cfg = Config()
    cfg.serve.token = "correct-horse-battery"
    with TestClient(create_app(store_path, cfg), base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/dictionaries").status_code == 401
        assert (
            c.get("/api/dictionaries", headers={"Authorization": "Bearer wrong-horse-battery"}).status_code
            == 401
        )
        ok = c.get("/api/dictionaries", headers={"Authorization": "Bearer correct-horse-battery"})
        assert ok.status_code == 200 and len(ok.json()) == 2
        page = c.get(
            "/", params={"token": "correct-horse-battery"}
        )  # a browser: once in the URL, then a cookie
        assert page.status_code == 200 and c.get("/api/dictionaries").status_code == 200


def test_dead_features_are_hidden_from_lists_and_search_unless_asked(store_path, tmp_path):
    """A feature that never fired (density 0, as `analyze` records it) is left out of
    `/api/search` and of `/api/dictionaries/{id}/features` by default, and shown with dead=true."""
    import shutil

    db = shutil.copy(store_path, tmp_path / "features.db")
    with FeatureStore(db) as s:
        did = s.dictionary("toy-sae")["id"]
        f = s.feature(did, 2)
        word = f["logit_top"][0]["token"].strip()
        s.upsert_features(did, [{"idx": 2, "density": 0.0, "n_active": 0}])
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:  # the Host guard's address

        def hits(**p: str | float) -> set:
            found = c.get("/api/search", params={"q": word, **p}).json()["results"]
            return {(h["dictionary"], h["idx"]) for h in found}

        assert ("toy-sae", 2) not in hits() and ("toy-sae", 2) in hits(dead="true")
        assert hits(min_density=1.0) == set()
        rows = c.get(f"/api/dictionaries/{did}/features").json()
        assert rows["total"] == 23 and 2 not in [r["idx"] for r in rows["features"]]
        every = c.get(f"/api/dictionaries/{did}/features", params={"dead": "true"}).json()
        assert every["total"] == 24 and next(r for r in every["features"] if r["idx"] == 2)["dead"] is True
        site = c.get("/api/site").json()
        sae = next(d for d in site["dictionaries"] if d["id"] == did)
        assert (sae["n_live"], sae["n_dead"]) == (23, 1) and sae["representative"] != 2


def test_site_opens_on_a_dictionary_and_offers_prompts_from_the_data(client, store):
    """The prompts the live views pre-fill are contexts of the store's own examples."""
    site = client.get("/api/site").json()
    assert site["default_dictionary"] in [d["id"] for d in site["dictionaries"]]
    assert site["prompts"]
    did = site["default_dictionary"]
    texts = {
        "".join(e["tokens"]).strip()
        for f in store.list_features(did)
        for e in store.examples(did, f["idx"], kind="top")
    }
    for p in site["prompts"]:
        assert p["text"] in texts and p["text"].startswith(p["prefix"])
