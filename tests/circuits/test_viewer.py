"""The viewer opens from file:// with no network, lays a demo-shaped graph out over the whole pane
with readable, non-overlapping labels, inspects nodes, groups them, and saves annotations."""

from __future__ import annotations

import json
import random
import shutil
from itertools import combinations

import pytest

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.graph_json import graph_to_json
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.circuits.viewer import render_viewer, write_viewer

from .conftest import PROMPT, make_dicts

TOKENS = [
    "<|endoftext|>",
    "Tom",
    " the",
    " dog",
    " found",
    " a",
    " red",
    " ball",
    " in",
    " the",
    " park",
    ".",
    " He",
]


def demo_like_graph(seed: int = 0) -> dict:
    """The shape of the demo's circuit for "Tom the dog found a red ball in the park. He": 45
    transcoder features, 44 of them at the last position, errors, 13 embeddings, 10 logits."""
    rng = random.Random(seed)
    names = ["he", "she", "jack", "lucy", "max", "leo", "zoe", "anna", "went", "had", "box", "ball"]
    nodes = [
        {"node_id": f"E_{100 + p}_{p}", "feature": p, "layer": "E", "ctx_idx": p, "feature_type": "embedding",
         "clerp": f'Embedding "{t}"', "influence": 0.5, "activation": None, "token_prob": 0.0}
        for p, t in enumerate(TOKENS)
    ]  # fmt: skip
    cells = {(0, 2): 1, (0, 12): 10, (1, 12): 9, (2, 12): 13, (3, 12): 12}
    f = 0
    for (layer, pos), count in cells.items():
        for _ in range(count):
            f += 1
            words = ", ".join(repr(w) for w in rng.sample(names, 3))
            clerp = (
                f"concept: syntax:sentence_start (AUROC 0.85, F1 0.75); fires on {words}"
                if f % 4 == 0
                else f"fires on {words}; e.g. “the dog was sad.<< Leo>> saw a yellow apple”"
            )
            nodes.append(
                {"node_id": f"{layer}_{f}_{pos}", "feature": f, "layer": str(layer), "ctx_idx": pos,
                 "feature_type": "cross layer transcoder", "clerp": clerp, "influence": rng.random(),
                 "activation": rng.uniform(0.5, 6), "dictionary": f"transcoder-L{layer}", "feature_index": f,
                 "token_prob": 0.0, "examples": [{"tokens": ["a", " b"], "activations": [0.0, 1.0]}]}
            )  # fmt: skip
    for layer, pos in [(0, 0), (0, 12), (1, 12), (2, 12), (3, 12)]:
        nodes.append(
            {"node_id": f"{layer}_-1_{pos}", "feature": -1, "layer": str(layer), "ctx_idx": pos,
             "feature_type": "mlp reconstruction error", "clerp": f"error at {pos}", "influence": 0.3}
        )  # fmt: skip
    for i, word in enumerate(
        ["was", "went", "saw", "wanted", "asked", "counted", "could", "ran", "found", "dropped"]
    ):
        nodes.append(
            {"node_id": f"5_{200 + i}_12", "feature": 200 + i, "layer": "5", "ctx_idx": 12, "feature_type": "logit",
             "clerp": f'Output " {word}" (p={0.2 - 0.015 * i:.3f})', "token_prob": 0.2 - 0.015 * i, "influence": None}
        )  # fmt: skip
    row = {"E": 0, "5": 5}
    rank = lambda n: row.get(n["layer"], None) if n["layer"] in row else int(n["layer"]) + 1  # noqa: E731
    links = [
        {"source": s["node_id"], "target": t["node_id"], "weight": rng.uniform(-0.3, 1.0)}
        for s in nodes
        for t in nodes
        if rank(s) < rank(t) and s["ctx_idx"] <= t["ctx_idx"] and rng.random() < 0.3
    ]
    scores = {"method": "attribution", "replacement_score": 0.758, "completeness_score": 0.936,
              "ablation_faithfulness": 0.711, "n_nodes": len(nodes), "n_edges": len(links), "target": " was"}  # fmt: skip
    meta = {"slug": "tom-the-dog", "prompt": "".join(TOKENS[1:]), "prompt_tokens": TOKENS, "n_layers": 4,
            "scores": scores}  # fmt: skip
    return {"metadata": meta, "qParams": {"pinnedIds": [], "supernodes": []}, "nodes": nodes, "links": links}


