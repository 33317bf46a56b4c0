"""`monosemantic serve` as a real process: uvicorn answers the API, and the viewer renders in chromium."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serve_process import ARGS, CHROMIUM, free_port, start

LIVE_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def server(store_path, tmp_path_factory):
    proc, url = start(store_path, tmp_path_factory.mktemp("cfg"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_serve_answers(server):
    got = httpx.get(server + "/api/dictionaries").json()  # at once: "serving at" means listening
    assert [d["name"] for d in got] == ["toy-sae", "toy-transcoder"]


def test_live_viewer_renders(server):
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_selector("#feature .ex .tok.on", timeout=15_000)
        assert page.locator("#list li").count() == 24
        assert page.locator("#graphs a:not(#live-link)").count() == 1
        assert page.locator("#live-link").get_attribute("href") == "live"
        page.fill("#search", "zzzz-none")
        page.wait_for_timeout(100)
        assert page.locator("#list li").count() == 0
        browser.close()
    assert errors == []


def test_live_page_prefills_prompts_from_the_runs_data(server):
    """/live fills its text boxes with contexts from the store's examples, not storyworld text."""
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    site = httpx.get(server + "/api/site", timeout=60).json()
    prompts = site["prompts"]
    assert prompts
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        page.goto(server + "/live")
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert page.input_value("#act-text") == prompts[0]["text"]
        assert page.input_value("#steer-prompt") == prompts[min(1, len(prompts) - 1)]["prefix"]
        assert page.input_value("#act-dict") == str(site["default_dictionary"])
        browser.close()


