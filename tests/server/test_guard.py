"""The server is safe from a browser, for every route (server/guard.py), through FastAPI's TestClient
on a real small store: host allowlist, cross-origin refusal, bodies cut on the stream, strict JSON
(no NaN, no `true` for an id, no NUL), security headers. The same protections in chromium are in
test_browser_attacks.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from monosemantic.config import Config, load_config
from monosemantic.server.app import create_app
from monosemantic.server.guard import MAX_BODY, Body, allowed_hosts, host_name
from monosemantic.store.feature_store import FeatureStore

HOST = "http://127.0.0.1:8765"
POSTS = {  # a valid body per POST route (the live ones fail later: no model in this config)
    "/api/annotations": {"target": "feature", "key": "1/0", "text": "a note"},
    "/api/activations": {"dictionary": 1, "text": "the cat"},
    "/api/steer": {"dictionary": 1, "feature": 0, "prompt": "the cat"},
    "/api/circuits": {"prompt": "the cat"},
}


@pytest.fixture
def db(store_path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "features.db"
    shutil.copyfile(store_path, copy)
    return copy


def _client(db: Path, *overrides: str, base_url: str = HOST) -> TestClient:
    return TestClient(create_app(db, load_config(None, list(overrides))), base_url=base_url)


def _notes(db: Path) -> int:
    with FeatureStore(db) as store:
        tables = store._rows("SELECT name FROM sqlite_master WHERE name='annotations'")
        return store._rows("SELECT COUNT(*) FROM annotations")[0][0] if tables else 0


def test_hosts_are_loopback_names_and_the_configured_host():
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert "viewer.lan" in allowed_hosts("viewer.lan") and "evil.test" not in allowed_hosts("viewer.lan")
    assert allowed_hosts("0.0.0.0") is None  # every interface: a token is required, names unknown
    assert allowed_hosts("0.0.0.0", ["box.lan"]) == {"box.lan", "localhost", "127.0.0.1", "::1"}
    assert host_name("[::1]:8765") == "::1" and host_name("Example.ORG:80") == "example.org"


def test_a_foreign_host_header_is_refused_on_every_route(db: Path):
    """DNS rebinding: a page of evil.test whose name now resolves to 127.0.0.1."""
    with _client(db, base_url="http://evil.test:8765") as c:
        for path in ("/", "/live", "/api/site", "/api/dictionaries", "/graphs/1", "/no/such/route"):
            r = c.get(path)
            assert r.status_code == 400 and "host 'evil.test' is not served here" in r.json()["detail"]
        assert c.post("/api/annotations", json=POSTS["/api/annotations"]).status_code == 400
    assert _notes(db) == 0
    with _client(db, 'serve.allowed_hosts=["evil.test"]', base_url="http://evil.test:8765") as c:
        assert c.get("/api/site").status_code == 200
    for base in ("http://localhost:8765", "http://[::1]:8765", HOST):
        with _client(db, base_url=base) as c:
            assert c.get("/api/site").status_code == 200, base


def test_cross_origin_requests_are_refused_unless_listed(db: Path):
    with _client(db) as c:
        for origin in ("http://127.0.0.1:9999", "http://evil.test", "null"):
            r = c.post("/api/annotations", json=POSTS["/api/annotations"], headers={"Origin": origin})
            assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
            assert c.get("/api/site", headers={"Origin": origin}).status_code == 403
        assert "access-control-allow-origin" not in c.get("/api/site").headers  # CORS off
        same = c.post("/api/annotations", json=POSTS["/api/annotations"], headers={"Origin": HOST})
        assert same.status_code == 200
    assert _notes(db) == 1
    with _client(db, 'serve.cors_origins=["https://notebook.example.org"]') as c:
        origin = {"Origin": "https://notebook.example.org"}
        r = c.get("/api/site", headers=origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin["Origin"]
        pre = c.options("/api/annotations", headers={**origin, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"})  # fmt: skip
        assert pre.status_code == 200 and "POST" in pre.headers["access-control-allow-methods"]
        assert c.get("/api/site", headers={"Origin": "https://other.example.org"}).status_code == 403


def test_bodies_are_limited_on_the_stream(db: Path):
    """A chunked body (no Content-Length) is cut at MAX_BODY bytes (that the server's memory stays
    flat meanwhile is measured on a real uvicorn process in test_browser_attacks.py)."""
    chunk = b"x" * (1 << 16)

    def chunks(n: int):
        for _ in range(n):
            yield chunk

    with _client(db) as c:
        r = c.post("/api/annotations", content=chunks(32), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and f"over {MAX_BODY} bytes" in r.json()["detail"]
        r = c.post(
            "/api/annotations", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
        r = c.post("/api/annotations", content=b"{}", headers={"Content-Type": "application/json",
                                                                 "Content-Length": "99999999999"})  # fmt: skip
        assert r.status_code == 413
    assert _notes(db) == 0


@pytest.mark.parametrize("path", sorted(POSTS))
def test_non_finite_numbers_wrong_types_and_nul_are_422_on_every_post(db: Path, path: str):
    body = POSTS[path]
    with _client(db) as c:
        for constant in ("NaN", "Infinity", "-Infinity"):
            key = next((k for k, v in body.items() if isinstance(v, int)), "dictionary")
            raw = c.post(
                path, content=f'{{"{key}": {constant}}}', headers={"Content-Type": "application/json"}
            )
            assert raw.status_code == 422 and constant in raw.json()["detail"], (path, raw.text)
        for key, value in body.items():
            wrong = True if isinstance(value, int) else 7  # a bool is not an id; a number is not text
            r = c.post(path, json={**body, key: wrong})
            assert r.status_code == 422, (path, key, r.text)
            if isinstance(value, str):
                r = c.post(path, json={**body, key: value + "\x00"})
                assert r.status_code == 422 and "NUL" in r.json()["detail"]
        r = c.post(path, content=b'{"prompt": "x"}', headers={"Content-Type": "text/plain"})
        assert r.status_code == 415  # what a cross-site form or no-cors fetch can send
    assert _notes(db) == 0


def test_dictionary_true_is_not_id_1(db: Path):
    with _client(db) as c:
        r = c.post("/api/activations", json={"dictionary": True, "text": "the cat"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dictionary"]
        assert c.post("/api/activations", json={"dictionary": "1", "text": "the cat"}).status_code == 422


def test_nul_in_search_or_any_query_is_refused(db: Path):
    with _client(db) as c:
        assert len(c.get("/api/search", params={"q": "the"}).json()["results"]) > 0
        for q in ("\x00", "a\x00b"):
            r = c.get("/api/search", params={"q": q})
            assert r.status_code == 422 and "NUL" in r.json()["detail"]
        assert c.get("/api/dictionaries/1/features", params={"search": "\x00"}).status_code == 422
        assert c.get("/api/dictionaries/1/features%00").status_code == 422


def test_every_answer_carries_the_security_headers(db: Path):
    with _client(db) as c:
        answers = [c.get("/"), c.get("/api/site"), c.get("/graphs/1"), c.get("/no-such-page"),
                   c.post("/api/annotations", content=b"x" * (MAX_BODY + 1)),
                   _client(db, base_url="http://evil.test").get("/api/site")]  # fmt: skip
        for r in answers:
            csp = r.headers["content-security-policy"]
            assert "script-src 'self' 'nonce-" in csp and "frame-ancestors 'none'" in csp, r.url
            assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        page = c.get("/graphs/1")
        nonce = page.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
        assert f'<script nonce="{nonce}">' in page.text  # the viewer's inline script may run, no other


def test_hostile_strings_in_a_graph_cannot_end_its_script_element(db: Path):
    hostile = "x</script><script>alert(1)</script><!--<script>"
    graph = {"metadata": {"slug": "evil", "prompt": hostile}, "qParams": {},
             "nodes": [{"node_id": "E_0_0", "feature_type": "embedding", "clerp": hostile}], "links": []}  # fmt: skip
    with FeatureStore(db) as store:
        gid = store.add_graph("evil", graph, prompt=hostile)
    with _client(db) as c:
        page = c.get(f"/graphs/{gid}").text
    data = page.split('<script id="graph-data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in data and ">" not in data  # no markup inside: the element ends where it should
    assert page.count("</script>") == 2  # the data element's and the viewer's own


def test_every_json_body_model_is_strict(db: Path):
    """Routes added later inherit the rules only if their body model derives from `Body`."""
    routes = [
        r for r in _routes(create_app(db).routes) if isinstance(r, APIRoute) and r.body_field is not None
    ]
    assert {r.path for r in routes} >= set(POSTS)
    for r in routes:
        model = r.body_field.field_info.annotation
        assert isinstance(model, type) and issubclass(model, Body), f"{r.path}: {model} is not a server Body"


def _routes(routes: list) -> list:
    """Every route, also those of included routers (FastAPI wraps them)."""
    out = []
    for r in routes:
        inner = getattr(r, "original_router", None) or getattr(r, "router", None)
        out += _routes(inner.routes) if inner is not None and hasattr(inner, "routes") else [r]
    return out


def test_a_bound_host_that_is_not_a_host_is_a_config_error():
    with pytest.raises(Exception, match="serve.host: 'not a host' is not an IP address or a host name"):
        load_config(None, ['serve.host="not a host"'])
    assert Config().serve.host == "127.0.0.1"