@pytest.fixture()
def graph_json(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)
    examples = [{"tokens": ["x", "</script><b>"], "activations": [0.0, 2.0]}]
    return graph_to_json(
        g, prune(g), slug="t", describe=lambda d, i: {"clerp": f"latent {i}", "examples": examples}
    )


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("no chromium installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, url: str, offline: bool = True):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if offline:
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    page.goto(url)
    page.wait_for_selector(".lbl")
    page.wait_for_timeout(150)  # the resize observer's redraw
    return page, errors


def test_viewer_is_self_contained(graph_json):
    html = render_viewer(graph_json)
    assert "<script src" not in html and "<link" not in html and "cdn" not in html.lower()
    assert html.count("</script>") == 2  # the embedded JSON cannot close its script tag
    assert "__JS__" not in html and "__CSS__" not in html


def test_demo_like_graph_fills_the_view_with_readable_labels(browser, tmp_path):
    g = demo_like_graph()
    page, errors = _open(browser, write_viewer(g, tmp_path / "index.html").as_uri())
    page.screenshot(path=str(tmp_path / "viewer.png"))
    assert page.locator(".node").count() == len(g["nodes"])
    pane = page.evaluate(
        "(() => { const m = document.getElementById('main'); return [m.clientWidth, m.clientHeight, m.scrollWidth, m.scrollHeight]; })()"
    )
    boxes = page.eval_on_selector_all(
        ".node",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })",
    )
    width = max(b[2] for b in boxes) - min(b[0] for b in boxes)
    height = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    # the old equal-width layout used the right 8% of the width and the top 28% of the height
    assert width > 0.85 * pane[0], (width, pane)
    assert height > 0.75 * pane[1], (height, pane)
    assert pane[2] <= pane[0] + 1 and pane[3] <= pane[1] + 1  # fits without scrolling
    # the crowded last column gets most of the width
    cols = page.eval_on_selector_all(".tok", "els => els.map(e => e.getBoundingClientRect().width)")
    assert len(cols) == len(TOKENS) and cols[-1] > 0.4 * sum(cols)
    labels = page.eval_on_selector_all(
        ".lbl, .tok, .layer",
        """els => els.map(e => { const r = e.getBoundingClientRect();
            return [r.left, r.top, r.right, r.bottom, parseFloat(getComputedStyle(e).fontSize), e.textContent]; })""",
    )
    assert all(lb[4] >= 11 for lb in labels)
    texts = [lb[5] for lb in labels]
    assert "'he', 'she', 'jack'" in texts or any("fires on" not in t and "'" in t for t in texts)
    assert "transcoder feature" in page.inner_text("#legend") and "error" in page.inner_text("#legend")
    eps = 0.5
    overlaps = [
        (a, b)
        for a, b in combinations(labels, 2)
        if a[0] < b[2] - eps and b[0] < a[2] - eps and a[1] < b[3] - eps and b[1] < a[3] - eps
    ]
    assert overlaps == [], overlaps[:3]
    scores = page.inner_text("#scores")
    assert "replacement score" in scores and "0.758" in scores and "ablation faithfulness" in scores
    assert errors == []


