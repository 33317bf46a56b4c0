"""The static viewer opens from file:// with no network, shows nodes, inspects and groups them."""

import shutil

import pytest

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.graph_json import graph_to_json
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.circuits.viewer import render_viewer, write_viewer

from .conftest import PROMPT, make_dicts


@pytest.fixture()
def graph_json(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)
    examples = [{"tokens": ["x", "</script><b>"], "activations": [0.0, 2.0]}]
    return graph_to_json(
        g, prune(g), slug="t", describe=lambda d, i: {"clerp": f"latent {i}", "examples": examples}
    )


def test_viewer_is_self_contained(graph_json):
    html = render_viewer(graph_json)
    assert "<script src" not in html and "<link" not in html and "cdn" not in html.lower()
    assert html.count("</script>") == 2  # the embedded JSON cannot close its script tag


def test_viewer_in_browser(graph_json, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("no chromium installed")
    path = write_viewer(graph_json, tmp_path / "index.html")
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
        page.goto(path.as_uri())
        circles = page.locator("circle.node")
        assert circles.count() == len(graph_json["nodes"])
        feature = next(
            i for i, n in enumerate(graph_json["nodes"]) if n["feature_type"] == "cross layer transcoder"
        )
        circles.nth(feature).click()
        info = page.inner_text("#info")
        assert graph_json["nodes"][feature]["node_id"] in info and "Top examples" in info
        circles.nth(0).click(modifiers=["Shift"])
        circles.nth(1).click(modifiers=["Shift"])
        page.fill("#snname", "grouped")
        page.click("#group")
        assert "grouped" in page.inner_text("#sns")
        assert page.locator("rect.sn").count() == 1
        browser.close()
    assert errors == []
