"""A real `monosemantic serve` (uvicorn) attacked from a browser (Debian's chromium via Playwright):
a page of another origin, served by a second local HTTP server, cannot read or write through it;
a DNS-rebinding page (its own name resolving to 127.0.0.1) gets 400 for every request; hostile
strings in a graph cannot break the viewer; a chunked upload cannot grow the server's memory."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from serve_process import ARGS, CHROMIUM, free_port, start

from monosemantic.store.feature_store import FeatureStore

HOSTILE = 'x</script><script>document.title="pwned"</script><!--<script>'
NO_PNA = "BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,LocalNetworkAccessChecks"
NOTE = {"target": "feature", "key": "1/0", "text": "pwned"}
ATTACK_JS = """
const S = SERVER;
window.results = {};
async function attempt(name, fn) {
  try { results[name] = await fn(); } catch (e) { results[name] = "blocked"; }
}
(async () => {
  await attempt("read", async () => { const r = await fetch(S + "/api/site"); return "read " + r.status; });
  await attempt("read_xhr", () => new Promise((ok) => {
    const x = new XMLHttpRequest(); x.open("GET", S + "/api/annotations");
    x.onload = () => ok("read " + x.status); x.onerror = () => ok("blocked"); x.send(); }));
  await attempt("post_json", async () => {
    const r = await fetch(S + "/api/annotations", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(NOTE) });
    return "status " + r.status; });
  await attempt("post_no_cors", async () => {  // a "simple" request: sent without a preflight
    const r = await fetch(S + "/api/annotations", { method: "POST", mode: "no-cors",
      headers: { "content-type": "text/plain" }, body: JSON.stringify(NOTE) });
    return r.type === "opaque" ? "sent, unreadable" : "status " + r.status; });
  await attempt("job_no_cors", async () => {
    await fetch(S + "/api/circuits", { method: "POST", mode: "no-cors", body: JSON.stringify({ prompt: "pwned" }) });
    return "sent, unreadable"; });
  await attempt("xhr_post", () => new Promise((ok) => {
    const x = new XMLHttpRequest(); x.open("POST", S + "/api/circuits");
    x.setRequestHeader("content-type", "application/json");
    x.onload = () => ok("status " + x.status); x.onerror = () => ok("blocked");
    x.send(JSON.stringify({ prompt: "pwned" })); }));
  await attempt("beacon", async () => navigator.sendBeacon(S + "/api/annotations", JSON.stringify(NOTE)) ? "queued" : "refused");
  document.getElementById("form").submit();  // a cross-site form post into the hidden frame
  await new Promise((ok) => setTimeout(ok, 1500));
  document.body.dataset.done = "1";
})();
"""


def attack_page(server: str) -> str:
    js = ATTACK_JS.replace("SERVER", json.dumps(server)).replace("NOTE", json.dumps(NOTE))
    field = json.dumps(NOTE)[:-2]  # text/plain form body `NAME=VALUE` shaped to read as JSON
    return f"""<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<iframe id="frame" src="{server}/"></iframe>
<form id="form" method="POST" action="{server}/api/annotations" enctype="text/plain" target="sink">
<input name='{field}' value='x"}}'></form>
<script>{js}</script></body></html>"""


@pytest.fixture(scope="module")
def browser_type():
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        yield p.chromium


@pytest.fixture(scope="module")
def browser(browser_type):
    b = browser_type.launch(executable_path=str(CHROMIUM), args=ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def served(store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("attacked")
    db = root / "features.db"
    shutil.copyfile(store_path, db)
    graph = {"metadata": {"slug": "hostile", "prompt": HOSTILE, "scores": {}}, "qParams": {},
             "nodes": [{"node_id": "E_0_0", "feature_type": "embedding", "layer": "E", "ctx_idx": 0,
                        "clerp": HOSTILE, "influence": 1.0, "activation": 1.0},
                       {"node_id": "L_0_0", "feature_type": "logit", "layer": "1", "ctx_idx": 0,
                        "clerp": HOSTILE, "influence": 1.0, "activation": 1.0}],
             "links": [{"source": "E_0_0", "target": "L_0_0", "weight": 1.0}]}  # fmt: skip
    with FeatureStore(db) as store:
        gid = store.add_graph("hostile", graph, prompt=HOSTILE)
    proc, url = start(db, root)
    yield url, gid, proc
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def attacker(served, tmp_path_factory: pytest.TempPathFactory):
    """The attacker's page on another port of this machine (another origin), by a plain HTTP server."""
    url, _, _ = served
    folder = tmp_path_factory.mktemp("attacker")
    (folder / "attack.html").write_text(attack_page(url))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/attack.html"
    httpd.shutdown()
    httpd.server_close()