def test_inspect_pin_group_and_download(browser, graph_json, tmp_path):
    page, errors = _open(browser, write_viewer(graph_json, tmp_path / "index.html").as_uri())
    nodes = page.locator(".node")
    assert nodes.count() == len(graph_json["nodes"])
    ids = [n["node_id"] for n in graph_json["nodes"]]
    feature = next(n for n in graph_json["nodes"] if n["feature_type"] == "cross layer transcoder")
    page.locator(f'.node[data-id="{feature["node_id"]}"]').click()
    info = page.inner_text("#info")
    assert feature["node_id"] in info and "Top examples" in info and "transcoder feature" in info
    # inputs and outputs are listed by label and token with weights, not as raw ids
    inputs = [n for n in graph_json["links"] if n["target"] == feature["node_id"]]
    assert inputs, "the pruned graph gives this feature inputs"
    src = next(
        n
        for n in graph_json["nodes"]
        if n["node_id"] == max(inputs, key=lambda x: abs(x["weight"]))["source"]
    )
    first = page.locator("#info table.io tr").first.inner_text()
    assert src["node_id"] not in first
    assert f"{abs(max(inputs, key=lambda x: abs(x['weight']))['weight']):.4f}" in first
    assert graph_json["metadata"]["prompt_tokens"][src["ctx_idx"]].strip() in first
    page.fill("#note", "my name for it")
    page.locator(f'.node[data-id="{ids[0]}"]').click(modifiers=["Shift"])
    page.locator(f'.node[data-id="{ids[1]}"]').click(modifiers=["Shift"])
    page.fill("#snname", "grouped")
    page.click("#group")
    assert "grouped" in page.inner_text("#sns")
    assert page.locator("rect.sn").count() == 1
    assert page.locator("#subgraph rect").count() == 1  # the two pins collapse into one supernode
    with page.expect_download() as dl:
        page.click("#save")  # static page: saving downloads graph.json
    saved = json.loads(open(dl.value.path()).read())
    assert saved["qParams"]["supernodes"] == [["grouped", ids[0], ids[1]]]
    assert sorted(saved["qParams"]["pinnedIds"]) == sorted(ids[:2])
    node = next(n for n in saved["nodes"] if n["node_id"] == feature["node_id"])
    assert node["annotation"] == "my name for it"
    assert node["feature_type"] == "cross layer transcoder"  # the JSON keeps circuit-tracer's types
    assert "x" not in node and "el" not in node
    # interventions need the server: from file:// the panel says so and its controls are off
    assert page.locator("#iv-run").is_disabled() and "monosemantic serve" in page.inner_text("#iv-note")
    assert errors == []