@pytest.fixture(scope="module")
def live_server(live_store, tmp_path_factory):
    proc, url = start(live_store[0], tmp_path_factory.mktemp("live-cfg"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def live_page(live_server):
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # live views load the model in the server's worker on first use: slow on a busy 2-core box
        page.set_default_timeout(LIVE_TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live_server + "/live")
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        yield page
        browser.close()
    assert errors == []


def test_view_search(live_page):
    live_page.fill("#q", "dragons")
    live_page.click("#search-form button")
    live_page.wait_for_selector("#search-results li a")
    links = live_page.locator("#search-results li a")
    assert links.count() == 10  # 6 explained features in each of the 2 dictionaries, feature 0 dead
    assert links.first.get_attribute("href").startswith("./#/")
    live_page.check("#q-dead")
    live_page.click("#search-form button")
    live_page.wait_for_selector("#search-results li:nth-child(12) a")  # selectors: the CSP forbids eval


def test_view_activation_tester(live_page):
    live_page.select_option("#act-dict", label="live-sae (SAE, 256)")
    live_page.fill("#act-text", "Tom the dog")
    live_page.fill("#act-feature", "")
    live_page.click("#act-run")
    live_page.wait_for_selector("#act-tokens span")
    toks = live_page.locator("#act-tokens span")
    assert "".join(toks.all_inner_texts()[1:]) == "Tom the dog"
    assert live_page.locator("#act-detail li a").count() == 8  # the last token's k=8 active features
    toks.nth(1).click()
    assert live_page.locator("#act-tokens span.sel").get_attribute("data-i") == "1"


def test_view_steering_side_by_side(live_page):
    live_page.fill("#steer-n", "6")
    live_page.fill("#steer-value", "60")
    live_page.fill("#steer-feature", "7")
    live_page.fill("#steer-prompt", "Lily went to the")
    live_page.fill("#steer-samples", "3")
    live_page.click("#steer-run")
    # selectors, not wait_for_function: the page's Content-Security-Policy forbids eval
    live_page.wait_for_selector("#steer-plain:not(:empty)")
    live_page.wait_for_selector("#steer-run:enabled")
    plain, steered = live_page.inner_text("#steer-plain"), live_page.inner_text("#steer-steered")
    assert plain and steered and plain != steered
    # the evaluation: plain and the value, with concept rate and fluency, as `monosemantic steer`
    rows = live_page.eval_on_selector_all(
        "#steer-eval table.eval tr", "rs => rs.slice(1).map(r => r.cells[0].textContent)"
    )
    assert rows == ["plain", "60"] and "3 samples per row" in live_page.inner_text("#steer-eval")


def test_view_chat_prompts_show_their_turns(live_page):
    live_page.check("#act-chat")
    live_page.fill("#act-text", "system: You tell short stories.\nuser: Where did Lily go?")
    live_page.click("#act-run")
    live_page.wait_for_selector("#act-tokens b.turn")
    assert live_page.locator("#act-tokens b.turn").all_inner_texts() == ["system", "user"]
    assert live_page.locator("#act-tokens span.r-user").count() > 5
    live_page.uncheck("#act-chat")
    live_page.check("#steer-chat")
    live_page.fill("#steer-prompt", "user: Where did Lily go?")
    live_page.click("#steer-run")
    live_page.wait_for_selector("#steer-turns b.turn")
    assert live_page.locator("#steer-turns b.turn").all_inner_texts() == ["user"]
    assert live_page.inner_text("#steer-plain") and live_page.inner_text("#steer-steered")
    live_page.uncheck("#steer-chat")


def test_view_trace_opens_the_graph(live_page, live_server):
    live_page.fill("#trace-prompt", "Tom the dog found a ball. He")
    live_page.click("#trace-run")
    live_page.wait_for_selector("#trace-link")
    assert live_page.evaluate("document.getElementById('trace-bar').style.width") == "100%"
    href = live_page.get_attribute("#trace-link", "href")
    gid = int(href.rsplit("/", 1)[1])
    assert gid in [g["id"] for g in httpx.get(live_server + "/api/graphs").json()]
    live_page.wait_for_selector(f"#graph-list a[href='graphs/{gid}']")
    live_page.click("#trace-link")
    live_page.wait_for_load_state()
    assert live_page.url.endswith(f"/graphs/{gid}") and "tom-the-dog" in live_page.content()


@pytest.mark.parametrize("case", ["busy port", "open host without token"])
def test_serve_refuses_in_one_line(store_path, tmp_path, case):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        host = "127.0.0.1" if case == "busy port" else "0.0.0.0"
        cfg = tmp_path / "serve.toml"
        cfg.write_text(f'[serve]\ndb = "{store_path}"\nhost = "{host}"\nport = {port}\n')
        out = subprocess.run([sys.executable, "-m", "monosemantic.cli", "serve", str(cfg)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and (
        "cannot listen" in lines[0] if case == "busy port" else "serve.token" in lines[0]
    )


@pytest.fixture(scope="module")
def graph_server(live_store, tmp_path_factory):
    """A server on a copy of the live store that keeps every node of the graphs it traces (the
    random transcoder's features would otherwise prune away behind its error nodes)."""
    import shutil

    work = tmp_path_factory.mktemp("graph-cfg")
    db = shutil.copy(live_store[0], work / "features.db")
    port = free_port()
    cfg = work / "serve.toml"
    cfg.write_text(f'device = "cpu"\n[serve]\ndb = "{db}"\nport = {port}\n'
                   '[circuit]\nablation = "zero"\nnode_threshold = 1.0\nedge_threshold = 1.0\n')  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "monosemantic.cli", "serve", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("serving "):
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            break
    url = f"http://127.0.0.1:{port}"
    prompt = {"prompt": "Lily the cat went to the beach. She"}
    job = httpx.post(url + "/api/circuits", json=prompt, timeout=60).json()["job"]
    for _ in range(600):
        got = httpx.get(f"{url}/api/jobs/{job}", timeout=60).json()
        if got["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert got["status"] == "done", got
    yield url, got["result"]["graph_id"]
    proc.terminate()
    try:
        proc.wait(timeout=60)  # a busy worker finishes its job first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_graph_viewer_intervenes_on_a_node(graph_server, live_page):
    """In the served graph viewer: select a feature node, ablate it on the free and then the frozen
    model; the table shows the original and intervened top tokens the API computes."""
    url, gid = graph_server
    graph = httpx.get(f"{url}/api/graphs/{gid}", timeout=60).json()
    node = max((n for n in graph["nodes"] if n.get("feature_index") is not None and "error" not in n["feature_type"]),
               key=lambda n: abs(n["activation"]))  # fmt: skip
    # the module's browser: one Playwright per process
    page = live_page.context.browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(LIVE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/graphs/{gid}")
    page.wait_for_selector(".lbl")
    assert page.locator("#iv-run").is_enabled()
    page.locator(f'.node[data-id="{node["node_id"]}"]').click()
    for model in ("free", "frozen"):
        page.select_option("#iv-mode", "ablate")
        page.select_option("#iv-model", model)
        page.eval_on_selector("#iv-result", "e => { e.innerHTML = '' }")  # so the wait sees this run's table
        page.click("#iv-run")
        page.wait_for_selector("#iv-result table.iv tr:nth-child(2)")  # selectors: the CSP forbids eval
        page.wait_for_selector("#iv-run:enabled")
        want = httpx.post(f"{url}/api/graphs/{gid}/intervene", json={
            "interventions": [{"node_id": node["node_id"], "mode": "ablate", "value": 0}], "model": model}, timeout=120).json()  # fmt: skip
        rows = page.eval_on_selector_all("#iv-result table.iv tr:not(.target)", "rs => rs.slice(1).map(r => "
                                         "[...r.cells].map(c => c.textContent))")  # fmt: skip
        assert [r[1] for r in rows] == [t["token"].replace("\n", "↵") for t in want["original"]]
        assert [r[3] for r in rows] == [t["token"].replace("\n", "↵") for t in want["intervened"]]
        assert [float(r[4]) for r in rows] == pytest.approx([t["prob"] for t in want["intervened"]], abs=1e-3)
        status = page.inner_text("#iv-status")
        assert ("frozen attention" in status) == (model == "frozen") and "ablate" in status
    # several nodes at once: add two, run, clear
    page.select_option("#iv-mode", "scale")
    page.fill("#iv-value", "3")
    page.click("#iv-add")
    assert page.locator("#iv-list li").count() == 1 and "scale ×3" in page.inner_text("#iv-list")
    page.click("#iv-clear")
    assert page.locator("#iv-list li").count() == 0
    page.close()
    assert errors == []


def test_view_trace_a_direction_with_heads(live_page, live_server, tmp_path):
    """The trace form sends any target (here a direction file, read in the browser) and head
    loadings; the served graph's attention panel explains a head, computing its QK terms on demand."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "probe.safetensors"
    save_file({"direction": torch.randn(128, generator=torch.Generator().manual_seed(3))}, str(path),
              metadata={"layer": "1"})  # fmt: skip
    live_page.goto(live_server + "/live")  # the previous test left the page on a graph
    live_page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    live_page.fill("#trace-prompt", "Tom the dog found a red ball in the park. He")
    live_page.select_option("#trace-target", "direction")
    live_page.set_input_files("#trace-direction-file", str(path))
    live_page.check("#trace-heads")
    live_page.click("#trace-run")
    live_page.wait_for_selector("#trace-status a")  # selectors: the CSP forbids eval
    gid = int(live_page.get_attribute("#trace-status a", "href").rsplit("/", 1)[1])
    g = httpx.get(f"{live_server}/api/graphs/{gid}").json()
    assert g["metadata"]["targets"][0]["kind"] == "direction" and all("heads" in lk for lk in g["links"])
    live_page.click("#trace-status a")
    live_page.wait_for_selector(".lbl")
    assert live_page.locator("#attention").is_visible()
    target = next(n for n in g["nodes"] if n["is_target_logit"])
    live_page.locator(f'.node[data-id="{target["node_id"]}"]').click()
    assert "%" in live_page.inner_text("#heads")
    live_page.fill("#qk-layer", "1")
    live_page.fill("#qk-head", "2")
    live_page.fill("#qk-query", str(target["ctx_idx"]))
    live_page.fill("#qk-key", "1")
    live_page.click("#qk-form button")
    live_page.wait_for_selector("#qk:has-text('key side totals')")
    assert "Why L1.H2 attends" in live_page.inner_text("#qk")