def _landed(server: str) -> tuple[list, list]:
    """Annotations and jobs on the server, asked directly (no Origin header: not a browser)."""
    return httpx.get(server + "/api/annotations").json(), httpx.get(server + "/api/jobs").json()


def _run(page, url: str) -> dict:
    page.goto(url)
    page.wait_for_selector("body[data-done='1']", timeout=30_000)
    return page.evaluate("window.results")


def test_a_page_of_another_origin_cannot_read_or_write(browser, served, attacker):
    server, _, _ = served
    page = browser.new_page()
    results = _run(page, attacker)
    framed = page.query_selector("#frame").content_frame().url
    page.close()
    assert results["read"] == "blocked" and results["read_xhr"] == "blocked"  # no CORS: nothing readable
    assert results["post_json"] == "blocked" and results["xhr_post"] == "blocked"  # preflight refused
    assert results["post_no_cors"] == "sent, unreadable" and results["job_no_cors"] == "sent, unreadable"
    assert framed.startswith("chrome-error"), framed  # X-Frame-Options: DENY, frame-ancestors 'none'
    notes, jobs = _landed(server)
    assert notes == [] and jobs == []  # the requests that were sent were refused (403 / 415)


def test_a_dns_rebinding_page_gets_400_for_every_request(browser_type, served):
    """evil.test resolves to 127.0.0.1 (chromium's resolver rules); its page is served first by the
    attacker (Playwright answers the navigation), then its same-origin requests reach our server.
    Chromium's own Private Network Access check is turned off: other browsers (and older ones) have
    none, so the server must refuse by itself."""
    server, _, _ = served
    port = server.rsplit(":", 1)[1]
    evil = f"http://evil.test:{port}"
    args = [*ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1", f"--disable-features={NO_PNA}"]
    browser = browser_type.launch(executable_path=str(CHROMIUM), args=args)
    try:
        page = browser.new_page()
        page.route(f"{evil}/attack.html", lambda r: r.fulfill(body=attack_page(""), content_type="text/html"))
        results = _run(page, f"{evil}/attack.html")
    finally:
        browser.close()
    # same origin to the browser: every request reaches the server, which answers 400 (wrong Host)
    assert results["read"] == "read 400" and results["read_xhr"] == "read 400", results
    assert results["post_json"] == "status 400" and results["xhr_post"] == "status 400", results
    notes, jobs = _landed(server)
    assert notes == [] and jobs == []


def test_hostile_strings_in_a_graph_render_as_text(browser, served):
    server, gid, _ = served
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{server}/graphs/{gid}")
    page.wait_for_selector("#prompt:not(:empty)", timeout=15_000)
    prompt, title = page.inner_text("#prompt"), page.title()
    page.close()
    assert HOSTILE in prompt  # parsed from the data and shown as text by the viewer's own script
    assert title != "pwned" and errors == []


def test_a_chunked_upload_does_not_grow_the_server(served):
    """192 MiB offered without Content-Length: the server stops reading at 1 MiB and answers 413."""
    server, _, proc = served

    def peak_rss() -> int:
        status = Path(f"/proc/{proc.pid}/status")
        if not status.exists():
            pytest.skip("no /proc on this system")
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    httpx.get(server + "/api/site")  # warm: the first answers allocate caches
    before = peak_rss()
    chunk = b" " * (1 << 20)

    def body():
        for _ in range(192):
            yield chunk

    try:
        r = httpx.post(server + "/api/annotations", content=body(), headers={"Content-Type": "application/json"},
                       timeout=60)  # fmt: skip
        assert r.status_code == 413
    except httpx.HTTPError:
        pass  # the server may close the connection while the rest is still being sent
    assert peak_rss() - before < 32 * (1 << 20)
    assert _landed(server)[0] == []