def test_served_viewer_saves_and_restores_through_the_annotations_api(browser, tmp_path):
    g = demo_like_graph()
    html = render_viewer(g)
    posted: list[dict] = []
    ids = [n["node_id"] for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"]
    previous = {
        "viewer": 1,
        "pinnedIds": [ids[0]],
        "supernodes": [],
        "annotations": {ids[1]: "restored label"},
    }

    def handle(route):
        req = route.request
        if req.url.endswith("/graphs/7"):
            return route.fulfill(body=html, content_type="text/html")
        if "/api/annotations" in req.url and req.method == "GET":
            assert "target=graph" in req.url and "key=7" in req.url
            notes = [{"id": 1, "target": "graph", "key": "7", "text": json.dumps(previous)}]
            return route.fulfill(body=json.dumps(notes), content_type="application/json")
        if "/api/annotations" in req.url and req.method == "POST":
            posted.append(json.loads(req.post_data))
            return route.fulfill(body='{"id": 2}', content_type="application/json")
        return route.abort()

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", handle)
    page.goto("http://viewer.test/graphs/7")
    page.wait_for_function("document.getElementById('status').textContent.includes('Loaded')")
    assert "restored label" in page.inner_text("#labels")
    assert page.locator(f'.node.pinned[data-id="{ids[0]}"]').count() == 1
    page.locator(f'.node[data-id="{ids[2]}"]').click(modifiers=["Shift"])
    page.click("#save")
    page.wait_for_function("document.getElementById('status').textContent.includes('Saved')")
    assert len(posted) == 1 and posted[0]["target"] == "graph" and posted[0]["key"] == "7"
    state = json.loads(posted[0]["text"])
    assert sorted(state["pinnedIds"]) == sorted([ids[0], ids[2]])
    assert state["annotations"] == {ids[1]: "restored label"}
    assert errors == []


def test_show_renders_a_graph_inline(tmp_path):
    import monosemantic
    from monosemantic.utils.errors import MonosemanticError

    g = demo_like_graph()
    (tmp_path / "graph.json").write_text(json.dumps(g))
    for obj in (g, tmp_path, tmp_path / "graph.json", str(tmp_path)):
        view = monosemantic.show(obj)
        assert view.html == render_viewer(g)
    assert 'srcdoc="&lt;!doctype html&gt;' in view._repr_html_()  # escaped into the attribute
    with pytest.raises(MonosemanticError, match="dictionary= and feature="):
        monosemantic.show(tmp_path / "features.db")


def test_attention_panel_shows_heads_and_qk(browser, gpt2, tmp_path):
    """With head loadings, a node lists the heads carrying its inputs with their shares, an edge its
    own heads, and a head the QK terms that made it attend from the target's position to the source's."""
    from monosemantic.circuits.head_annotations import annotate_heads, heads_metadata

    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)
    pr = prune(g)
    per_link, qk, _ = annotate_heads(rm, g, pr, qk_top=6)
    gj = graph_to_json(g, pr, slug="heads", link_values=per_link)
    gj["qk"], gj["metadata"]["heads"] = qk, heads_metadata(rm)
    page, errors = _open(browser, write_viewer(gj, tmp_path / "index.html").as_uri())
    assert page.locator("#attention").is_visible()
    pos = {n["node_id"]: n["ctx_idx"] for n in gj["nodes"]}
    e = qk[0]
    link = max(
        (lk for lk in gj["links"] if pos[lk["target"]] == e["query"] and pos[lk["source"]] == e["key"]),
        key=lambda lk: max(
            abs(h["weight"]) for h in lk["heads"] if (h["layer"], h["head"]) == (e["layer"], e["head"])
        ),
    )
    page.locator(f'.node[data-id="{link["target"]}"]').click()
    heads = page.inner_text("#heads")
    assert "%" in heads and f"L{e['layer']}.H{e['head']}" in heads
    page.locator(f'#heads tr[data-l="{e["layer"]}"][data-h="{e["head"]}"][data-k="{e["key"]}"]').first.click()
    shown = page.inner_text("#qk")
    assert f"L{e['layer']}.H{e['head']}" in shown and "query side" in shown and "key side" in shown
    assert f"{abs(e['pairs'][0]['term']):.4f}" in shown
    # an edge: its own heads (sum of terms = the weight), then its top head's QK if stored
    page.evaluate(
        "l => document.dispatchEvent(new CustomEvent('graph:link', {detail: l}))",
        link,
    )
    assert f"{abs(link['weight']):.4f}" in page.inner_text("#heads")
    # a pair the static page does not hold says how to get it
    page.fill("#qk-layer", "0")
    page.fill("#qk-head", "0")
    page.fill("#qk-query", "3")
    page.fill("#qk-key", "3")
    page.click("#qk-form button")
    if not any((x["layer"], x["head"], x["query"], x["key"]) == (0, 0, 3, 3) for x in qk):
        assert "monosemantic serve" in page.inner_text("#qk")
    assert errors == []


def test_viewer_labels_expert_nodes(browser, tiny_family, tmp_path):
    """circuit.expert_nodes on a tiny Mixtral: each expert's error node is drawn, labelled with its
    expert and layer, listed in the legend, and shows its routing weight when inspected."""
    from tiny_families import load64

    m = load64(tiny_family("mixtral"))
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False, expert_nodes=True)
    gj = graph_to_json(g, prune(g), slug="experts")
    experts = [n for n in gj["nodes"] if n["feature_type"] == "mlp expert error"]
    assert experts
    page, errors = _open(browser, write_viewer(gj, tmp_path / "index.html").as_uri())
    assert page.locator(".node").count() == len(gj["nodes"])
    assert "expert error" in page.inner_text("#legend")
    n = experts[0]
    page.locator(f'.node[data-id="{n["node_id"]}"]').click()
    info = page.inner_text("#info")
    assert f"expert {n['expert']} L{n['layer']}" in info and "routing weight" in info
    assert errors == []
